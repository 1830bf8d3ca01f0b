package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;

/**
 * GpuBackend's predictor ops against CpuBackend: top-k (the register kernel and topk_f32), the
 * low-rank norms (Gram form, row sums, every Gram mode) and the SwiGLU scores, and the KV channel
 * scores and expansion. See {@link GpuOpsTestSupport} for the method and tolerances.
 */
@Tag("gpu")
class GpuPredictorTest extends GpuOpsTestSupport {
    /** topKRows: each row of a (m, n) score matrix selected in one launch, equal to topK per row on the CPU. */
    @Test
    void topKRowsSelectsEveryRow() {
        for (int[] mnk : new int[][] {{2, 1024, 256}, {3, 37, 37}, {5, 14336, 143}, {1, 9, 1}}) {
            int m = mnk[0], n = mnk[1], k = mnk[2];
            float[] s = new float[m * n];
            for (int i = 0; i < s.length; i++) s[i] = i % 3 == 0 ? RNG.nextInt(5) : (float) RNG.nextDouble(-3, 3);
            Pair S = pair(s, DType.F32, m, n);
            Tensor ig = gpu.empty(DType.I32, m, k), ic = cpu.empty(DType.I32, m, k);
            gpu.fill(ig, -1f);
            gpu.topKRows(ig, S.g, k);
            cpu.topKRows(ic, S.c, k);
            assertArrayEquals(cpu.toInts(ic), gpu.toInts(ig), "topKRows m=" + m + " n=" + n + " k=" + k);
        }
    }

    /**
     * The predictor's fused low-rank norms (no (n, M) estimate written) against the CPU's estimate +
     * columnNorms: one to three segments, one row chunk (n ≤ 64, the MLP's B sequence means: the
     * square root is written directly) and many (n = 1000, q̂/k̂/v̂ over the tokens), ranks 8 and 32,
     * and rank 33 (over the kernel's register budget: the composed default runs). Fused: fp32 sums of
     * the same bf16 inputs on both sides, in different orders: 1e-4. The default writes the estimate in
     * the GPU's bf16 compute type before the norms: 3e-3.
     */
    @Test
    void lowRankColumnNormsAndSwigluScores() {
        for (DType t : FLOATS) {
            for (int[] nr : new int[][] {{8, 8}, {1000, 8}, {130, 32}, {70, 33}}) {
                int n = nr[0], r = nr[1];
                double tol = r <= GpuPredictor.LOW_RANK_MAX ? 1e-4 : 3e-3;
                int[] widths = {300, 64, 64};
                for (int segs = 1; segs <= 3; segs++) {
                    Tensor[] tg = new Tensor[segs], qg = new Tensor[segs], og = new Tensor[segs];
                    Tensor[] tc = new Tensor[segs], qc = new Tensor[segs], oc = new Tensor[segs];
                    Pair[] outs = new Pair[segs];
                    for (int i = 0; i < segs; i++) {
                        Pair T = pair(rand(n * r, 1f), t, n, r), Q = pair(rand(r * widths[i], 1f), t, r, widths[i]);
                        outs[i] = out(DType.F32, widths[i]);
                        tg[i] = T.g; tc[i] = T.c; qg[i] = Q.g; qc[i] = Q.c; og[i] = outs[i].g; oc[i] = outs[i].c;
                    }
                    cpu.lowRankColumnNorms(oc, tc, qc);
                    // both GPU forms: Σ_rows (t·q)² and the Gram form qᵀ(tᵀt)q (the default; its rounding
                    // follows the conditioning of tᵀt, so it gets 1e-3 where the row sum gets 1e-4)
                    for (boolean gram : new boolean[] {false, true}) {
                        for (Tensor o : og) gpu.fill(o, Float.NaN);
                        if (gram) gpu.lowRankColumnNorms(og, tg, qg);
                        else DevKernels.lowRankColumnNormsRowSums(gpu, og, tg, qg);
                        for (int i = 0; i < segs; i++)
                            close("lowRankColumnNorms " + (gram ? "gram " : "rows ") + t + " n=" + n + " r=" + r + " segment " + i + "/" + segs,
                                    outs[i], gram && r <= GpuPredictor.LOW_RANK_MAX ? 1e-3 : tol);
                    }
                }
                int m = 1029;
                Pair TG = pair(rand(n * r, 1f), t, n, r), TU = pair(rand(n * r, 1f), t, n, r);
                Pair QG = pair(rand(r * m, 0.5f), t, r, m), QU = pair(rand(r * m, 0.5f), t, r, m), O = out(DType.F32, m);
                gpu.lowRankSwigluColumnNorms(O.g, TG.g, QG.g, TU.g, QU.g);
                cpu.lowRankSwigluColumnNorms(O.c, TG.c, QG.c, TU.c, QU.c);
                close("lowRankSwigluColumnNorms " + t + " n=" + n + " r=" + r, O, tol);
            }
        }
    }

