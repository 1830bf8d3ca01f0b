package org.sparselora.engine.sparse;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.model.TinyModels;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.OptimizerConfig;
import org.sparselora.engine.train.StepResult;
import org.sparselora.engine.model.SparsePlan;

/**
 * The planner inside the real model and trainer (CpuBackend): selection happens during the
 * forward from each layer's own normed input, and the result is exactly what a precomputed plan
 * with the same indices gives; a zero-sparsity config is bit-for-bit dense LoRA.
 */
class SparseTrainingIntegrationTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    static final LlamaConfig C = TinyModels.config(false, false, false);   // C=16, I=24, 2 layers, GQA 4/2, D=4

    static SparsityConfig config(String extra) { return TinyModels.sparsity(extra, "it"); }

    static List<float[]> grads(LoraAdapter lora) { return TinyModels.host(be, lora.grads()); }

    static Tensor copy(Tensor t) { return t == null ? null : be.fromInts(be.toInts(t), (int) t.numel()); }

    @Test
    void inFlightSelectionEqualsPrecomputedPlanAndReadsTheLayerInput() {
        RandomWeights src = new RandomWeights(C, 3);
        LlamaModel model = new LlamaModel(be, LlamaWeights.upload(be, src));
        LoraAdapter lora = TinyModels.adapter(be, C, 0f, 4);
        Batch b = TinyModels.batch(C, 5, 3);
        for (SparsePlan.FrozenGrad fg : SparsePlan.FrozenGrad.values())
            try (SparsePlanner planner = SparsePlanner.create(be, src, config(fg == SparsePlan.FrozenGrad.CUT ? "frozen_grad: cut\n" : ""),
                    null, 10, 1, SvdPredictor.Progress.NONE)) {
                lora.zeroGrads();
                SparsePlan plan;
                double inFlight;
                List<float[]> g1;
                SparsePlan replay;
                try (SparsePlanner.Step step = planner.begin(b, 0)) {
                    plan = step.plan();
                    for (SparsePlan.LayerPlan lp : plan.layers()) assertEquals(null, lp, "layers are empty before the forward");
                    inFlight = model.forward(b, lora, plan, step, 11);
                    model.backward();
                    g1 = grads(lora);
                    SparsePlan.LayerPlan[] lps = new SparsePlan.LayerPlan[C.numLayers()];
                    for (int l = 0; l < lps.length; l++) {
                        SparsePlan.LayerPlan lp = plan.layers()[l];
                        assertTrue(lp.mlpSparse() && lp.attentionSparse(), "layer " + l + " filled during the forward");
                        lps[l] = new SparsePlan.LayerPlan(copy(lp.mlp()), copy(lp.q()), copy(lp.k()), copy(lp.v()), copy(lp.o()));
                    }
                    replay = new SparsePlan(copy(plan.sparseTokens()), copy(plan.denseTokens()), lps, fg);

                    // layer 0's attention input is rmsnorm(embedding): select from it independently
                    Tensor ids = be.fromInts(b.tokens(), b.tokenCount());
                    Tensor emb = be.empty(DType.F32, b.tokenCount(), C.hiddenSize());
                    be.embedding(emb, ids, be.fromFloats(src.get("model.embed_tokens.weight").toFloats(), DType.F32, C.vocabSize(), C.hiddenSize()));
                    Tensor xn = be.empty(DType.F32, b.tokenCount(), C.hiddenSize());
                    be.rmsNorm(xn, be.empty(DType.F32, b.tokenCount()), emb,
                            be.fromFloats(src.get("model.layers.0.input_layernorm.weight").toFloats(), DType.F32, C.hiddenSize()), C.rmsNormEps());
                    int[] rows = b.nonPaddingRows();
                    ChannelSelection.AttentionChannels a0 = planner.selection().selectAttention(0, xn, be.fromInts(rows, rows.length));
                    assertArrayEquals(be.toInts(a0.k()), be.toInts(plan.layers()[0].k()));
                    assertArrayEquals(be.toInts(a0.o()), be.toInts(plan.layers()[0].o()));
                }
                lora.zeroGrads();
                double pre = model.forward(b, lora, replay, null, 11);
                model.backward();
                assertEquals(inFlight, pre, 0.0, "in-flight selection == precomputed plan, " + fg);
                List<float[]> g2 = grads(lora);
                for (int i = 0; i < g1.size(); i++) assertArrayEquals(g1.get(i), g2.get(i), 0f, "grad " + i + ", " + fg);

                lora.zeroGrads();
                double dense = model.forward(b, lora, null, 11);
                model.backward();
                assertNotEquals(dense, inFlight, "sparsity changes the loss");
                assertTrue(Math.abs(dense - inFlight) < 0.5 * Math.abs(dense), "but not wildly: " + dense + " vs " + inFlight);
            }
    }

    static LoraTrainer trainer(RandomWeights src) {
        LlamaModel model = new LlamaModel(be, LlamaWeights.upload(be, src));
        return new LoraTrainer(model, TinyModels.adapter(be, C, 0f, 4), OptimizerConfig.defaults(10));
    }

    @Test
    void zeroSparsityIsBitForBitDenseThroughTheTrainer() {
        RandomWeights src = new RandomWeights(C, 6);
        Batch b = TinyModels.batch(C, 7, 3);
        LoraTrainer plain = trainer(src), withPlanner = trainer(src);
        SparsityConfig zero = SparsityConfig.parse("start_step: 0\nsparsity:\n  layers.0.mlp: 0.0\n  layers.1.self_attn: 0.0\n", "zero");
        try (SparsePlanner p = SparsePlanner.create(be, src, zero, null, 10, 1, SvdPredictor.Progress.NONE)) {
            withPlanner.setSparsePlanner(p);
            for (int step = 0; step < 3; step++) {
                StepResult r1 = plain.computeGradients(b, step, false);
                StepResult r2 = withPlanner.computeGradients(b, step, true);
                assertEquals(r1.lossSum(), r2.lossSum(), 0.0);
                assertFalse(r2.sparse());
                assertEquals(r1.flops(), r2.flops());
                float[][] g1 = plain.gradientsToHost(), g2 = withPlanner.gradientsToHost();
                for (int i = 0; i < g1.length; i++) assertArrayEquals(g1[i], g2[i], 0f);
                plain.applyUpdate(step, b.outputTokenCount());
                withPlanner.applyUpdate(step, b.outputTokenCount());
            }
        }
    }

    @Test
    void trainerRunsSparseStepsAfterWarmupAndCountsFlops() {
        RandomWeights src = new RandomWeights(C, 8);
        Batch b = TinyModels.batch(C, 9, 3);
        LoraTrainer t = trainer(src);
        SparsityConfig cfg = SparsityConfig.parse("start_step: 0.5\nmode: svd_4\nsparsity:\n  layers.1.mlp: 0.5\n  layers.1.self_attn: 0.5\n", "s");
        try (SparsePlanner p = SparsePlanner.create(be, src, cfg, null, 4, 1, SvdPredictor.Progress.NONE)) {
            t.setSparsePlanner(p);
            for (int step = 0; step < 4; step++) {
                boolean sparse = p.schedule().sparseAt(step);
                StepResult r = t.computeGradients(b, step, sparse);
                assertEquals(step >= 2, r.sparse(), "step " + step);
                if (r.sparse()) {
                    assertTrue(r.flops() < r.denseFlops(), "fewer FLOPs: " + r.flops() + " vs " + r.denseFlops());
                    assertEquals(p.selection().mlpPredictorFlops(b.batch()) + p.selection().attentionPredictorFlops(b.nonPaddingRows().length),
                            r.predictorFlops());
                } else {
                    assertEquals(r.denseFlops(), r.flops());
                    assertEquals(0, r.predictorFlops());
                }
                assertTrue(Double.isFinite(r.lossSum()));
                t.applyUpdate(step, b.outputTokenCount());
            }
        }
    }

    @Test
    void calibrationOnTheModel() {
        LlamaConfig c = new LlamaConfig("LlamaForCausalLM", 32, 64, 4, 4, 2, 8, 40, 64, 1e-5f, 10000f, null, false, false, 1, 2);
        RandomWeights src = new RandomWeights(c, 21);
        LlamaModel model = new LlamaModel(be, LlamaWeights.upload(be, src));
        List<Batch> batches = List.of(TinyModels.batch(c, 1, 3), TinyModels.batch(c, 2, 3));
        SvdPredictor pred = ModelLossProbe.predictorForAllLayers(src, 4, null, SvdPredictor.Progress.NONE);
        ModelLossProbe probe = new ModelLossProbe(be, model, null, batches, pred);
        FlopCount.Lora lora = FlopCount.Lora.qkvo(4);
        Batch shape = batches.get(0);
        java.util.function.ToLongFunction<SparsityConfig> flops = cfg -> {
            SparsityConfig.Resolved r = cfg.resolve(c);
            if (!r.anySparse()) return FlopCount.dense(c, lora, shape).flops();
            TokenSplit sp = TokenSplit.of(shape, cfg.skipOutputTokens(), cfg.sparseOutputTokens(), 1);
            return FlopCount.sparse(c, lora, shape, r, sp.sparse().length, sp.dense().length, cfg.frozenGrad(), 0).flops();
        };
        Calibration.Result r = Calibration.run(new Calibration.Setup(c, probe, flops, SparsityConfig.parse("mode: svd_4\n", "t"),
                new double[] {0.5, 0.75}, new double[] {0.5}, true), 1.1, (d, t, w) -> {});
        System.out.print(r.report());
        assertTrue(r.flopReduction() >= 1.1);
        assertEquals(1 + 2 * 3 + 1, probe.evaluations(), "dense + 2 layers x 3 options + the chosen config");
        assertTrue(Double.isFinite(r.measuredLoss()) && Double.isFinite(r.predictedLoss()));
        // the measured loss of the chosen config is the probe's value for it, and differs from dense
        assertEquals(probe.applyAsDouble(r.config()), r.measuredLoss(), 0.0);
        assertNotEquals(r.baseLoss(), r.measuredLoss());
    }
}
