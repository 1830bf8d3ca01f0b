package org.sparselora.engine.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.function.DoubleSupplier;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;

/**
 * Whole-model gradient checks: the LoRA gradients of tiny models (GQA, llama3 rope scaling, q/k/v
 * biases, tied and untied heads, left padding, prompt tokens) against central finite differences
 * of the fp32 loss; plus the forward's own invariants.
 */
class LlamaModelTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    /** Runs forward+backward once and checks sampled entries of every LoRA gradient against FD of {@code loss}. */
    static void checkLoraGradients(LlamaModel m, LoraAdapter lora, Runnable forwardBackward, DoubleSupplier loss, String what) {
        lora.zeroGrads();
        forwardBackward.run();
        List<float[]> grads = new ArrayList<>();
        for (Tensor g : lora.grads()) grads.add(m.backend().toFloats(g));
        double h = 1e-2;
        int checked = 0;
        double maxAbs = 0;
        for (int t = 0; t < lora.params().size(); t++) {
            Tensor p = lora.params().get(t);
            float[] x = m.backend().toFloats(p), g = grads.get(t);
            for (int i = (t * 7) % 3; i < x.length; i += Math.max(1, x.length / 5)) {
                float old = x[i];
                x[i] = (float) (old + h); m.backend().copyFromHost(p, x); lora.syncComputeCopies();
                double up = loss.getAsDouble();
                x[i] = (float) (old - h); m.backend().copyFromHost(p, x); lora.syncComputeCopies();
                double dn = loss.getAsDouble();
                x[i] = old; m.backend().copyFromHost(p, x); lora.syncComputeCopies();
                double fd = (up - dn) / (2 * h);
                assertEquals(fd, g[i], 3e-3 + 2e-2 * Math.abs(fd), what + ": " + lora.names().get(t) + "[" + i + "]");
                maxAbs = Math.max(maxAbs, Math.abs(fd));
                checked++;
            }
        }
        assertTrue(checked > 50 && maxAbs > 1e-2, what + ": the check must see real gradients (" + checked + ", max " + maxAbs + ")");
    }

    @Test
    void loraGradientsMatchFiniteDifferencesTiedBiasLlama3Rope() {
        LlamaConfig c = TinyModels.config(true, true, true);
        LlamaModel m = TinyModels.model(be, c, 1);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 5);
        Batch b = TinyModels.batch(c, 9, 2);
        checkLoraGradients(m, lora, () -> { m.forward(b, lora, null, 0); m.backward(); },
                () -> m.evaluate(b, lora, null, false).lossSum(), "tied+bias+llama3");
    }

    @Test
    void loraGradientsMatchFiniteDifferencesUntiedPlainRope() {
        LlamaConfig c = TinyModels.config(false, false, false);
        LlamaModel m = TinyModels.model(be, c, 2);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 6);
        Batch b = TinyModels.batch(c, 10, 1);
        m.setLogitsChunkElems(3 * c.vocabSize()); // several cross-entropy chunks
        checkLoraGradients(m, lora, () -> { m.forward(b, lora, null, 0); m.backward(); },
                () -> m.evaluate(b, lora, null, false).lossSum(), "untied");
    }

    @Test
    void loraGradientsWithDropoutMatchFiniteDifferencesOfTheSameMask() {
        LlamaConfig c = TinyModels.config(false, true, true);
        LlamaModel m = TinyModels.model(be, c, 3);
        LoraAdapter lora = TinyModels.adapter(be, c, 0.3f, 7);
        Batch b = TinyModels.batch(c, 11, 2);
        checkLoraGradients(m, lora, () -> { m.forward(b, lora, null, 42); m.backward(); },
                () -> m.forward(b, lora, null, 42), "dropout");
        // dropout is off when evaluating, on when training
        assertTrue(Math.abs(m.evaluate(b, lora, null, false).lossSum() - m.forward(b, lora, null, 42)) > 1e-4);
    }

    @Test
    void evaluateMatchesTrainingForwardAndChunkingDoesNotChangeBits() {
        LlamaConfig c = TinyModels.config(false, false, true);
        LlamaModel m = TinyModels.model(be, c, 4);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 8);
        Batch b = TinyModels.batch(c, 12, 2);
        double train = m.forward(b, lora, null, 0);
        m.backward();
        List<float[]> g1 = new ArrayList<>();
        for (Tensor g : lora.grads()) g1.add(be.toFloats(g));
        LlamaModel.Output ev = m.evaluate(b, lora, null, true);
        assertEquals(train, ev.lossSum(), 0.0);
        assertEquals(b.outputTokenCount(), ev.outputTokens());
        // per-token losses agree with a log-softmax of the returned logits
        int V = c.vocabSize();
        for (int n = 0; n < b.tokenCount(); n++) {
            if (b.targets()[n] == Batch.IGNORE) { assertEquals(0f, ev.tokenLosses()[n]); continue; }
            double max = -1e300, sum = 0;
            for (int j = 0; j < V; j++) max = Math.max(max, ev.logits()[n * V + j]);
            for (int j = 0; j < V; j++) sum += Math.exp(ev.logits()[n * V + j] - max);
            assertEquals(max + Math.log(sum) - ev.logits()[n * V + b.targets()[n]], ev.tokenLosses()[n], 1e-4);
        }
        m.setLogitsChunkElems(1);
        lora.zeroGrads();
        assertEquals(train, m.forward(b, lora, null, 0), 0.0);
        m.backward();
        for (int i = 0; i < g1.size(); i++) assertArrayEquals(g1.get(i), be.toFloats(lora.grads().get(i)));
    }

    @Test
    void trainingStepIsBitIdenticalAcrossThreadCounts() {
        LlamaConfig c = TinyModels.config(true, true, true);
        List<float[]> ref = null;
        double refLoss = 0;
        for (int threads : new int[] {1, 3}) {
            try (CpuBackend b1 = new CpuBackend(threads)) {
                LlamaModel m = TinyModels.model(b1, c, 1);
                LoraAdapter lora = TinyModels.adapter(b1, c, 0.1f, 5);
                double loss = m.forward(TinyModels.batch(c, 9, 2), lora, null, 3);
                m.backward();
                List<float[]> g = new ArrayList<>();
                for (Tensor t : lora.grads()) g.add(b1.toFloats(t));
                if (ref == null) { ref = g; refLoss = loss; continue; }
                assertEquals(refLoss, loss, 0.0);
                for (int i = 0; i < g.size(); i++) assertArrayEquals(ref.get(i), g.get(i));
            }
        }
    }

    @Test
    void bf16StorageEmulationStaysCloseToFp32() {
        LlamaConfig c = TinyModels.config(false, true, true);
        Batch b = TinyModels.batch(c, 9, 2);
        double[] loss = new double[2];
        List<List<float[]>> grads = new ArrayList<>();
        int i = 0;
        for (org.sparselora.engine.backend.DType dt : new org.sparselora.engine.backend.DType[] {
                org.sparselora.engine.backend.DType.F32, org.sparselora.engine.backend.DType.BF16}) {
            try (CpuBackend b1 = new CpuBackend(2, dt)) {
                assertEquals(dt, b1.computeType());
                LlamaModel m = TinyModels.model(b1, c, 1);
                assertEquals(dt, m.weights().embed.dtype());
                LoraAdapter lora = TinyModels.adapter(b1, c, 0f, 5);
                loss[i++] = m.forward(b, lora, null, 0);
                m.backward();
                List<float[]> g = new ArrayList<>();
                for (Tensor t : lora.grads()) g.add(b1.toFloats(t));
                grads.add(g);
            }
        }
        assertEquals(loss[0], loss[1], 0.02 * Math.abs(loss[0]), "bf16 loss near fp32");
        assertTrue(loss[0] != loss[1], "bf16 storage must actually round something");
        double dot = 0, n0 = 0, n1 = 0;
        for (int t = 0; t < grads.get(0).size(); t++)
            for (int j = 0; j < grads.get(0).get(t).length; j++) {
                double x = grads.get(0).get(t)[j], y = grads.get(1).get(t)[j];
                dot += x * y; n0 += x * x; n1 += y * y;
            }
        assertTrue(dot / Math.sqrt(n0 * n1) > 0.99, "bf16 LoRA gradients point the same way: cos " + dot / Math.sqrt(n0 * n1));
    }

    @Test
    void backwardWithoutForwardAndBadPositionsFailClearly() {
        LlamaConfig c = TinyModels.config(true, false, false);
        LlamaModel m = TinyModels.model(be, c, 1);
        assertThrows(IllegalStateException.class, m::backward);
        Batch b = TinyModels.batch(c, 1, 1);
        int[] pos = b.positions().clone();
        pos[3] = 99999;
        Batch bad = new Batch(b.batch(), b.seqLen(), b.tokens(), b.targets(), pos, b.keyStart());
        var e = assertThrows(IllegalArgumentException.class, () -> m.evaluate(bad, null, null, false));
        assertTrue(e.getMessage().contains("99999"));
    }

    @Test
    void wrongWeightShapeNamesTheTensor() {
        LlamaConfig c = TinyModels.config(true, false, false);
        LlamaConfig other = new LlamaConfig("LlamaForCausalLM", 16, 20, 2, 4, 2, 4, 19, 64, 1e-5f, 10000f, null, true, false, 1, 2);
        RandomWeights inner = new RandomWeights(other, 1);
        org.sparselora.engine.io.WeightSource src = new org.sparselora.engine.io.WeightSource() {
            @Override public LlamaConfig config() { return c; }
            @Override public java.util.Set<String> names() { return inner.names(); }
            @Override public org.sparselora.engine.io.HostTensor get(String name) { return inner.get(name); }
        };
        var e = assertThrows(IllegalArgumentException.class, () -> LlamaWeights.upload(be, src));
        assertTrue(e.getMessage().contains("model.layers.0.mlp.gate_proj.weight"), e.getMessage());
    }
}
