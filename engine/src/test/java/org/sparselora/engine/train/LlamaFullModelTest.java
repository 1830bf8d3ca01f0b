package org.sparselora.engine.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.RecordingBackend;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.backend.ref.ReferenceBackend;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.model.TinyModels;

/**
 * Full-parameter training on the real model ({@link LlamaFullModel} over {@link LlamaModel}): every
 * parameter kind's gradient against finite differences (Llama: untied, llama3 rope; Qwen2: biases,
 * tied head), against the pointwise double at window 1, on the reference backend, and through
 * {@link FullTrainer} (the loss goes down, a resumed run is bit-identical, recorded steps replay the
 * eager bits).
 */
class LlamaFullModelTest {
    static final CpuBackend be = new CpuBackend(2);
    static final CpuBackend bf16 = new CpuBackend(2, DType.BF16);

    @AfterAll
    static void close() { be.close(); bf16.close(); }

    static LlamaFullModel model(Backend back, LlamaConfig c, long seed) {
        return new LlamaFullModel(new LlamaModel(back, LlamaWeights.upload(back, new RandomWeights(c, seed))));
    }

    @Test
    void everyParameterKindMatchesFiniteDifferences() {
        for (boolean qwen : new boolean[] {false, true}) {
            LlamaConfig c = TinyModels.config(qwen, qwen, !qwen);
            LlamaFullModel m = model(be, c, 3);
            Batch b = TinyModels.batch(c, 5, 2);
            int checked = FullGradientCheck.check(m, b, x -> m.model().evaluate(x, null, null, false).lossSum(), n -> false,
                    6, 1e-2f, 2e-2, 7);
            assertEquals(HfCheckpoint.expectedShapes(c).size(), checked, (qwen ? "qwen2" : "llama") + ": every parameter has a gradient");
        }
    }

    /** A forward-backward adds: twice over a batch is twice the gradient. */
    @Test
    void gradientsAccumulate() {
        LlamaConfig c = TinyModels.config(false, true, false);
        LlamaFullModel m = model(be, c, 4);
        Batch b = TinyModels.batch(c, 6, 2);
        try (ModelGrads once = ModelGrads.zerosLike(be, m.parameters()); ModelGrads twice = ModelGrads.zerosLike(be, m.parameters())) {
            double l1 = m.forwardBackward(b, once);
            assertEquals(l1, m.forwardBackward(b, twice));
            m.forwardBackward(b, twice);
            for (String n : once.names()) {
                float[] a = once.toHost(n), g = twice.toHost(n);
                for (int i = 0; i < a.length; i++) assertEquals(2 * a[i], g[i], 1e-5f * (1 + Math.abs(a[i])), n + "[" + i + "]");
            }
        }
    }

    /** At window 1 the real model and the host double in double precision give the same losses and gradients. */
    @Test
    void agreesWithThePointwiseDouble() {
        for (boolean tied : new boolean[] {false, true}) {
            LlamaConfig c = PointwiseLlama.config(17, 16, 2, tied, tied);
            RandomWeights src = new RandomWeights(c, 21);
            PointwiseLlama want = new PointwiseLlama(be, src);
            LlamaFullModel got = new LlamaFullModel(new LlamaModel(be, LlamaWeights.upload(be, src)));
            assertEquals(List.copyOf(want.parameters().keySet()), List.copyOf(got.parameters().keySet()));
            Batch b = FullTrainerTest.batch(17, 3, 5, 8);
            try (ModelGrads gw = ModelGrads.zerosLike(be, want.parameters()); ModelGrads gg = ModelGrads.zerosLike(be, got.parameters())) {
                double lw = want.forwardBackward(b, gw), lg = got.forwardBackward(b, gg);
                assertEquals(lw, lg, 1e-5 * lw, "loss");
                for (String n : gw.names()) {
                    float[] p = gw.toHost(n), q = gg.toHost(n);
                    double max = 0;
                    for (float v : p) max = Math.max(max, Math.abs(v));
                    for (int i = 0; i < p.length; i++) assertEquals(p[i], q[i], 1e-4 * max + 1e-6, n + "[" + i + "]");
                }
            }
        }
    }

