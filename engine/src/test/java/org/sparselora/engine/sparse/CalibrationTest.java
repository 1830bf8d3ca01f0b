package org.sparselora.engine.sparse;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Batch;

class CalibrationTest {

    static final LlamaConfig M = TestWeights.config(64, 176, 5, 8, 4);
    static final Batch B = TokenSplitAndPlannerTest.batch(64, new int[] {0, 4}, new int[] {48, 40});

    /** A synthetic additive loss: each layer part has its own sensitivity curve (deeper = less sensitive). */
    static double sensitivity(int layer, boolean mlp, double ratio) {
        double scale = (mlp ? 0.02 : 0.05) / (1 + layer);
        return scale * ratio * ratio / (1.0001 - ratio) * (layer == 2 ? 5 : 1);
    }

    static double loss(SparsityConfig c) {
        SparsityConfig.Resolved r = c.resolve(M);
        double l = 2.0;
        for (int i = 0; i < M.numLayers(); i++) {
            if (r.mlpSparse(i)) l += sensitivity(i, true, r.mlpRatio()[i]);
            if (r.attentionSparse(i)) l += sensitivity(i, false, r.attnRatio()[i]);
        }
        return l;
    }

    static long flops(SparsityConfig c) {
        SparsityConfig.Resolved r = c.resolve(M);
        TokenSplit split = TokenSplit.of(B, c.skipOutputTokens(), c.sparseOutputTokens(), 1);
        FlopCount.Lora lora = FlopCount.Lora.qkvo(8);
        if (!r.anySparse()) return FlopCount.dense(M, lora, B).flops();
        return FlopCount.sparse(M, lora, B, r, split.sparse().length, split.dense().length,
                c.frozenGrad(), 0).flops();
    }

    static Calibration.Setup setup(double[] mlp, double[] attn) {
        return new Calibration.Setup(M, CalibrationTest::loss, CalibrationTest::flops, SparsityConfig.parse("mode: svd_8\n", "t"),
                mlp, attn, true);
    }

    @Test
    void meetsTargetWithLeastPredictedLossAndPredictsAdditiveLossExactly(@TempDir Path dir) throws Exception {
        List<String> progress = new ArrayList<>();
        Calibration.Result r = Calibration.run(setup(new double[] {0.5, 0.75, 0.9}, new double[] {0.25, 0.5}), 1.25,
                (d, t, w) -> progress.add(d + "/" + t));
        assertTrue(r.flopReduction() >= 1.25, "reduction " + r.flopReduction());
        assertEquals(r.predictedLoss(), r.measuredLoss(), 1e-12, "additive loss: prediction is exact");
        assertEquals(1 + 3 * (3 + 2), progress.size());
        assertEquals("16/16", progress.get(progress.size() - 1));
        SparsityConfig.Resolved res = r.config().resolve(M);
        assertFalse(res.mlpSparse(0) || res.mlpSparse(4) || res.attentionSparse(0), "first and last layers stay dense");
        assertTrue(r.report().contains("predicted"));

        // brute force over every assignment of the 6 parts (4 or 3 options each) agrees on the optimum
        double best = Double.POSITIVE_INFINITY;
        double[][] opts = {{0, 0.5, 0.75, 0.9}, {0, 0.25, 0.5}};
        int[] sizes = {4, 3, 4, 3, 4, 3};
        int combos = 1;
        for (int s : sizes) combos *= s;
        for (int code = 0; code < combos; code++) {
            int c = code;
            StringBuilder y = new StringBuilder("mode: svd_8\nsparsity:\n");
            for (int p = 0; p < 6; p++) {
                double ratio = opts[p % 2][c % sizes[p]];
                c /= sizes[p];
                if (ratio > 0) y.append("  layers.").append(1 + p / 2).append(p % 2 == 0 ? ".mlp: " : ".self_attn: ").append(ratio).append('\n');
            }
            SparsityConfig cfg = SparsityConfig.parse(y.toString(), "bf");
            long dense = flops(SparsityConfig.parse("mode: svd_8\n", "d"));
            if ((double) dense / flops(cfg) >= 1.25) best = Math.min(best, loss(cfg));
        }
        assertEquals(best, r.measuredLoss(), 1e-3 * (best - 2.0), "DP optimum vs brute force");

        // the written config loads back and prices the same
        Path out = dir.resolve("calibrated.yaml");
        r.config().write(out);
        SparsityConfig back = SparsityConfig.load(out);
        assertEquals(r.config().sparsity(), back.sparsity());
        assertEquals(flops(r.config()), flops(back));
    }

    @Test
    void sensitiveLayerIsSparedWhenPossible() {
        Calibration.Result r = Calibration.run(setup(new double[] {0.5, 0.9}, new double[] {}), 1.05, (d, t, w) -> {});
        SparsityConfig.Resolved res = r.config().resolve(M);
        // layer 2 is 5x as sensitive: a small target is met without touching it
        assertFalse(res.mlpSparse(2), r.report());
    }

    @Test
    void unreachableTargetIsAClearError() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Calibration.run(setup(new double[] {0.5}, new double[] {}), 10, (d, t, w) -> {}));
        assertTrue(e.getMessage().contains("10.000x") && e.getMessage().contains("at most"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Calibration.run(setup(new double[] {0.5}, new double[] {}), 0.5, (d, t, w) -> {}));
    }

    @Test
    void noTargetNoSparsity() {
        Calibration.Result r = Calibration.run(setup(new double[] {0.5}, new double[] {}), 1.0, (d, t, w) -> {});
        assertEquals(Map.of(), r.config().sparsity());
        assertEquals(1.0, r.flopReduction(), 0);
    }
}
