package org.sparselora.engine.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.TinyModels;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.model.Batch;

/** The trainer: update arithmetic, clipping, schedules, accumulation, exact resume, learning, sparse steps (FLOPs: sparse.FlopCountTest). */
class LoraTrainerTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    static LoraTrainer trainer(LlamaConfig c, OptimizerConfig opt, float dropout) {
        LlamaModel m = TinyModels.model(be, c, 1);
        LoraAdapter lora = new LoraAdapter(be, c, new LoraConfig(4, 8f, dropout, EnumSet.allOf(Projection.class), false, 3));
        return new LoraTrainer(m, lora, opt);
    }

    static OptimizerConfig opt(float clip) {
        return new OptimizerConfig(1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, clip, OptimizerConfig.Schedule.CONSTANT, 0, 100);
    }

    @Test
    void schedulesFollowHf() {
        var lin = new OptimizerConfig(1f, 0.9f, 0.999f, 1e-8f, 0, 0, OptimizerConfig.Schedule.LINEAR, 10, 110);
        assertEquals(0f, LrSchedule.lr(lin, 0));
        assertEquals(0.5f, LrSchedule.lr(lin, 5), 1e-7);
        assertEquals(1f, LrSchedule.lr(lin, 10), 1e-7);
        assertEquals(0.5f, LrSchedule.lr(lin, 60), 1e-7);
        assertEquals(0f, LrSchedule.lr(lin, 110), 1e-7);
        var cos = new OptimizerConfig(1f, 0.9f, 0.999f, 1e-8f, 0, 0, OptimizerConfig.Schedule.COSINE, 0, 100);
        assertEquals(1f, LrSchedule.lr(cos, 0), 1e-7);
        assertEquals(0.5f, LrSchedule.lr(cos, 50), 1e-6);
        assertEquals(0f, LrSchedule.lr(cos, 100), 1e-7);
        var con = new OptimizerConfig(2f, 0.9f, 0.999f, 1e-8f, 0, 0, OptimizerConfig.Schedule.CONSTANT, 4, 100);
        assertEquals(1f, LrSchedule.lr(con, 2), 1e-7);
        assertEquals(2f, LrSchedule.lr(con, 99), 1e-7);
        assertThrows(IllegalArgumentException.class, () -> OptimizerConfig.Schedule.parse("exp"));
    }

    @Test
    void updateIsAdamWOnMeanGradientsWithGlobalNormClipping() {
        LlamaConfig c = TinyModels.config(false, false, true);
        for (float clip : new float[] {0f, 1e-3f}) {
            LoraTrainer t = trainer(c, opt(clip), 0f);
            Batch b = TinyModels.batch(c, 4, 2);
            t.computeGradients(b, 0, false);
            float[][] g = t.gradientsToHost();
            List<float[]> p0 = new ArrayList<>(t.adapter().toHost().values());
            long tokens = b.outputTokenCount();
            double ss = 0;
            for (float[] x : g) for (float v : x) ss += (double) v * v;
            double norm = Math.sqrt(ss) / tokens;
            double scale = 1.0 / tokens;
            if (clip > 0 && norm > clip) scale *= clip / (norm + 1e-6);
            t.applyUpdate(0, tokens);
            assertEquals(norm, t.lastGradNorm(), 1e-6 * norm);
            List<float[]> p1 = new ArrayList<>(t.adapter().toHost().values());
            for (int i = 0; i < g.length; i++)
                for (int j = 0; j < g[i].length; j++) {
                    // first AdamW step: m̂ = g, v̂ = g², update = lr·(g/(|g|+eps) + wd·p)
                    double gi = g[i][j] * scale, p = p0.get(i)[j];
                    double want = p - 1e-2 * (gi / (Math.abs(gi) + 1e-8) + 0.01 * p);
                    assertEquals(want, p1.get(i)[j], 1e-5 * (1 + Math.abs(want)), "clip=" + clip + " tensor " + i + "[" + j + "]");
                }
            for (Tensor gr : t.adapter().grads()) for (float v : be.toFloats(gr)) assertEquals(0f, v, "grads are cleared after the update");
        }
    }

    /** The trainer's grouped optimizer phase equals the per-tensor sumOfSquares + adamw loop, bit for bit, over steps. */
    @Test
    void groupedUpdateEqualsThePerTensorLoopBitForBit() {
        LlamaConfig c = TinyModels.config(false, true, true);
        LoraTrainer t = trainer(c, opt(1e-3f), 0f);  // clipping active: the norm feeds the scale
        List<Tensor> params = t.adapter().params();
        List<Tensor> p = new ArrayList<>(), g = new ArrayList<>(), m = new ArrayList<>(), v = new ArrayList<>();
        for (Tensor x : params) {
            p.add(be.fromFloats(be.toFloats(x), x.dtype(), x.shape()));
            g.add(be.zeros(x.dtype(), x.shape()));
            m.add(be.zeros(x.dtype(), x.shape()));
            v.add(be.zeros(x.dtype(), x.shape()));
        }
        for (int s = 0; s < 3; s++) {
            Batch b = TinyModels.batch(c, 10 + s, 2);
            t.computeGradients(b, s, false);
            float[][] gh = t.gradientsToHost();
            for (int i = 0; i < gh.length; i++) be.copyFromHost(g.get(i), gh[i]);
            float scale = 1f / b.outputTokenCount();
            double norm = Math.sqrt(be.sumOfSquares(g)) * scale;
            if (norm > 1e-3f) scale *= (float) (1e-3f / (norm + 1e-6));
            for (int i = 0; i < p.size(); i++) be.adamw(p.get(i), g.get(i), m.get(i), v.get(i), 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, s + 1, scale);
            t.applyUpdate(s, b.outputTokenCount());
            assertEquals(norm, t.lastGradNorm(), "step " + s + " grad norm");
            for (int i = 0; i < p.size(); i++) assertArrayEquals(be.toFloats(p.get(i)), be.toFloats(params.get(i)), "step " + s + " param " + i);
            TrainerState st = t.state();
            List<String> names = t.adapter().names();
            for (int i = 0; i < p.size(); i++) {
                assertArrayEquals(be.toFloats(m.get(i)), st.tensors().get(names.get(i) + ".exp_avg"), "step " + s + " m " + i);
                assertArrayEquals(be.toFloats(v.get(i)), st.tensors().get(names.get(i) + ".exp_avg_sq"), "step " + s + " v " + i);
            }
            for (Tensor gr : t.adapter().grads()) for (float x : be.toFloats(gr)) assertEquals(0f, x, "grads are cleared after the update");
        }
        t.close();
    }

    @Test
    void accumulationOfTwoHalvesEqualsTheUnionBatch() {
        LlamaConfig c = TinyModels.config(true, true, true);
        Batch a = TinyModels.batch(c, 5, 2), b = TinyModels.batch(c, 6, 3);
        Batch union = concat(a, b);
        LoraTrainer t1 = trainer(c, opt(1f), 0f), t2 = trainer(c, opt(1f), 0f);
        // give B non-zero values so every gradient is exercised: take one update first on both
        for (LoraTrainer t : new LoraTrainer[] {t1, t2}) { t.computeGradients(union, 0, false); t.applyUpdate(0, union.outputTokenCount()); }
        StepResult r1 = t1.computeGradients(a, 1, false), r2 = t1.computeGradients(b, 1, false);
        StepResult ru = t2.computeGradients(union, 1, false);
        assertEquals(ru.lossSum(), r1.lossSum() + r2.lossSum(), 1e-4);
        assertEquals(ru.outputTokens(), r1.outputTokens() + r2.outputTokens());
        float[][] g1 = t1.gradientsToHost(), gu = t2.gradientsToHost();
        for (int i = 0; i < g1.length; i++)
            for (int j = 0; j < g1[i].length; j++) assertEquals(gu[i][j], g1[i][j], 1e-4 * (1 + Math.abs(gu[i][j])));
    }

    static Batch concat(Batch a, Batch b) {
        int t = a.seqLen();
        return new Batch(a.batch() + b.batch(), t, cat(a.tokens(), b.tokens()), cat(a.targets(), b.targets()),
                cat(a.positions(), b.positions()), cat(a.keyStart(), b.keyStart()));
    }

    static int[] cat(int[] x, int[] y) { return IntStream.concat(IntStream.of(x), IntStream.of(y)).toArray(); }

    @Test
    void restoreResumesBitForBit() {
        LlamaConfig c = TinyModels.config(false, true, true);
        Batch[] data = {TinyModels.batch(c, 1, 2), TinyModels.batch(c, 2, 1), TinyModels.batch(c, 3, 2), TinyModels.batch(c, 4, 3)};
        LoraTrainer t = trainer(c, opt(1f), 0.1f); // dropout on: the masks must replay too
        for (int s = 0; s < 2; s++) { t.computeGradients(data[s], s, false); t.applyUpdate(s, data[s].outputTokenCount()); }
        TrainerState saved = t.state();
        assertEquals(2, saved.step());
        for (int s = 2; s < 4; s++) { t.computeGradients(data[s], s, false); t.applyUpdate(s, data[s].outputTokenCount()); }
        LinkedHashMap<String, float[]> want = t.adapter().toHost();
        LoraTrainer r = trainer(c, opt(1f), 0.1f);
        r.restore(saved);
        for (int s = 2; s < 4; s++) { r.computeGradients(data[s], s, false); r.applyUpdate(s, data[s].outputTokenCount()); }
        LinkedHashMap<String, float[]> got = r.adapter().toHost();
        for (String n : want.keySet()) assertArrayEquals(want.get(n), got.get(n), n);
        var bad = new TrainerState(1, new LinkedHashMap<>());
        assertThrows(IllegalArgumentException.class, () -> r.restore(bad));
    }

    @Test
    void lossGoesDownOnAFixedBatch() {
        LlamaConfig c = TinyModels.config(false, false, true);
        LoraTrainer t = trainer(c, new OptimizerConfig(3e-2f, 0.9f, 0.999f, 1e-8f, 0f, 1f, OptimizerConfig.Schedule.LINEAR, 2, 40), 0f);
        Batch b = TinyModels.batch(c, 8, 2);
        double first = 0, last = 0;
        for (int s = 0; s < 40; s++) {
            StepResult r = t.computeGradients(b, s, false);
            if (s == 0) first = r.meanLoss();
            last = r.meanLoss();
            t.applyUpdate(s, r.outputTokens());
        }
        assertTrue(last < 0.5 * first, "loss " + first + " -> " + last);
    }

    @Test
    void sparseStepsUseThePlannerAndCountFlops() {
        LlamaConfig c = TinyModels.config(false, false, false);
        LoraTrainer t = trainer(c, opt(1f), 0f);
        Batch b = TinyModels.batch(c, 9, 3);
        StepResult dense = t.computeGradients(b, 0, true); // no planner: dense
        assertFalse(dense.sparse());
        assertEquals(dense.denseFlops(), dense.flops());
        t.adapter().zeroGrads();
        int I = c.intermediateSize(), C = c.hiddenSize(), N = b.tokenCount();
        int[] half = IntStream.range(0, I / 2).toArray();
        t.setSparsePlanner((batch, step) -> new SparsePlan(be.fromInts(IntStream.range(0, N).toArray(), N), null,
                new SparsePlan.LayerPlan[] {null, new SparsePlan.LayerPlan(be.fromInts(half, half.length), null, null, null, null)},
                SparsePlan.FrozenGrad.SLICED));
        StepResult sp = t.computeGradients(b, 1, true);
        assertTrue(sp.sparse());
        assertEquals(dense.denseFlops(), sp.denseFlops());
        // layer 1's gate, up, down each run at half width in forward and in the input-gradient GEMM
        long saved = 3L * 2 * (2L * N * C * (I / 2));
        assertEquals(dense.flops() - saved, sp.flops());
        assertTrue(Math.abs(sp.lossSum() - dense.lossSum()) > 1e-4, "half the MLP channels change the loss");
        StepResult off = t.computeGradients(b, 2, false); // sparse=false: the planner is not asked
        assertFalse(off.sparse());
    }
}
