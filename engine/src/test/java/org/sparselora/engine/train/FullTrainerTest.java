package org.sparselora.engine.train;

import org.sparselora.engine.model.Batch;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.Dtypes;

/** Full-parameter training's optimizer side, over the {@link PointwiseLlama} double (the model's own gradients are checked first). */
class FullTrainerTest {
    static final CpuBackend be = new CpuBackend(2);
    static final CpuBackend bf16 = new CpuBackend(2, DType.BF16);

    @AfterAll
    static void close() { be.close(); bf16.close(); }

    static Batch batch(int vocab, int rows, int seq, long seed) {
        // packed-text style: every position carries loss (target = next token of the stream)
        SplittableRandom r = new SplittableRandom(seed);
        int n = rows * seq;
        int[] stream = new int[n + rows];
        for (int i = 0; i < stream.length; i++) stream[i] = r.nextInt(vocab);
        int[] tok = new int[n], tgt = new int[n], pos = new int[n];
        for (int b = 0; b < rows; b++)
            for (int t = 0; t < seq; t++) {
                tok[b * seq + t] = stream[b * (seq + 1) + t];
                tgt[b * seq + t] = stream[b * (seq + 1) + t + 1];
                pos[b * seq + t] = t;
            }
        return new Batch(rows, seq, tok, tgt, pos, new int[rows]);
    }

    static OptimizerConfig opt(float lr, float wd, float clip) {
        return new OptimizerConfig(lr, 0.9f, 0.999f, 1e-8f, wd, clip, OptimizerConfig.Schedule.CONSTANT, 0, 1000);
    }

    static boolean zeroAtWindowOne(String n) {
        return n.contains("q_proj") || n.contains("k_proj");
    }

    /**
     * The double's gradients of every parameter kind (embedding, both norms, all projections, biases,
     * final norm, head; tied and untied) against central differences in double; q and k (and their
     * biases) get exactly zero at window 1.
     */
    @Test
    void doubleGradientsMatchFiniteDifferences() {
        for (boolean tied : new boolean[] {false, true}) {
            PointwiseLlama m = new PointwiseLlama(be, 11, 8, tied ? 1 : 2, tied, tied, 5);
            int kinds = FullGradientCheck.check(m, batch(11, 2, 5, 9), x -> m.run(x, null), FullTrainerTest::zeroAtWindowOne, 8, 1e-2f, 5e-3, 1);
            assertEquals(tied ? 10 : 2 * 7 + 3, kinds, "parameters with a gradient");
        }
    }

    @Test
    void weightDecayGoesToMatricesOnlyUnlessAsked() {
        PointwiseLlama m = new PointwiseLlama(be, 11, 8, 1, false, true, 5);
        try (FullTrainer t = new FullTrainer(m, null, opt(0.1f, 0.5f, 0), false)) {
            assertEquals(List.copyOf(org.sparselora.engine.io.HfCheckpoint.expectedShapes(m.config()).keySet()), t.names());
            assertEquals(1, t.groupCount(), "the CPU group takes a decay mask");
            Map<String, float[]> before = new java.util.HashMap<>();
            for (String n : t.names()) before.put(n, be.toFloats(m.params.get(n)));
            // no output tokens: zero gradient and zero moments, so the only change is the decay p -= lr·wd·p
            t.applyUpdate(0, 0);
            int decayed = 0;
            for (int i = 0; i < t.names().size(); i++) {
                String n = t.names().get(i);
                boolean matrix = n.endsWith("_proj.weight") || n.equals("lm_head.weight");
                assertEquals(matrix, t.decays(i), n);
                float[] p0 = before.get(n), p1 = be.toFloats(m.params.get(n));
                if (!matrix) assertArrayEquals(p0, p1, n + " is not decayed");
                else {
                    decayed++;
                    for (int j = 0; j < p0.length; j++) assertEquals(p0[j] - 0.1f * (0.5f * p0[j]), p1[j], 1e-7f, n + "[" + j + "]");
                }
            }
            assertEquals(7 + 1, decayed);
        }
        PointwiseLlama all = new PointwiseLlama(be, 11, 8, 1, true, true, 5);
        try (FullTrainer t = new FullTrainer(all, null, opt(0.1f, 0.5f, 0), true)) {
            assertFalse(t.names().contains("lm_head.weight"), "a tied head is the embedding");
            for (int i = 0; i < t.names().size(); i++) assertTrue(t.decays(i), t.names().get(i));
            float[] n0 = be.toFloats(all.params.get("model.norm.weight"));
            t.applyUpdate(0, 0);
            assertEquals(n0[0] * 0.95f, be.toFloats(all.params.get("model.norm.weight"))[0], 1e-6f);
        }
    }