    @Test
    void topKDeterministicWithTies() {
        for (int n : new int[] {14336, 1024, 37}) {
            for (int k : new int[] {1, n / 3, n - 1, n}) {
                float[] s = new float[n];
                // few distinct values: many ties, so the lower-index rule decides
                for (int i = 0; i < n; i++) s[i] = RNG.nextInt(7) * 0.5f - 1f;
                if (n > 10) { s[3] = Float.NaN; s[5] = -0f; s[6] = 0f; }
                Pair S = pair(s, DType.F32, n);
                Tensor ig = gpu.empty(DType.I32, k), ic = cpu.empty(DType.I32, k);
                gpu.fill(ig, -1f);
                gpu.topK(ig, S.g, k);
                cpu.topK(ic, S.c, k);
                assertArrayEquals(cpu.toInts(ic), gpu.toInts(ig), "topK n=" + n + " k=" + k);
                int[] again = gpu.toInts(ig);
                gpu.topK(ig, S.g, k);
                assertArrayEquals(again, gpu.toInts(ig), "topK must be deterministic");
            }
        }
        // random continuous scores, large n
        int n = 100_000, k = 12_345;
        Pair S = pair(rand(n, 10f), DType.F32, n);
        Tensor ig = gpu.empty(DType.I32, k), ic = cpu.empty(DType.I32, k);
        gpu.topK(ig, S.g, k);
        cpu.topK(ic, S.c, k);
        assertArrayEquals(cpu.toInts(ic), gpu.toInts(ig), "topK n=100000");
    }

    /** Score vectors of one kind: few distinct values (ties decide), continuous, all equal, or IEEE specials. */
    static float[] topKScores(int n, int kind) {
        float[] s = new float[n];
        float[] specials = {Float.NaN, -0f, 0f, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, 1e-30f, -1e30f, 2f};
        for (int i = 0; i < n; i++)
            s[i] = switch (kind) {
                case 0 -> RNG.nextInt(7) * 0.5f - 1f;
                case 1 -> (float) RNG.nextDouble(-3, 3);
                case 2 -> (float) Math.abs(1 + 0.05 * RNG.nextGaussian());   // a layer's narrow range of norms
                case 3 -> 0.75f;
                default -> specials[RNG.nextInt(specials.length)];
            };
        if (n > 10 && kind != 3) { s[3] = Float.NaN; s[5] = -0f; s[6] = 0f; }
        return s;
    }

