package org.sparselora.actors.engine;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.train.TrainerState;

/**
 * The weights of a full-mode trainer state (the fp32 masters under their HF names; the AdamW moments
 * beside them are left out) as a {@link WeightSource}, so the model is written from the same host
 * copy the checkpoint holds, off the worker's thread. Every weight the config expects must be there:
 * a state that lacks one is an error naming it, never a model with a hole.
 */
final class StateWeights implements WeightSource {
    private final LlamaConfig cfg;
    private final TrainerState state;
    private final LinkedHashMap<String, int[]> shapes;

    StateWeights(LlamaConfig cfg, TrainerState state) {
        this.cfg = cfg;
        this.state = state;
        this.shapes = HfCheckpoint.expectedShapes(cfg);
        for (Map.Entry<String, int[]> e : shapes.entrySet()) {
            float[] x = state.tensors().get(e.getKey());
            long n = 1;
            for (int d : e.getValue()) n *= d;
            if (x == null) throw new IllegalArgumentException("trained state lacks weight " + e.getKey());
            if (x.length != n) throw new IllegalArgumentException("trained weight " + e.getKey() + " has " + x.length + " values, the config says " + n);
        }
    }

    @Override public LlamaConfig config() { return cfg; }

    @Override public Set<String> names() { return shapes.keySet(); }

    @Override
    public HostTensor get(String name) {
        int[] shape = shapes.get(name);
        if (shape == null) throw new IllegalArgumentException("trained weights: no weight named " + name);
        float[] x = state.tensors().get(name);
        MemorySegment seg = Arena.ofAuto().allocate((long) x.length * 4, 4);
        MemorySegment.copy(x, 0, seg, ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0, x.length);
        return new HostTensor(name, DType.F32, shape, seg);
    }
}