    /** One update is AdamW's first step on the clipped, token-averaged gradient, element by element. */
    @Test
    void updateIsClippedAdamwOverAllParameters() {
        PointwiseLlama m = new PointwiseLlama(be, 13, 8, 2, false, true, 2);
        Batch b = batch(13, 3, 4, 1);
        float clip = 0.05f, lr = 0.01f;
        try (FullTrainer t = new FullTrainer(m, null, opt(lr, 0f, clip), false)) {
            Map<String, float[]> p0 = new java.util.LinkedHashMap<>();
            for (String n : t.names()) p0.put(n, be.toFloats(m.params.get(n)));
            StepResult r = t.computeGradients(b, 0, false);
            assertEquals(12, r.outputTokens());
            double ss = 0;
            Map<String, float[]> g = new java.util.LinkedHashMap<>();
            for (String n : t.names()) {
                float[] x = t.grads().toHost(n);
                g.put(n, x);
                for (float v : x) ss += (double) v * v;
            }
            t.applyUpdate(0, r.outputTokens());
            double norm = Math.sqrt(ss) / 12;
            assertEquals(norm, t.lastGradNorm(), 1e-6 * norm);
            assertTrue(norm > clip, "the test wants clipping active: norm " + norm);
            float scale = (1f / 12) * (float) (clip / (norm + 1e-6));
            for (String n : t.names()) {
                float[] a = p0.get(n), gg = g.get(n), now = be.toFloats(m.params.get(n));
                for (int i = 0; i < a.length; i++) {
                    float gi = gg[i] * scale;
                    float mh = (0.1f * gi) / 0.1f, vh = (0.001f * gi * gi) / 0.001f;
                    float want = a[i] - lr * (mh / ((float) Math.sqrt(vh) + 1e-8f));
                    assertEquals(want, now[i], 1e-6f, n + "[" + i + "]");
                }
                for (float x : t.grads().toHost(n)) assertEquals(0f, x, "gradients are zeroed by the update");
            }
        }
    }

    @Test
    void lossGoesDown() {
        PointwiseLlama m = new PointwiseLlama(be, 16, 16, 2, true, false, 3);
        Batch b = batch(16, 4, 8, 4);
        try (FullTrainer t = new FullTrainer(m, null, opt(3e-2f, 0.01f, 1f), false)) {
            double first = 0, last = 0;
            for (int s = 0; s < 40; s++) {
                StepResult r = t.computeGradients(b, s, false);
                if (s == 0) first = r.meanLoss();
                last = r.meanLoss();
                t.applyUpdate(s, r.outputTokens());
            }
            assertTrue(last < 0.7 * first, "loss " + first + " -> " + last);
        }
    }

