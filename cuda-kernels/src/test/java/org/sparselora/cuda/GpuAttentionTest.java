package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
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

    @Test
    void attentionCachedBatchMatchesCpu() {
        // 3 left-padded sequences (none, 9 slots, all 24 prompt slots but the last) against a time-major
        // cache: a prefill whose first slots are padding for some sequences, then one token per
        // sequence, then two; GQA 4/2 at D 16 (both dtypes) and a Llama-like 8/2 at D 128 (bf16)
        int B = 3, maxT = 40;
        int[] ks = {0, 9, 23};
        float scale = 0.25f;
        for (DType t : FLOATS) checkCachedBatch(t, B, maxT, 4, 2, 16, ks, scale);
        checkCachedBatch(DType.BF16, B, maxT, 8, 2, 128, ks, (float) (1 / Math.sqrt(128)));
    }

    static void checkCachedBatch(DType t, int B, int maxT, int Hq, int Hkv, int D, int[] ks, float scale) {
        Pair KC = pair(rand(maxT * B * Hkv * D, 1f), t, maxT * B, Hkv * D), VC = pair(rand(maxT * B * Hkv * D, 1f), t, maxT * B, Hkv * D);
        Pair KS = ints(ks, B);
        int[][] steps = {{0, 24}, {24, 1}, {25, 2}, {38, 2}}; // {pos0, n}
        for (int[] st : steps) {
            int pos0 = st[0], n = st[1];
            String tag = "attentionCachedBatch " + t + " " + Hq + "/" + Hkv + "x" + D + " pos0 " + pos0 + " n " + n;
            Pair Q = pair(rand(n * B * Hq * D, 1f), t, n * B, Hq * D), O = out(t, n * B, Hq * D);
            gpu.attentionCachedBatch(O.g, Q.g, KC.g, VC.g, KS.g, B, pos0, Hq, Hkv, D, scale);
            cpu.attentionCachedBatch(O.c, Q.c, KC.c, VC.c, KS.c, B, pos0, Hq, Hkv, D, scale);
            close(tag, O, tolFor(t) * 2);
            float[] og = gpu.toFloats(O.g);
            for (int i = 0; i < n; i++)
                for (int b = 0; b < B; b++)
                    if (pos0 + i < ks[b])
                        for (int e = 0; e < Hq * D; e++) assertEquals(0f, og[(i * B + b) * Hq * D + e], tag + ": padding slot " + (pos0 + i) + " of sequence " + b);
        }
    }

    @Test
    void attentionCachedBatchOfOneIsTheSingleSequenceKernel() {
        int Hq = 4, Hkv = 2, D = 16, maxT = 40, pos0 = 20, n = 5;
        for (DType t : FLOATS) {
            Pair Q = pair(rand(n * Hq * D, 1f), t, n, Hq * D);
            Pair KC = pair(rand(maxT * Hkv * D, 1f), t, maxT, Hkv * D), VC = pair(rand(maxT * Hkv * D, 1f), t, maxT, Hkv * D);
            Pair O = out(t, n, Hq * D), O1 = out(t, n, Hq * D);
            gpu.attentionCached(O.g, Q.g, KC.g, VC.g, pos0, Hq, Hkv, D, 0.25f);
            gpu.attentionCachedBatch(O1.g, Q.g, KC.g, VC.g, gpu.fromInts(new int[] {0}, 1), 1, pos0, Hq, Hkv, D, 0.25f);
            assertArrayEquals(gpu.toFloats(O.g), gpu.toFloats(O1.g), "batch of one vs attentionCached " + t);
        }
    }
}
