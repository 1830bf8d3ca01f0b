package org.sparselora.engine.sparse;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.ref.ReferenceBackend;
import org.sparselora.engine.model.LlamaConfig;

class ChannelSelectionTest {

    final ReferenceBackend be = new ReferenceBackend();

    /** GQA shape whose every projection has min(in, out) = 16, so rank 16 is full rank everywhere. */
    static final LlamaConfig GQA = new LlamaConfig("LlamaForCausalLM", 16, 40, 2, 4, 2, 8,
            256, 512, 1e-5f, 10000f, null, false, false, 1, 2);

    static SparsityConfig.Resolved sparsity(LlamaConfig c, double mlp, double attn) {
        StringBuilder y = new StringBuilder("sparsity:\n");
        for (int l = 0; l < c.numLayers(); l++)
            y.append("  layers.").append(l).append(".mlp: ").append(mlp).append('\n')
             .append("  layers.").append(l).append(".self_attn: ").append(attn).append('\n');
        return SparsityConfig.parse(y.toString(), "test").resolve(c);
    }

    static float[] randn(int n, Random rng) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float) rng.nextGaussian();
        return v;
    }

    /** The rank-r predictor of w under sp from exact SVDs (no progress output). */
    static SvdPredictor exactPredictor(TestWeights w, SparsityConfig.Resolved sp, int rank) {
        return SvdPredictor.forConfig(w, sp, rank, null, LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE);
    }

    /** An attention selection's q, k, v and o index sets, in that order. */
    int[][] qkvo(ChannelSelection.AttentionChannels a) {
        return new int[][] {ints(a.q()), ints(a.k()), ints(a.v()), ints(a.o())};
    }

    // ------------------------------------------------------------------ plain host reference
    // (the double-precision reference helpers (linear, colNorms, topK, nonPad) are PredictorQuality's)

    /** Brute-force MLP selection from the exact gate/up activations of the sequence means. */
    static int[] exactMlp(float[] x, int batch, int seqLen, int[] keyStart, int c, float[] wg, float[] wu, int inter, int k) {
        float[] mean = new float[batch * c];
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < c; j++) {
                double s = 0;
                for (int t = keyStart[b]; t < seqLen; t++) s += x[(b * seqLen + t) * c + j];
                mean[b * c + j] = (float) (s / (seqLen - keyStart[b]));
            }
        double[] g = PredictorQuality.linear(mean, batch, c, wg, inter), u = PredictorQuality.linear(mean, batch, c, wu, inter);
        double[] a = new double[g.length];
        for (int i = 0; i < a.length; i++) a[i] = g[i] / (1 + Math.exp(-g[i])) * u[i];
        return PredictorQuality.topK(PredictorQuality.colNorms(a, batch, inter), k);
    }

    /** Brute-force attention selection from exact q, k, v over the given token rows. */
    static int[][] exactAttention(float[] x, int[] rows, LlamaConfig cfg, float[] wq, float[] wk, float[] wv, int kept) {
        int c = cfg.hiddenSize(), d = cfg.headDim(), hq = cfg.numHeads(), hkv = cfg.numKvHeads(), g = hq / hkv;
        float[] xs = new float[rows.length * c];
        for (int r = 0; r < rows.length; r++) System.arraycopy(x, rows[r] * c, xs, r * c, c);
        double[] qn = PredictorQuality.colNorms(PredictorQuality.linear(xs, rows.length, c, wq, cfg.qDim()), rows.length, cfg.qDim());
        double[] kn = PredictorQuality.colNorms(PredictorQuality.linear(xs, rows.length, c, wk, cfg.kvDim()), rows.length, cfg.kvDim());
        double[] vn = PredictorQuality.colNorms(PredictorQuality.linear(xs, rows.length, c, wv, cfg.kvDim()), rows.length, cfg.kvDim());
        double[] score = new double[cfg.kvDim()];
        for (int kv = 0; kv < hkv; kv++)
            for (int j = 0; j < d; j++) {
                double m = 0;
                for (int h = kv * g; h < kv * g + g; h++) m += qn[h * d + j];
                score[kv * d + j] = kn[kv * d + j] * m / g;
            }
        int[] kIdx = PredictorQuality.topK(score, kept), vIdx = PredictorQuality.topK(vn, kept);
        return new int[][] {expand(kIdx, g, d), kIdx, vIdx, expand(vIdx, g, d)};
    }

    static int[] expand(int[] kv, int g, int d) {
        TreeSet<Integer> s = new TreeSet<>();
        for (int e : kv) for (int j = 0; j < g; j++) s.add(((e / d) * g + j) * d + e % d);
        return s.stream().mapToInt(Integer::intValue).toArray();
    }

    // ------------------------------------------------------------------ tests

    int[] ints(Tensor t) { return be.toInts(t); }

    @Test
    void fullRankSelectionEqualsBruteForceFromExactActivations() {
        TestWeights w = new TestWeights(GQA, DType.F32, 11);
        SparsityConfig.Resolved sp = sparsity(GQA, 0.6, 0.5);
        SvdPredictor pred = exactPredictor(w, sp, 16);
        Random rng = new Random(5);
        int batch = 3, seqLen = 7;
        int[] keyStart = {0, 2, 4};
        float[] x = randn(batch * seqLen * 16, rng);
        int[] rows = PredictorQuality.nonPad(batch, seqLen, keyStart);
        try (ChannelSelection sel = new ChannelSelection(be, pred, sp)) {
            Tensor xt = be.fromFloats(x, DType.F32, batch * seqLen, 16);
            Tensor ks = be.fromInts(keyStart, batch);
            Tensor rowsT = be.fromInts(rows, rows.length);
            for (int layer = 0; layer < 2; layer++) {
                int[] mlp = ints(sel.selectMlp(layer, xt, ks, batch, seqLen));
                assertEquals(16, mlp.length);   // floor(40·0.4)
                assertArrayEquals(exactMlp(x, batch, seqLen, keyStart, 16, w.weight(layer, SvdPredictor.Proj.GATE),
                        w.weight(layer, SvdPredictor.Proj.UP), 40, 16), mlp, "layer " + layer + " mlp");
                ChannelSelection.AttentionChannels a = sel.selectAttention(layer, xt, rowsT);
                int[][] ref = exactAttention(x, rows, GQA, w.weight(layer, SvdPredictor.Proj.Q),
                        w.weight(layer, SvdPredictor.Proj.K), w.weight(layer, SvdPredictor.Proj.V), 8);
                assertArrayEquals(ref, qkvo(a), "layer " + layer + " attention q, k, v, o");
                assertGqaConsistent(ints(a.q()), ints(a.k()), ints(a.v()), ints(a.o()), GQA);
            }
        }
    }


    /**
     * The GQA contract of SparsePlan: kept Q channels are exactly (h, d) for every query head h of
     * each kept K channel's group (same d), and O's kept input columns are exactly (h, d) for every
     * query head of each kept V channel's group. Fails on the reference's mapping.
     */
    static void assertGqaConsistent(int[] q, int[] k, int[] v, int[] o, LlamaConfig cfg) {
        int d = cfg.headDim(), g = cfg.numHeads() / cfg.numKvHeads();
        for (int[] a : new int[][] {q, k, v, o})
            for (int i = 1; i < a.length; i++) assertTrue(a[i - 1] < a[i], "indices ascending and unique");
        assertArrayEquals(expand(k, g, d), q, "kept Q channels must be the kept K channels' (h, d) for every head of the group");
        assertArrayEquals(expand(v, g, d), o, "kept O input columns must be the kept V channels' (h, d) for every head of the group");
    }

    /**
     * What the reference does for GQA: K/V indices picked per KV channel are reused for Q and O as
     * if Hq = Hkv, so Q keeps channels of query heads 0..Hkv−1 only and O keeps columns of heads
     * 0..Hkv−1 only — not the heads that actually read the kept K/V.
     */
    static int[][] referenceGqaMapping(int[] kIdx, int[] vIdx) {
        return new int[][] {kIdx.clone(), kIdx, vIdx, vIdx.clone()};
    }

    @Test
    void gqaMappingIsCorrectAndTheReferenceMappingIsCaught() {
        LlamaConfig cfg = new LlamaConfig("LlamaForCausalLM", 32, 48, 1, 8, 2, 4, 256, 512, 1e-5f, 1e4f, null, false, false, 1, 2);
        TestWeights w = new TestWeights(cfg, DType.F32, 3);
        SparsityConfig.Resolved sp = sparsity(cfg, 0, 0.5);
        SvdPredictor pred = exactPredictor(w, sp, 4);
        float[] x = randn(10 * 32, new Random(4));
        try (ChannelSelection sel = new ChannelSelection(be, pred, sp)) {
            ChannelSelection.AttentionChannels a = sel.selectAttention(0, be.fromFloats(x, DType.F32, 10, 32), null);
            int[] q = ints(a.q()), k = ints(a.k()), v = ints(a.v()), o = ints(a.o());
            assertEquals(4, k.length);             // floor(8·0.5) KV channels
            assertEquals(16, q.length);            // × 4 query heads per group
            assertGqaConsistent(q, k, v, o, cfg);
            // every kept Q channel's head reads a KV head whose same-d channel is kept
            for (int qi : q) {
                int h = qi / 4, dd = qi % 4;
                int kvHead = h / 4;
                assertTrue(Arrays.binarySearch(k, kvHead * 4 + dd) >= 0, "q channel " + qi + " has its k partner");
            }
            int[][] refMap = referenceGqaMapping(k, v);
            assertThrows(AssertionError.class, () -> assertGqaConsistent(refMap[0], refMap[1], refMap[2], refMap[3], cfg),
                    "the reference's GQA mapping must fail the consistency check");
        }
    }

    @Test
    void expandGroupChannelsOrdersByHeadThenDim() {
        Tensor kv = be.fromInts(new int[] {1, 3, 4, 7}, 4);   // D = 4: (0,1), (0,3), (1,0), (1,3)
        Tensor out = be.empty(DType.I32, 8);
        be.expandGroupChannels(out, kv, 2, 4);
        // group 0 → heads 0,1; group 1 → heads 2,3
        assertArrayEquals(new int[] {1, 3, 5, 7, 8, 11, 12, 15}, ints(out));
        Tensor s = be.empty(DType.F32, 4);
        be.kvChannelScores(s, be.fromFloats(new float[] {1, 2, 3, 4, 5, 6, 7, 8}, DType.F32, 8),
                be.fromFloats(new float[] {1, 1, 2, 10}, DType.F32, 4), 2, 2, 2);
        // (g0,d0): k 1 · mean(q0=1, q2=3) = 2; (g0,d1): 1·mean(2,4) = 3; (g1,d0): 2·mean(5,7) = 12; (g1,d1): 10·7 = 70
        assertArrayEquals(new float[] {2, 3, 12, 70}, be.toFloats(s));
    }

    @Test
    void paddingNeverInfluencesTheSelection() {
        TestWeights w = new TestWeights(GQA, DType.F32, 21);
        SparsityConfig.Resolved sp = sparsity(GQA, 0.75, 0.5);
        SvdPredictor pred = exactPredictor(w, sp, 8);
        Random rng = new Random(8);
        int batch = 2, seqLen = 5, pad = 3, c = 16;
        float[] x = randn(batch * seqLen * c, rng);
        // the same sequences left-padded by 3 (and by 1 more for the second), padding rows full of junk
        int padLen = seqLen + pad + 1;
        int[] keyStartPadded = {pad + 1, pad + 1};
        float[] xp = new float[batch * padLen * c];
        for (int i = 0; i < xp.length; i++) xp[i] = 100f * (float) rng.nextGaussian();
        for (int b = 0; b < batch; b++)
            System.arraycopy(x, b * seqLen * c, xp, (b * padLen + pad + 1) * c, seqLen * c);
        try (ChannelSelection sel = new ChannelSelection(be, pred, sp)) {
            Tensor xt = be.fromFloats(x, DType.F32, batch * seqLen, c);
            Tensor xpt = be.fromFloats(xp, DType.F32, batch * padLen, c);
            int[] rowsP = PredictorQuality.nonPad(batch, padLen, keyStartPadded);
            for (int layer = 0; layer < 2; layer++) {
                int[] plain = ints(sel.selectMlp(layer, xt, be.fromInts(new int[] {0, 0}, 2), batch, seqLen));
                int[] padded = ints(sel.selectMlp(layer, xpt, be.fromInts(keyStartPadded, 2), batch, padLen));
                assertArrayEquals(plain, padded, "mlp selection changed by padding");
                ChannelSelection.AttentionChannels a = sel.selectAttention(layer, xt, null);
                ChannelSelection.AttentionChannels ap = sel.selectAttention(layer, xpt, be.fromInts(rowsP, rowsP.length));
                assertArrayEquals(qkvo(a), qkvo(ap), "layer " + layer + " attention q, k, v, o changed by padding");
                // and the junk would have changed it had it been scored
                ChannelSelection.AttentionChannels junk = sel.selectAttention(layer, xpt, null);
                assertTrue(!Arrays.equals(ints(a.v()), ints(junk.v())) || !Arrays.equals(ints(a.k()), ints(junk.k())),
                        "test is sensitive: scoring the padding rows changes the selection");
            }
        }
    }

    /**
     * The attention selection's four index sets are views of one tensor laid out [k | v | q | o] (the
     * caller frees one thing; q and o come from one expandGroupChannelsRows, equal to expandGroupChannels
     * per row), and the selection's kept scratch changes nothing: selections of other layers and other
     * token counts in between, then the same call again, equal a fresh ChannelSelection's.
     */
    @Test
    void attentionIndexSetsShareOneTensorAndScratchReuseChangesNothing() {
        TestWeights w = new TestWeights(GQA, DType.F32, 12);
        SparsityConfig.Resolved sp = sparsity(GQA, 0.5, 0.5);
        SvdPredictor pred = exactPredictor(w, sp, 4);
        Random rng = new Random(13);
        int c = GQA.hiddenSize(), group = GQA.numHeads() / GQA.numKvHeads(), kept = sp.keptKv(0);
        Tensor x10 = be.fromFloats(randn(10 * c, rng), DType.F32, 10, c), x7 = be.fromFloats(randn(7 * c, rng), DType.F32, 7, c);
        Tensor x24 = be.fromFloats(randn(24 * c, rng), DType.F32, 24, c), ks = be.fromInts(new int[] {0, 2, 5}, 3);
        int[][] first;
        try (ChannelSelection sel = new ChannelSelection(be, pred, sp)) {
            ChannelSelection.AttentionChannels a = sel.selectAttention(0, x10, null);
            assertEquals(List.of(a.storage()), a.owned());
            assertEquals(2L * kept + 2L * kept * group, a.storage().numel());
            int[] all = ints(a.storage()), k = ints(a.k()), v = ints(a.v()), q = ints(a.q()), o = ints(a.o());
            int[] joined = new int[all.length];
            int at = 0;
            for (int[] part : new int[][] {k, v, q, o}) { System.arraycopy(part, 0, joined, at, part.length); at += part.length; }
            assertArrayEquals(all, joined, "storage is [k | v | q | o]");
            Tensor qe = be.empty(DType.I32, kept * group), oe = be.empty(DType.I32, kept * group);
            be.expandGroupChannels(qe, a.k(), group, GQA.headDim());
            be.expandGroupChannels(oe, a.v(), group, GQA.headDim());
            assertArrayEquals(ints(qe), q);
            assertArrayEquals(ints(oe), o);
            first = new int[][] {k, v, q, o, ints(sel.selectMlp(0, x24, ks, 3, 8))};
            a.close();
            // other layers, fewer and more tokens through the same scratch, then the first calls again
            sel.selectAttention(1, x7, null).close();
            sel.selectMlp(1, x10, be.fromInts(new int[] {0, 1}, 2), 2, 5).close();
            sel.selectAttention(1, x24, null).close();
            ChannelSelection.AttentionChannels again = sel.selectAttention(0, x10, null);
            assertArrayEquals(first[0], ints(again.k()));
            assertArrayEquals(first[1], ints(again.v()));
            assertArrayEquals(first[3], ints(again.o()));
            assertArrayEquals(first[4], ints(sel.selectMlp(0, x24, ks, 3, 8)));
        }
        try (ChannelSelection fresh = new ChannelSelection(be, pred, sp)) {
            ChannelSelection.AttentionChannels f = fresh.selectAttention(0, x10, null);
            assertArrayEquals(first[2], ints(f.q()));
            assertArrayEquals(first[4], ints(fresh.selectMlp(0, x24, ks, 3, 8)));
        }
    }

    /** Rank-8 estimate quality on a random-but-structured model: reported, and better than chance. */
    @Test
    void rank8EstimateQualityReported() {
        LlamaConfig cfg = TestWeights.config(64, 172, 2, 8, 4);
        TestWeights w = new TestWeights(cfg, DType.F32, 31);
        SparsityConfig.Resolved sp = sparsity(cfg, 0.75, 0.5);
        SvdPredictor pred = exactPredictor(w, sp, 8);
        int batch = 4, seqLen = 16;
        float[] x = randn(batch * seqLen * 64, new Random(6));
        int[] keyStart = new int[batch];
        PredictorQuality q = PredictorQuality.measure(be, pred, sp, w, new PredictorQuality.LayerInputs() {
            @Override public float[] attention(int layer) { return x; }
            @Override public float[] mlp(int layer) { return x; }
        }, batch, seqLen, keyStart);
        System.out.println("rank-8 predictor on the structured test model: " + q);
        assertTrue(q.mlpRecall() > 0.5, "mlp recall " + q.mlpRecall() + " (chance 0.25)");
        assertTrue(q.vRecall() > 0.6, "v recall " + q.vRecall() + " (chance 0.5)");
    }
}
