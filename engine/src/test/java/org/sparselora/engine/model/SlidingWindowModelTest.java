package org.sparselora.engine.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;

/**
 * The model with a Mistral-style sliding window: a window covering the sequence changes no bit, a
 * shorter one limits each position's receptive field to window−1 earlier tokens per layer, and the
 * LoRA gradients through windowed attention match finite differences.
 */
class SlidingWindowModelTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    static List<float[]> grads(LoraAdapter lora) { return TinyModels.host(be, lora.grads()); }

    @Test
    void aWindowCoveringTheSequenceChangesNothing() {
        LlamaConfig c = TinyModels.config(false, true, true);
        Batch b = TinyModels.batch(c, 3, 2); // T = 7
        LlamaConfig c7 = c.withSlidingWindow(7), c2 = c.withSlidingWindow(2);
        LlamaModel plain = TinyModels.model(be, c, 5), windowed = TinyModels.model(be, c7, 5);
        // the same adapter values (same seed and shapes), each built for its model's config
        LoraAdapter l1 = TinyModels.adapter(be, c, 0f, 4), l2 = TinyModels.adapter(be, c7, 0f, 4);
        double a = plain.forward(b, l1, null, 0);
        plain.backward();
        double w = windowed.forward(b, l2, null, 0);
        windowed.backward();
        assertEquals(a, w, 0.0);
        List<float[]> g1 = grads(l1), g2 = grads(l2);
        for (int i = 0; i < g1.size(); i++) assertArrayEquals(g1.get(i), g2.get(i), l1.names().get(i));
        LlamaModel shorter = TinyModels.model(be, c2, 5);
        assertTrue(Math.abs(shorter.forward(b, TinyModels.adapter(be, c2, 0f, 4), null, 0) - a) > 1e-4, "a window of 2 changes the loss");
    }

    @Test
    void theReceptiveFieldIsWindowMinusOneTokensPerLayer() {
        // 2 layers, window 2: the logits at position i read tokens i-2 .. i only
        LlamaConfig c = TinyModels.config(false, false, false).withSlidingWindow(2);
        LlamaModel m = TinyModels.model(be, c, 6);
        LlamaModel full = TinyModels.model(be, c.withSlidingWindow(0), 6);
        Batch b = TinyModels.batch(c, 4, 2);
        int[] changed = b.tokens().clone();
        changed[0] = (changed[0] + 1) % c.vocabSize(); // sequence 0, position 0
        Batch b2 = new Batch(b.batch(), b.seqLen(), changed, b.targets(), b.positions(), b.keyStart());
        int V = c.vocabSize();
        float[] x = m.evaluate(b, null, null, true).logits(), y = m.evaluate(b2, null, null, true).logits();
        float[] fx = full.evaluate(b, null, null, true).logits(), fy = full.evaluate(b2, null, null, true).logits();
        for (int i = 0; i < b.seqLen(); i++) {
            double d = 0, fd = 0;
            for (int v = 0; v < V; v++) {
                d = Math.max(d, Math.abs(x[i * V + v] - y[i * V + v]));
                fd = Math.max(fd, Math.abs(fx[i * V + v] - fy[i * V + v]));
            }
            if (i <= 2) assertTrue(d > 1e-4, "position " + i + " sees token 0");
            else assertEquals(0.0, d, 0.0, "position " + i + " is outside token 0's reach");
            assertTrue(fd > 1e-4, "without a window position " + i + " sees token 0");
        }
    }

    @Test
    void loraGradientsThroughWindowedAttentionMatchFiniteDifferences() {
        LlamaConfig c = TinyModels.config(true, true, true).withSlidingWindow(3);
        LlamaModel m = TinyModels.model(be, c, 7);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 8);
        Batch b = TinyModels.batch(c, 9, 1);
        LlamaModelTest.checkLoraGradients(m, lora, () -> { m.forward(b, lora, null, 0); m.backward(); },
                () -> m.evaluate(b, lora, null, false).lossSum(), "window 3");
    }
}
