package org.sparselora.actors.pipeline;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.train.TrainerState;
import org.sparselora.proto.cluster.Checkpoint;
import org.sparselora.proto.cluster.FloatTensor;
import org.sparselora.proto.cluster.NamedTensor;

/**
 * Full mode's trainer state (every parameter's fp32 master and AdamW moments, under HF names) through
 * the checkpoint file, bit for bit: with {@code FullTrainer}'s own state → restore test this is what
 * makes a resumed full-parameter run identical to an uninterrupted one.
 */
class FullStateCheckpointTest {

    @TempDir
    Path dir;

    /** The state a FullTrainer gives for a tied Qwen2-shaped model: every parameter kind, masters and moments. */
    static TrainerState fullState(long seed) {
        LlamaConfig c = new LlamaConfig("Qwen2ForCausalLM", 16, 32, 2, 4, 2, 4, 50, 64, 1e-6f, 1e6f, null, true, true, 1, 2);
        SplittableRandom r = new SplittableRandom(seed);
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        for (var e : HfCheckpoint.expectedShapes(c).entrySet()) {
            int n = 1;
            for (int d : e.getValue()) n *= d;
            for (String suffix : new String[] {"", ".exp_avg", ".exp_avg_sq"}) {
                float[] x = new float[n];
                for (int i = 0; i < n; i++) x[i] = (float) (suffix.endsWith("sq") ? r.nextDouble() * 1e-6 : r.nextGaussian() * 0.02);
                t.put(e.getKey() + suffix, x);
            }
        }
        // values whose bits a careless format would change
        float[] e = t.get("model.embed_tokens.weight");
        e[0] = -0.0f; e[1] = Float.MIN_VALUE; e[2] = Float.intBitsToFloat(0x7fc00001); e[3] = Float.MAX_VALUE;
        return new TrainerState(123, t);
    }

    @Test
    void theFullStateRoundTripsBitForBit() throws IOException {
        TrainerState s = fullState(1);
        assertEquals(3 * (1 + 2 * 12 + 1), s.tensors().size(), "embedding, 12 tensors per layer (with biases), final norm; no separate head");
        CheckpointStore store = new CheckpointStore(dir);
        store.write(CheckpointStore.fromTrainerState(s).setStep(123).setSeed(7)
                .setData(CheckpointStore.toProto(new DataPosition(1, 4, 0, 130))).build());
        TrainerState back = CheckpointStore.toTrainerState(store.read());
        assertEquals(123, back.step());
        assertEquals(s.tensors().keySet().stream().toList(), back.tensors().keySet().stream().toList(), "names in order");
        for (String n : s.tensors().keySet()) {
            float[] a = s.tensors().get(n), b = back.tensors().get(n);
            assertEquals(a.length, b.length, n);
            for (int i = 0; i < a.length; i++)
                assertEquals(Float.floatToRawIntBits(a[i]), Float.floatToRawIntBits(b[i]), n + "[" + i + "]");
        }
        // the next checkpoint replaces it whole
        TrainerState later = fullState(2);
        store.write(CheckpointStore.fromTrainerState(later).setStep(124).build());
        assertArrayEquals(later.tensors().get("model.norm.weight"), CheckpointStore.toTrainerState(store.read()).tensors().get("model.norm.weight"));
    }

    @Test
    void aStateTooLargeForOneFileIsRefusedBeforeWriting() throws IOException {
        CheckpointStore store = new CheckpointStore(dir);
        store.write(CheckpointStore.fromTrainerState(fullState(3)).setStep(1).build());
        byte[] before = Files.readAllBytes(store.file());
        // a message that claims more values than a checkpoint holds, without allocating them: one packed
        // tensor of MAX_PAYLOAD/4 values is checked by count, so build it lazily from a repeated small one
        FloatTensor chunk = FloatTensor.newBuilder().addAllValues(java.util.Collections.nCopies(1 << 20, 0f)).build();
        Checkpoint.Builder big = Checkpoint.newBuilder().setStep(2);
        for (int i = 0; i < (int) (CheckpointStore.MAX_PAYLOAD / 4 >> 20) + 1; i++)
            big.addTensors(NamedTensor.newBuilder().setName("t" + i).setData(chunk));
        IOException e = assertThrows(IOException.class, () -> store.write(big.build()));
        assertTrue(e.getMessage().contains("more than one checkpoint file holds"), e.getMessage());
        assertArrayEquals(before, Files.readAllBytes(store.file()), "the previous checkpoint is untouched");
        try (var ls = Files.list(store.file().getParent())) {
            assertFalse(ls.anyMatch(p -> p.getFileName().toString().endsWith(".tmp")));
        }
    }
}
