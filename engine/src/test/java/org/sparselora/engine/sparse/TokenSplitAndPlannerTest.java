package org.sparselora.engine.sparse;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.Random;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.ref.ReferenceBackend;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.SparsePlan;

class TokenSplitAndPlannerTest {

    final ReferenceBackend be = new ReferenceBackend();

    /** B sequences of length T, left padding pad[b], then prompt[b] context tokens, rest output tokens. */
    static Batch batch(int seqLen, int[] pad, int[] prompt) {
        int b = pad.length, n = b * seqLen;
        int[] tokens = new int[n], targets = new int[n], positions = new int[n];
        for (int s = 0; s < b; s++)
            for (int t = 0; t < seqLen; t++) {
                int i = s * seqLen + t;
                tokens[i] = 3 + (i % 50);
                positions[i] = Math.max(0, t - pad[s]);
                targets[i] = t < pad[s] + prompt[s] ? Batch.IGNORE : 7 + (i % 40);
            }
        return new Batch(b, seqLen, tokens, targets, positions, pad.clone());
    }

    @Test
    void contextTokensSparseOutputTokensDense() {
        Batch b = batch(6, new int[] {2, 0}, new int[] {1, 4});
        TokenSplit s = TokenSplit.of(b, true, 0, 1);
        // seq 0: rows 0,1 padding, 2 prompt, 3..5 output; seq 1: rows 6..9 prompt, 10,11 output
        assertArrayEquals(new int[] {0, 1, 2, 6, 7, 8, 9}, s.sparse());
        assertArrayEquals(new int[] {3, 4, 5, 10, 11}, s.dense());
        TokenSplit all = TokenSplit.of(b, false, 0, 1);
        assertEquals(12, all.sparse().length);
        assertTrue(all.allSparse());
        assertArrayEquals(new int[] {2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, b.nonPaddingRows());
    }

    @Test
    void bucketedDenseGroupTakesPaddingFirstThenTheLastContextTokens() {
        Batch b = batch(6, new int[] {2, 0}, new int[] {1, 4});   // dense 3,4,5,10,11 (5 tokens)
        TokenSplit s8 = TokenSplit.of(b, true, 0, 1, 8);           // + 3: padding 0, 1, then context 9
        assertArrayEquals(new int[] {0, 1, 3, 4, 5, 9, 10, 11}, s8.dense());
        assertArrayEquals(new int[] {2, 6, 7, 8}, s8.sparse());
        TokenSplit s6 = TokenSplit.of(b, true, 0, 1, 6);           // + 1: padding 0
        assertArrayEquals(new int[] {0, 3, 4, 5, 10, 11}, s6.dense());
        assertEquals(12, TokenSplit.of(b, true, 0, 1, 64).dense().length, "at most every token");
        assertArrayEquals(TokenSplit.of(b, true, 0, 1).dense(), TokenSplit.of(b, true, 0, 1, 5).dense(), "already a multiple");
        assertArrayEquals(TokenSplit.of(b, true, 0, 1).dense(), TokenSplit.of(b, true, 0, 1, 0).dense(), "off");
        assertTrue(TokenSplit.of(b, false, 0, 1, 8).allSparse(), "no split, nothing to bucket");
    }

    @Test
    void maskPaddingRowsZeroesExactlyThePaddingRows() {
        int B = 3, T = 4, Cc = 5;
        float[] x = new float[B * T * Cc];
        for (int i = 0; i < x.length; i++) x[i] = i + 1;
        Tensor X = be.fromFloats(x, DType.F32, B * T, Cc);
        be.maskPaddingRows(X, be.fromInts(new int[] {1, 0, 4}, 3), B, T);
        float[] got = be.toFloats(X);
        for (int r = 0; r < B * T; r++) {
            boolean pad = r == 0 || r >= 8;      // sequence 0: t = 0; sequence 2: all four
            for (int c = 0; c < Cc; c++) assertEquals(pad ? 0f : x[r * Cc + c], got[r * Cc + c], "row " + r);
        }
    }

    @Test
    void sparseOutputFractionIsSeededAndExact() {
        Batch b = batch(40, new int[] {0, 5, 10}, new int[] {10, 10, 10});
        int outputs = b.outputTokenCount();
        TokenSplit s1 = TokenSplit.of(b, true, 0.25, 42), s2 = TokenSplit.of(b, true, 0.25, 42), s3 = TokenSplit.of(b, true, 0.25, 43);
        assertArrayEquals(s1.sparse(), s2.sparse(), "same seed, same split");
        assertFalse(Arrays.equals(s1.sparse(), s3.sparse()), "another seed, another split");
        assertEquals(Math.round(outputs * 0.25), s1.sparse().length - (b.tokenCount() - outputs));
        // partition: disjoint, ascending, covering all rows
        int[] union = IntStream.concat(Arrays.stream(s1.sparse()), Arrays.stream(s1.dense())).sorted().toArray();
        assertArrayEquals(IntStream.range(0, b.tokenCount()).toArray(), union);
        for (int i : s1.dense()) assertTrue(b.targets()[i] != Batch.IGNORE, "dense tokens are output tokens");
        TokenSplit allOut = TokenSplit.of(b, true, 1.0, 1);
        assertTrue(allOut.allSparse());
    }

    static final LlamaConfig CFG = TestWeights.config(32, 64, 3, 4, 2);

    @Test
    void plannerFollowsScheduleAndFillsPlanLayerByLayer() {
        TestWeights w = new TestWeights(CFG, DType.F32, 9);
        SparsityConfig config = SparsityConfig.parse("""
                start_step: 0.5
                frozen_grad: cut
                sparsity:
                  layers.1.mlp: 0.5
                  layers.1.self_attn: 0.5
                  layers.2.mlp: 0.75
                """, "t");
        SparsityConfig.Resolved r = config.resolve(CFG);
        SvdPredictor pred = SvdPredictor.forConfig(w, r, 4, null, LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE);
        try (ChannelSelection sel = new ChannelSelection(be, pred, r)) {
            SparsePlanner planner = new SparsePlanner(be, config, sel, 10, 7);
            Batch b = batch(8, new int[] {2, 0}, new int[] {3, 5});
            Random rng = new Random(1);
            float[] xf = new float[16 * 32];
            for (int i = 0; i < xf.length; i++) xf[i] = (float) rng.nextGaussian();
            Tensor x = be.fromFloats(xf, DType.F32, 16, 32);

            try (SparsePlanner.Step dense = planner.begin(b, 4)) {   // warm-up: steps 0..4 dense
                assertFalse(dense.sparse());
                assertNull(dense.plan());
                assertNull(dense.attention(1, x));
                assertNull(dense.mlp(1, x));
                assertEquals(0, dense.predictorFlops());
            }
            // as the trainer's planner, plan() trusts the caller's schedule (it asks only on sparse steps)
            assertNotNull(planner.plan(b, 0));
            assertSame(planner.selector(), planner.selector());
            planner.release();
            assertNull(planner.selector());
            try (SparsePlanner.Step step = planner.begin(b, 5)) {
                assertTrue(step.sparse());
                SparsePlan plan = step.plan();
                assertEquals(SparsePlan.FrozenGrad.CUT, plan.frozenGrad());
                assertArrayEquals(new int[] {0, 1, 2, 3, 4, 8, 9, 10, 11, 12}, be.toInts(plan.sparseTokens()));
                assertArrayEquals(new int[] {5, 6, 7, 13, 14, 15}, be.toInts(plan.denseTokens()));
                for (int layer = 0; layer < 3; layer++) {
                    SparsePlan.LayerPlan a = step.attention(layer, x);
                    SparsePlan.LayerPlan m = step.mlp(layer, x);
                    assertSame(m, plan.layers()[layer]);
                    if (layer == 0) { assertNull(a); assertNull(m); }
                }
                SparsePlan.LayerPlan l1 = plan.layers()[1], l2 = plan.layers()[2];
                assertTrue(l1.mlpSparse() && l1.attentionSparse());
                assertEquals(32, l1.mlp().dim(0));
                assertEquals(8, l1.k().dim(0));              // floor(Hkv·D = 16 · 0.5)
                assertEquals(16, l1.q().dim(0));             // × 2 query heads per group
                assertTrue(l2.mlpSparse());
                assertFalse(l2.attentionSparse());
                assertEquals(16, l2.mlp().dim(0));
                ChannelSelection sel2 = sel;
                // predictor FLOPs: two MLP selections over B = 2 means, one attention over the 14 non-padding tokens
                assertEquals(sel2.mlpPredictorFlops(2) * 2 + sel2.attentionPredictorFlops(14), step.predictorFlops());
                assertNotNull(plan.layers()[1].o());
            }
        }
    }

    @Test
    void flopCountDenseEqualsSparseAtZeroAndShrinksWithSparsity() {
        LlamaConfig c = SparsityConfigTest.LLAMA3_8B;
        Batch b = batch(512, new int[8], fill(8, 384));      // Math10K shape: 512 tokens, 128 output tokens
        FlopCount.Lora lora = FlopCount.Lora.qkvo(32);
        FlopCount.Step dense = FlopCount.dense(c, lora, b);
        SparsityConfig.Resolved none = SparsityConfig.dense().resolve(c);
        FlopCount.Step zero = FlopCount.sparse(c, lora, b, none, 8 * 384, 8 * 128, SparsePlan.FrozenGrad.SLICED, 0);
        assertEquals(dense.flops(), zero.flops());
        assertEquals(dense.denseFlops(), zero.denseFlops());

        // frozen linear FLOPs alone, by hand: 7 linears · 32 layers · 4096 tokens · fwd+bwd, less layer 0's q/k/v dX
        long perTokenMacs = 4096L * 4096 * 2 + 4096L * 1024 * 2 + 3L * 4096 * 14336;
        long qkvMacs = 4096L * 4096 + 2L * 4096 * 1024;
        assertEquals(2 * 4096L * (2 * perTokenMacs * 32 - qkvMacs), FlopCount.frozen(c, FlopCount.Kept.DENSE, 0, 4096, SparsePlan.FrozenGrad.SLICED));

        SparsityConfig.Resolved math = SparsityConfig.load(SparsityConfigTest.configDir().resolve("llama3-8b-math10k.yaml")).resolve(c);
        FlopCount.Step sliced = FlopCount.sparse(c, lora, b, math, 8 * 384, 8 * 128, SparsePlan.FrozenGrad.SLICED, 1_000_000);
        FlopCount.Step cut = FlopCount.sparse(c, lora, b, math, 8 * 384, 8 * 128, SparsePlan.FrozenGrad.CUT, 1_000_000);
        assertEquals(dense.denseFlops(), sliced.denseFlops());
        assertTrue(sliced.flops() < dense.flops() && cut.flops() < sliced.flops());
        assertEquals(1_000_000, sliced.predictorFlops());
        System.out.printf("llama3-8b math10k shape: FLOP reduction %.2fx (sliced), %.2fx (cut)%n", sliced.reduction(), cut.reduction());
        assertTrue(sliced.reduction() > 1.3 && sliced.reduction() < 3, "reduction " + sliced.reduction());
    }

    @Test
    void createBuildsPredictorFromConfig(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) {
        TestWeights w = new TestWeights(CFG, DType.F32, 12);
        SparsityConfig cfg = SparsityConfig.parse("mode: svd_4\nstart_step: 0\nsparsity:\n  layers.1.mlp: 0.5\n", "t");
        java.nio.file.Path cache = dir.resolve("p.safetensors");
        try (SparsePlanner p = SparsePlanner.create(be, w, cfg, cache, 10, 1, SvdPredictor.Progress.NONE)) {
            assertEquals(4, p.selection().rank());
            assertTrue(java.nio.file.Files.exists(cache));
            try (SparsePlanner.Step s = p.begin(batch(8, new int[] {0, 0}, new int[] {4, 4}), 0)) { assertTrue(s.sparse()); }
        }
        try (SparsePlanner p = SparsePlanner.create(be, w, SparsityConfig.parse("mode: dense\n", "d"), null, 10, 1, SvdPredictor.Progress.NONE)) {
            assertNull(p.selection());
            try (SparsePlanner.Step s = p.begin(batch(8, new int[] {0, 0}, new int[] {4, 4}), 5)) { assertFalse(s.sparse()); }
        }
    }

    static int[] fill(int n, int v) { int[] a = new int[n]; Arrays.fill(a, v); return a; }
}