    /**
     * The register-resident top-k (the backend's) and the first single-block kernel ({@link DevKernels})
     * against CpuBackend.topK:
     * n on and off the block's item grid (1029, 4097: not a multiple of 4, so no vector loads), at its
     * limits (4096 and 16384 keys) and past it (16385: the first kernel serves), the 8B MLP width 14336
     * with the kept counts of the published configs (143 at 0.99, 1433 at 0.9, 12902 at 0.1), k = 0, 1,
     * n − 1 and n; ties, specials (NaN, ±0, ±∞) and all-equal rows; a misaligned score view; outputs
     * poisoned first and every call repeated (deterministic).
     */
    @Test
    void topKRegisterKernelMatchesCpu() {
        for (boolean reg : new boolean[] {true, false}) {
            for (int n : new int[] {1, 2, 37, 1024, 1029, 4096, 4097, 14336, 16384, 16385}) {
                java.util.TreeSet<Integer> ks = new java.util.TreeSet<>(List.of(0, 1, n / 3, Math.max(0, n - 1), n, n / 10));
                if (n == 14336) ks.addAll(List.of(143, 1433, 12902));
                for (int kind = 0; kind < 5; kind++) {
                    float[] s = topKScores(n, kind);
                    Pair S = pair(s, DType.F32, n);
                    for (int k : ks) {
                        Tensor ig = gpu.empty(DType.I32, k), ic = cpu.empty(DType.I32, k);
                        if (k > 0) gpu.fill(ig, -1f);
                        topK(reg, ig, S.g, k);
                        cpu.topK(ic, S.c, k);
                        String what = (reg ? "register" : "first") + " topK n=" + n + " k=" + k + " kind=" + kind;
                        int[] want = cpu.toInts(ic), got = gpu.toInts(ig);
                        assertArrayEquals(want, got, what);
                        topK(reg, ig, S.g, k);
                        assertArrayEquals(got, gpu.toInts(ig), what + ": must be deterministic");
                        ig.close();
                    }
                    S.g.close();
                }
            }
            // scores at an odd float offset: not 16-byte aligned, so the scalar loads
            int n = 14336, k = 1433;
            float[] s = topKScores(n + 1, 2);
            Pair S = pair(s, DType.F32, n + 1);
            Tensor view = S.g.view(1, n);
            Tensor ig = gpu.empty(DType.I32, k), ic = cpu.empty(DType.I32, k);
            gpu.fill(ig, -1f);
            topK(reg, ig, view, k);
            cpu.topK(ic, S.c.view(1, n), k);
            assertArrayEquals(cpu.toInts(ic), gpu.toInts(ig), (reg ? "register" : "first") + " topK on a misaligned view");
            // several rows in one launch: the attention selection's (2, Hkv·D) K scores and V norms,
            // rows of the MLP width, and rows whose length is not a multiple of 4 (misaligned rows)
            for (int[] mnk : new int[][] {{2, 1024, 256}, {3, 14336, 143}, {2, 1029, 300}, {2, 1024, 1024}}) {
                int m = mnk[0], nn = mnk[1], kk = mnk[2];
                float[] rs = new float[m * nn];
                for (int i = 0; i < m; i++) System.arraycopy(topKScores(nn, i % 3), 0, rs, i * nn, nn);
                Pair R = pair(rs, DType.F32, m, nn);
                Tensor rg = gpu.empty(DType.I32, m, kk), rc = cpu.empty(DType.I32, m, kk);
                gpu.fill(rg, -1f);
                if (reg) gpu.topKRows(rg, R.g, kk);
                else DevKernels.topKRows(gpu, rg, R.g, kk);
                cpu.topKRows(rc, R.c, kk);
                assertArrayEquals(cpu.toInts(rc), gpu.toInts(rg), (reg ? "register" : "first") + " topKRows m=" + m + " n=" + nn + " k=" + kk);
            }
        }
    }

    /** topK through the backend's op ({@code reg}: the register-resident kernel) or topk_f32 ({@link DevKernels}). */
    private static void topK(boolean reg, Tensor idx, Tensor scores, int k) {
        if (reg) gpu.topK(idx, scores, k);
        else DevKernels.topK(gpu, idx, scores, k);
    }

    /**
     * Every way lowRankColumnNorms' Gram form gets tᵀt (one cuBLAS GEMM per segment, one batched GEMM,
     * the chunked kernels) against the CPU's estimate + columnNorms, at the 8B attention predictor's
     * shape (4096 tokens, r = 8, q̂/k̂/v̂ widths 4096/1024/1024, the t stacked as ChannelSelection
     * stacks them) and at token counts that leave a short last chunk; separate t tensors too (the
     * batched mode takes one GEMM each unless the pool happened to space them equally); rank 20 with three segments
     * (3·20² > 1024 Gram entries: the kernel mode falls back to cuBLAS). Tolerance as the Gram form's: 1e-3.
     */
    @Test
    void lowRankGramModesMatchCpu() {
        for (DType t : FLOATS) {
            for (int[] nr : new int[][] {{4096, 8}, {4001, 8}, {65, 8}, {1, 8}, {300, 20}}) {
                int n = nr[0], r = nr[1];
                int[] widths = {4096, 1024, 1024};
                float[] tv = rand(3 * n * r, 1f);
                Pair T = pair(tv, t, 3 * n, r);
                Tensor[] tg = new Tensor[3], tc = new Tensor[3], qg = new Tensor[3], qc = new Tensor[3], og = new Tensor[3], oc = new Tensor[3];
                Pair[] outs = new Pair[3];
                for (int i = 0; i < 3; i++) {
                    tg[i] = T.g.view((long) i * n * r, n, r);
                    tc[i] = T.c.view((long) i * n * r, n, r);
                    Pair Q = pair(rand(r * widths[i], 1f), t, r, widths[i]);
                    qg[i] = Q.g; qc[i] = Q.c;
                    outs[i] = out(DType.F32, widths[i]);
                    og[i] = outs[i].g; oc[i] = outs[i].c;
                }
                cpu.lowRankColumnNorms(oc, tc, qc);
                // the same t as three separate tensors: not equally spaced
                Tensor[] sep = new Tensor[3];
                for (int i = 0; i < 3; i++) {
                    sep[i] = gpu.empty(t, n, r);
                    gpu.copy(sep[i], tg[i]);
                }
                for (DevKernels.GramMode mode : DevKernels.GramMode.values()) {
                    for (Tensor[] ts : new Tensor[][] {tg, sep}) {
                        for (Tensor o : og) gpu.fill(o, Float.NaN);
                        mode.lowRankColumnNorms(gpu, og, ts, qg);
                        for (int i = 0; i < 3; i++)
                            close("gram " + mode + (ts == sep ? " separate t " : " stacked t ") + t + " n=" + n + " r=" + r + " segment " + i,
                                    outs[i], 1e-3);
                    }
                }
                for (Tensor x : sep) x.close();
            }
        }
    }