    /** Masters, moments and the step count round-trip through state(): a restored run continues bit for bit. */
    @Test
    void resumeIsBitIdentical() {
        for (CpuBackend back : new CpuBackend[] {be, bf16}) {
            Batch[] bs = new Batch[6];
            for (int i = 0; i < bs.length; i++) bs[i] = batch(16, 2, 6, 100 + i);
            PointwiseLlama a = new PointwiseLlama(back, 16, 8, 1, false, true, 7);
            TrainerState full;
            try (FullTrainer t = new FullTrainer(a, null, opt(1e-2f, 0.1f, 0.5f), false)) {
                for (int s = 0; s < 6; s++) t.applyUpdate(s, t.computeGradients(bs[s], s, false).outputTokens());
                full = t.state();
            }
            TrainerState half;
            PointwiseLlama b1 = new PointwiseLlama(back, 16, 8, 1, false, true, 7);
            try (FullTrainer t = new FullTrainer(b1, null, opt(1e-2f, 0.1f, 0.5f), false)) {
                for (int s = 0; s < 3; s++) t.applyUpdate(s, t.computeGradients(bs[s], s, false).outputTokens());
                half = t.state();
            }
            assertEquals(3, half.step());
            assertEquals(3 * 15, half.tensors().size(), "master, exp_avg and exp_avg_sq of each of 15 parameters");
            PointwiseLlama b2 = new PointwiseLlama(back, 16, 8, 1, false, true, 99);   // other weights: all must come from the state
            try (FullTrainer t = new FullTrainer(b2, null, opt(1e-2f, 0.1f, 0.5f), false)) {
                t.restore(half);
                for (int s = 3; s < 6; s++) t.applyUpdate(s, t.computeGradients(bs[s], s, false).outputTokens());
                TrainerState resumed = t.state();
                assertEquals(full.step(), resumed.step());
                for (String n : full.tensors().keySet())
                    assertArrayEquals(full.tensors().get(n), resumed.tensors().get(n), back.name() + " " + n);
            }
        }
    }

    /** On a bf16 backend the masters are fp32 and the compute weights are their bf16 rounding after every step. */
    @Test
    void bf16ComputeCopiesFollowFp32Masters() {
        PointwiseLlama m = new PointwiseLlama(bf16, 16, 8, 1, false, false, 7);
        Batch b = batch(16, 2, 6, 3);
        try (FullTrainer t = new FullTrainer(m, null, opt(1e-3f, 0f, 0f), false)) {
            for (int s = 0; s < 3; s++) t.applyUpdate(s, t.computeGradients(b, s, false).outputTokens());
            TrainerState st = t.state();
            boolean finer = false;
            for (String n : t.names()) {
                float[] master = st.tensors().get(n), compute = bf16.toFloats(m.params.get(n));
                assertEquals(DType.BF16, m.params.get(n).dtype());
                for (int i = 0; i < master.length; i++) {
                    assertEquals(Dtypes.bf16ToFloat(Dtypes.floatToBf16(master[i])), compute[i], n + "[" + i + "]");
                    finer |= master[i] != compute[i];
                }
            }
            assertTrue(finer, "masters keep more precision than their bf16 copies");
        }
    }

