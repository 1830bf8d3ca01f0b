package org.sparselora.engine.sparse;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.io.Dtypes;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.model.LlamaConfig;

/**
 * An in-memory {@link WeightSource} with random-but-structured projection weights for predictor and
 * selection tests: each weight is a decaying-spectrum low-rank part plus small noise, like trained
 * projections (whose spectra decay), so a rank-r predictor is meaningful but not exact.
 */
final class TestWeights implements WeightSource {
    final LlamaConfig config;
    final Map<String, HostTensor> tensors = new LinkedHashMap<>();
    final Map<String, float[]> floats = new LinkedHashMap<>();

    TestWeights(LlamaConfig config, DType dtype, long seed) {
        this.config = config;
        Random rng = new Random(seed);
        int c = config.hiddenSize();
        for (int l = 0; l < config.numLayers(); l++) {
            put(SvdPredictor.Proj.GATE.weightName(l), structured(config.intermediateSize(), c, rng), dtype, config.intermediateSize(), c);
            put(SvdPredictor.Proj.UP.weightName(l), structured(config.intermediateSize(), c, rng), dtype, config.intermediateSize(), c);
            put(SvdPredictor.Proj.Q.weightName(l), structured(config.qDim(), c, rng), dtype, config.qDim(), c);
            put(SvdPredictor.Proj.K.weightName(l), structured(config.kvDim(), c, rng), dtype, config.kvDim(), c);
            put(SvdPredictor.Proj.V.weightName(l), structured(config.kvDim(), c, rng), dtype, config.kvDim(), c);
        }
    }

    static LlamaConfig config(int hidden, int inter, int layers, int heads, int kvHeads) {
        return new LlamaConfig("LlamaForCausalLM", hidden, inter, layers, heads, kvHeads, hidden / heads,
                256, 512, 1e-5f, 10000f, null, false, false, 1, 2);
    }

    /** (out, in): Σ_j 0.7^j·u_j v_jᵀ (j < 12) + 0.02·noise; rows also get a random scale so channel norms differ. */
    static float[] structured(int out, int in, Random rng) {
        float[] w = new float[out * in];
        int modes = Math.min(12, Math.min(out, in));
        for (int j = 0; j < modes; j++) {
            double s = Math.pow(0.7, j);
            double[] u = new double[out], v = new double[in];
            for (int i = 0; i < out; i++) u[i] = rng.nextGaussian() / Math.sqrt(out);
            for (int i = 0; i < in; i++) v[i] = rng.nextGaussian() / Math.sqrt(in);
            for (int r = 0; r < out; r++)
                for (int k = 0; k < in; k++) w[r * in + k] += (float) (s * u[r] * v[k] * Math.sqrt(out));
        }
        for (int r = 0; r < out; r++) {
            double rowScale = 0.5 + rng.nextDouble();
            for (int k = 0; k < in; k++) w[r * in + k] = (float) (rowScale * w[r * in + k] + 0.02 * rng.nextGaussian());
        }
        return w;
    }

    void put(String name, float[] v, DType dtype, int... shape) {
        MemorySegment seg = Arena.ofAuto().allocate((long) v.length * dtype.bytes, 8);
        for (int i = 0; i < v.length; i++) {
            if (dtype == DType.F32) seg.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), i, v[i]);
            else {
                short b = Dtypes.floatToBf16(v[i]);
                seg.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), i, b);
                v[i] = Dtypes.bf16ToFloat(b);
            }
        }
        tensors.put(name, new HostTensor(name, dtype, shape, seg));
        floats.put(name, v);
    }

    float[] weight(int layer, SvdPredictor.Proj p) { return floats.get(p.weightName(layer)); }

    @Override public LlamaConfig config() { return config; }

    @Override public Set<String> names() { return tensors.keySet(); }

    @Override public HostTensor get(String name) {
        HostTensor t = tensors.get(name);
        if (t == null) throw new IllegalArgumentException("test weights: no tensor " + name);
        return t;
    }
}