    /**
     * The MLP predictor's scores over a few rows (the B sequence means): the flat-parameter kernel
     * (the backend's; rank bound 8 or 32) and the segment-struct kernel ({@link DevKernels}) against the CPU's estimates + swiglu +
     * columnNorms, at 1, 8 and 64 rows (the most one pass takes), ranks 5, 8, 16 and 32, the 8B MLP
     * width 14336 and an odd width. Both sum fp32 products of the same inputs: 1e-4.
     */
    @Test
    void lowRankSwigluScoresOverFewRows() {
        for (boolean small : new boolean[] {true, false}) {
            for (DType t : FLOATS)
                for (int[] nrm : new int[][] {{8, 8, 14336}, {1, 8, 1029}, {64, 5, 1029}, {8, 16, 300}, {3, 32, 1029}}) {
                    int n = nrm[0], r = nrm[1], m = nrm[2];
                    Pair TG = pair(rand(n * r, 1f), t, n, r), TU = pair(rand(n * r, 1f), t, n, r);
                    Pair QG = pair(rand(r * m, 0.5f), t, r, m), QU = pair(rand(r * m, 0.5f), t, r, m), O = out(DType.F32, m);
                    if (small) gpu.lowRankSwigluColumnNorms(O.g, TG.g, QG.g, TU.g, QU.g);
                    else DevKernels.lowRankSwigluSegments(gpu, O.g, TG.g, QG.g, TU.g, QU.g);
                    cpu.lowRankSwigluColumnNorms(O.c, TG.c, QG.c, TU.c, QU.c);
                    close("lowRankSwigluColumnNorms " + (small ? "small " : "struct ") + t + " n=" + n + " r=" + r + " m=" + m, O, 1e-4);
                }
        }
    }

    /** expandGroupChannelsRows (K's and V's kept channels expanded in one launch) against the CPU's per-row default. */
    @Test
    void expandGroupChannelsRowsMatchesCpu() {
        for (int[] hgdk : new int[][] {{8, 4, 128, 256}, {4, 3, 16, 13}, {2, 1, 8, 16}, {8, 4, 128, 1}}) {
            int hkv = hgdk[0], g = hgdk[1], d = hgdk[2], k = hgdk[3];
            int[] kv = new int[2 * k];
            System.arraycopy(distinct(k, hkv * d), 0, kv, 0, k);
            System.arraycopy(distinct(k, hkv * d), 0, kv, k, k);
            Pair I = ints(kv, 2, k);
            Tensor og = gpu.empty(DType.I32, 2, k * g), oc = cpu.empty(DType.I32, 2, k * g);
            gpu.fill(og, -1f);
            gpu.expandGroupChannelsRows(og, I.g, g, d);
            cpu.expandGroupChannelsRows(oc, I.c, g, d);
            assertArrayEquals(cpu.toInts(oc), gpu.toInts(og), "expandGroupChannelsRows Hkv=" + hkv + " G=" + g + " D=" + d + " k=" + k);
        }
    }

    @Test
    void gqaChannelScoresAndExpansionOnTheDevice() {
        int Hkv = 4, G = 3, D = 16;
        Pair QN = pair(rand(Hkv * G * D, 1f), DType.F32, Hkv * G * D), KN = pair(rand(Hkv * D, 1f), DType.F32, Hkv * D);
        Pair S = out(DType.F32, Hkv * D);
        gpu.kvChannelScores(S.g, QN.g, KN.g, Hkv, G, D);
        cpu.kvChannelScores(S.c, QN.c, KN.c, Hkv, G, D);
        close("kvChannelScores", S, 1e-6);
        for (int k : new int[] {1, 13, Hkv * D}) {
            int[] kv = distinct(k, Hkv * D);
            Pair I = ints(kv, k);
            Tensor og = gpu.empty(DType.I32, k * G), oc = cpu.empty(DType.I32, k * G);
            gpu.fill(og, -1f);
            gpu.expandGroupChannels(og, I.g, G, D);
            cpu.expandGroupChannels(oc, I.c, G, D);
            assertArrayEquals(cpu.toInts(oc), gpu.toInts(og), "expandGroupChannels k=" + k);
        }
    }
}