    /**
     * A backend whose AdamW group cannot take a decay mask gets one group per decay
     * setting, the clipping norm summed over both: the same bits as one masked group.
     */
    @Test
    void groupsWithoutADecayMaskSplitByDecayWithTheSameResult() {
        org.sparselora.engine.backend.Backend noMask = (org.sparselora.engine.backend.Backend) java.lang.reflect.Proxy.newProxyInstance(
                org.sparselora.engine.backend.Backend.class.getClassLoader(), new Class<?>[] {org.sparselora.engine.backend.Backend.class},
                (proxy, method, args) -> {
                    if (method.getName().equals("adamwGroup")) {
                        @SuppressWarnings("unchecked")
                        var inner = new org.sparselora.engine.backend.AdamwGroup.PerTensor(be, (List<Tensor[]>) args[0]);
                        return new org.sparselora.engine.backend.AdamwGroup() {   // no setDecayMask of its own
                            @Override public int size() { return inner.size(); }
                            @Override public double gradSumOfSquares() { return inner.gradSumOfSquares(); }
                            @Override public void step(float lr, float b1, float b2, float eps, float wd, int step, float gs, boolean z) {
                                inner.step(lr, b1, b2, eps, wd, step, gs, z);
                            }
                            @Override public void close() { inner.close(); }
                        };
                    }
                    try {
                        return method.invoke(be, args);
                    } catch (java.lang.reflect.InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        Batch[] bs = {batch(16, 2, 6, 1), batch(16, 2, 6, 2), batch(16, 2, 6, 3)};
        TrainerState[] out = new TrainerState[2];
        for (int k = 0; k < 2; k++) {
            PointwiseLlama m = new PointwiseLlama(k == 0 ? be : noMask, 16, 8, 1, false, true, 4);
            try (FullTrainer t = new FullTrainer(m, null, opt(1e-2f, 0.2f, 0.05f), false)) {
                assertEquals(k == 0 ? 1 : 2, t.groupCount());
                for (int s = 0; s < bs.length; s++) t.applyUpdate(s, t.computeGradients(bs[s], s, false).outputTokens());
                out[k] = t.state();
            }
        }
        for (String n : out[0].tensors().keySet()) assertArrayEquals(out[0].tensors().get(n), out[1].tensors().get(n), n);
    }

    /** The gradients are aligned views of one flat buffer: what a GradientExchange sums across workers. */
    @Test
    void gradientsShareOneFlatBuffer() {
        PointwiseLlama m = new PointwiseLlama(be, 11, 8, 1, false, true, 5);
        try (ModelGrads g = ModelGrads.zerosLike(be, m.parameters())) {
            Tensor flat = g.flat();
            long want = 0;
            for (Tensor p : m.parameters().values()) want += (p.numel() + 127) / 128 * 128;
            assertEquals(want, flat.numel());
            float[] x = new float[(int) flat.numel()];
            for (int i = 0; i < x.length; i++) x[i] = i;
            be.copyFromHost(flat, x);
            long off = 0;
            for (String n : g.names()) {
                float[] v = g.toHost(n);
                assertEquals(m.parameters().get(n).numel(), v.length, n);
                assertEquals((float) off, v[0], n + " starts at an aligned offset");
                off += (v.length + 127) / 128 * 128;
            }
            g.zero();
            for (float v : be.toFloats(flat)) assertEquals(0f, v);
        }
    }

    @Test
    void badUseIsRefused() {
        PointwiseLlama m = new PointwiseLlama(be, 11, 8, 1, false, false, 5);
        try (FullTrainer t = new FullTrainer(m, null, opt(0.1f, 0f, 0), false)) {
            assertThrows(IllegalArgumentException.class, () -> t.computeGradients(batch(11, 1, 4, 1), 0, true));
            assertThrows(IllegalArgumentException.class, () -> t.gradientsFromHost(new float[2][]));
            var lora = new TrainerState(3, new java.util.LinkedHashMap<>(Map.of("base_model.model.x.lora_A.weight", new float[4])));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> t.restore(lora));
            assertTrue(e.getMessage().contains("model.embed_tokens.weight"), e.getMessage());
        }
    }

    @Test
    void flopsCountWeightGradients() {
        var c = PointwiseLlama.config(32, 8, 2, false, false);
        Batch b = batch(32, 2, 4, 1);
        long n = b.tokenCount(), dense = org.sparselora.engine.sparse.FlopCount.dense(c, org.sparselora.engine.sparse.FlopCount.Lora.NONE, b).flops();
        long proj = 2L * (8 * 8 + 4 * 8 + 4 * 8 + 8 * 8 + 3 * 16 * 8);   // q, k, v, o (4 heads of 2, 2 kv heads), gate, up, down
        long want = dense + proj * n * 2 + 2L * 8 * (8 + 2 * 4) * n + 2L * 8 * 32 * b.outputTokenCount();
        assertEquals(want, FullTrainer.flops(c, b), "weight gradients of every projection, layer 0's q/k/v input gradient, the head's weight gradient");
    }
}