    /** The reference backend (the spec of every op, in float64 where it matters) and the CPU give the same full step. */
    @Test
    void referenceAndCpuAgree() {
        ReferenceBackend ref = new ReferenceBackend();
        LlamaConfig c = TinyModels.config(true, true, false);
        Batch b = TinyModels.batch(c, 9, 1);
        LlamaFullModel r = model(ref, c, 5), m = model(be, c, 5);
        try (ModelGrads gr = ModelGrads.zerosLike(ref, r.parameters()); ModelGrads gc = ModelGrads.zerosLike(be, m.parameters())) {
            double lr = r.forwardBackward(b, gr), lc = m.forwardBackward(b, gc);
            assertEquals(lr, lc, 1e-5 * lr);
            for (String n : gr.names()) {
                float[] p = gr.toHost(n), q = gc.toHost(n);
                double num = 0, den = 0;
                for (int i = 0; i < p.length; i++) { num += (p[i] - q[i]) * (double) (p[i] - q[i]); den += (double) p[i] * p[i]; }
                assertTrue(den > 0, n + " has a gradient");
                assertTrue(Math.sqrt(num) <= 1e-4 * Math.sqrt(den), n + ": relative difference " + Math.sqrt(num / den));
            }
        }
    }

    @Test
    void trainingLowersTheLoss() {
        LlamaConfig c = TinyModels.config(false, true, false);
        LlamaFullModel m = model(be, c, 2);
        Batch b = TinyModels.batch(c, 3, 1);
        try (FullTrainer t = new FullTrainer(m, null, FullTrainerTest.opt(1e-2f, 0.01f, 1f), false)) {
            double first = 0, last = 0;
            for (int s = 0; s < 25; s++) {
                StepResult r = t.computeGradients(b, s, false);
                if (s == 0) first = r.meanLoss();
                last = r.meanLoss();
                t.applyUpdate(s, r.outputTokens());
            }
            assertTrue(last < 0.5 * first, "loss " + first + " -> " + last);
        }
    }

    /** Masters, moments and step round-trip through state(): a run restored half-way ends with the same bits (F32 and BF16 compute). */
    @Test
    void resumeIsBitIdentical() {
        LlamaConfig c = TinyModels.config(true, true, false);
        for (CpuBackend back : new CpuBackend[] {be, bf16}) {
            Batch[] bs = new Batch[4];
            for (int i = 0; i < bs.length; i++) bs[i] = TinyModels.batch(c, 40 + i, 2);
            TrainerState full, half;
            try (FullTrainer t = new FullTrainer(model(back, c, 7), null, FullTrainerTest.opt(1e-2f, 0.1f, 0.5f), false)) {
                for (int s = 0; s < 4; s++) t.applyUpdate(s, t.computeGradients(bs[s], s, false).outputTokens());
                full = t.state();
            }
            try (FullTrainer t = new FullTrainer(model(back, c, 7), null, FullTrainerTest.opt(1e-2f, 0.1f, 0.5f), false)) {
                for (int s = 0; s < 2; s++) t.applyUpdate(s, t.computeGradients(bs[s], s, false).outputTokens());
                half = t.state();
            }
            try (FullTrainer t = new FullTrainer(model(back, c, 99), null, FullTrainerTest.opt(1e-2f, 0.1f, 0.5f), false)) {
                t.restore(half);
                for (int s = 2; s < 4; s++) t.applyUpdate(s, t.computeGradients(bs[s], s, false).outputTokens());
                TrainerState resumed = t.state();
                assertEquals(full.step(), resumed.step());
                for (String n : full.tensors().keySet())
                    assertArrayEquals(full.tensors().get(n), resumed.tensors().get(n), back.name() + " " + n);
            }
        }
    }

    /** The model's phases recorded once per shape and replayed (the CUDA graph's contract, on the CPU's recording proxy) give the eager bits. */
    @Test
    void recordedStepsEqualEagerOnes() {
        LlamaConfig c = TinyModels.config(false, false, false);
        Batch[] bs = new Batch[6];
        for (int i = 0; i < bs.length; i++)
            bs[i] = i == 3 ? TinyModels.batch(c, 60 + i, 5, new int[] {0, 1, 0}, 1) : TinyModels.batch(c, 60 + i, 2);
        RecordingBackend.Stats stats = new RecordingBackend.Stats();
        Backend rec = RecordingBackend.wrap(be, stats);
        TrainerState[] out = new TrainerState[2];
        double[][] losses = new double[2][bs.length];
        long replays = 0;
        for (int k = 0; k < 2; k++) {
            try (FullTrainer t = new FullTrainer(model(k == 0 ? be : rec, c, 8), null, FullTrainerTest.opt(1e-2f, 0.1f, 1f), false)) {
                for (int s = 0; s < bs.length; s++) {
                    StepResult r = t.computeGradients(bs[s], s, false);
                    losses[k][s] = r.lossSum();
                    t.applyUpdate(s, r.outputTokens());
                }
                out[k] = t.state();
                replays = t.replayedSteps();
            }
        }
        assertArrayEquals(losses[0], losses[1]);
        for (String n : out[0].tensors().keySet()) assertArrayEquals(out[0].tensors().get(n), out[1].tensors().get(n), n);
        assertTrue(replays > 0 && stats.replayed > 0, "some steps were replayed: " + replays);
    }
}
