package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;

/**
 * GpuBackend's attention against CpuBackend: the fused kernels and the GEMM path
 * ({@link DevKernels.Attention}) forward and backward with GQA and padding, across tile edges, and
 * decoding against a KV cache. See {@link GpuOpsTestSupport} for the method and tolerances.
 */
@Tag("gpu")
class GpuAttentionTest extends GpuOpsTestSupport {
    @Test
    void attentionForwardBackwardGqaWithPadding() {
        // small odd shape (both dtypes; every kernel: GEMM and FLASH_PIPELINED) and Llama-like head sizes
        // (D 128 with GQA 8/2, D 64) whose T is not a tile multiple, with left padding, forward and backward
        DevKernels.Attention[] all = DevKernels.Attention.values();
        checkAttention(2, 33, 4, 2, 32, new int[] {0, 7}, DType.F32, DevKernels.Attention.GEMM);
        for (DevKernels.Attention k : all) {
            checkAttention(2, 33, 4, 2, 32, new int[] {0, 7}, DType.BF16, k);
            checkAttention(2, 200, 8, 2, 128, new int[] {0, 37}, DType.BF16, k);
            checkAttention(3, 130, 4, 4, 64, new int[] {65, 0, 129}, DType.BF16, k);
        }
    }

    @Test
    void attentionFusedKernelsAcrossTileEdges() {
        // several 128-query / 64-key tiles with keyStart inside a tile (300 = 4·64 + 44 = 9·32 + 12),
        // 4 query heads per kv head; a sequence that is all padding (keyStart = T) next to one that
        // barely is; T one past two forward tiles with padding ending just past the first
        for (DevKernels.Attention k : DevKernels.Attention.values()) {
            checkAttention(2, 512, 8, 2, 128, new int[] {0, 300}, DType.BF16, k);
            checkAttention(2, 70, 4, 1, 64, new int[] {70, 3}, DType.BF16, k);
            checkAttention(1, 257, 2, 2, 32, new int[] {129}, DType.BF16, k);
        }
    }

    static void checkAttention(int B, int T, int Hq, int Hkv, int D, int[] ks, DType t, DevKernels.Attention kernel) {
        float scale = (float) (1 / Math.sqrt(D));
        int N = B * T;
        String tag = t + " B" + B + " T" + T + " " + Hq + "/" + Hkv + "x" + D + " " + kernel;
        Pair Q = pair(rand(N * Hq * D, 1f), t, N, Hq * D), K = pair(rand(N * Hkv * D, 1f), t, N, Hkv * D);
        Pair V = pair(rand(N * Hkv * D, 1f), t, N, Hkv * D), KS = ints(ks, B);
        Pair O = out(t, N, Hq * D), L = out(DType.F32, B, Hq, T);
        kernel.forward(gpu, O.g, L.g, Q.g, K.g, V.g, KS.g, B, T, Hq, Hkv, D, scale);
        cpu.attention(O.c, L.c, Q.c, K.c, V.c, KS.c, B, T, Hq, Hkv, D, scale);
        close("attention out " + tag, O, ATT_TOL);
        // lse: compare rows with a visible key (padding rows hold -inf on both)
        float[] lg = gpu.toFloats(L.g), lc = cpu.toFloats(L.c);
        for (int i = 0; i < lc.length; i++) {
            if (Float.isInfinite(lc[i])) assertEquals(lc[i], lg[i], "lse padding row " + i + " " + tag);
            else assertEquals(lc[i], lg[i], 2e-2 * Math.max(1, Math.abs(lc[i])), "lse row " + i + " " + tag);
        }
        // padded query rows output exactly 0
        float[] og = gpu.toFloats(O.g);
        for (int b = 0; b < B; b++)
            for (int tt = 0; tt < Math.min(ks[b], T); tt++)
                for (int j = 0; j < Hq * D; j++) assertEquals(0f, og[(b * T + tt) * Hq * D + j], "padded query row output " + tag);
        Pair DO = pair(rand(N * Hq * D, 1f), t, N, Hq * D);
        Pair DQ = out(t, N, Hq * D), DK = out(t, N, Hkv * D), DV = out(t, N, Hkv * D);
        // the backward reads the forward's out and lse: each side gets its own forward results
        kernel.backward(gpu, DQ.g, DK.g, DV.g, DO.g, O.g, L.g, Q.g, K.g, V.g, KS.g, B, T, Hq, Hkv, D, scale);
        cpu.attentionBackward(DQ.c, DK.c, DV.c, DO.c, O.c, L.c, Q.c, K.c, V.c, KS.c, B, T, Hq, Hkv, D, scale);
        close("attention dq " + tag, DQ, ATT_TOL);
        close("attention dk " + tag, DK, ATT_TOL);
        close("attention dv " + tag, DV, ATT_TOL);
        // again into re-poisoned outputs: nothing may carry over between calls (FLASH_PIPELINED
        // accumulates dQ in a kept fp32 scratch buffer that must be cleared every call)
        for (Pair p : new Pair[] {DQ, DK, DV}) gpu.fill(p.g, Float.NaN);
        kernel.backward(gpu, DQ.g, DK.g, DV.g, DO.g, O.g, L.g, Q.g, K.g, V.g, KS.g, B, T, Hq, Hkv, D, scale);
        close("attention dq (second call) " + tag, DQ, ATT_TOL);
        close("attention dk (second call) " + tag, DK, ATT_TOL);
        close("attention dv (second call) " + tag, DV, ATT_TOL);
    }

    @Test
    void attentionCachedMatchesCpu() {
        int Hq = 4, Hkv = 2, D = 16, maxT = 40, pos0 = 20, n = 5;
        float scale = 0.25f;
        for (DType t : FLOATS) {
            Pair Q = pair(rand(n * Hq * D, 1f), t, n, Hq * D);
            Pair KC = pair(rand(maxT * Hkv * D, 1f), t, maxT, Hkv * D), VC = pair(rand(maxT * Hkv * D, 1f), t, maxT, Hkv * D);
            Pair O = out(t, n, Hq * D);
            gpu.attentionCached(O.g, Q.g, KC.g, VC.g, pos0, Hq, Hkv, D, scale);
            cpu.attentionCached(O.c, Q.c, KC.c, VC.c, pos0, Hq, Hkv, D, scale);
            close("attentionCached " + t, O, tolFor(t) * 2);
        }
    }
}
