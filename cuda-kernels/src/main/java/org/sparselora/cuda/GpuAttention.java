package org.sparselora.cuda;

import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * A {@link GpuBackend}'s attention: the fused FlashAttention-2-style kernels, the GEMM path, and
 * decoding against a KV cache.
 */
final class GpuAttention extends GpuOps {
    GpuAttention(GpuBackend owner, GpuDevice dev) { super(owner, dev); }

    private void checkAttention(String op, GpuTensor q, GpuTensor k, GpuTensor v, GpuTensor ks, int B, int T, int Hq, int Hkv, int D) {
        if (Hkv <= 0 || Hq % Hkv != 0) throw new IllegalArgumentException(op + ": heads " + Hq + " is not a multiple of kv heads " + Hkv);
        needNumel(op, "q", q, (long) B * T * Hq * D);
        needNumel(op, "k", k, (long) B * T * Hkv * D);
        needNumel(op, "v", v, (long) B * T * Hkv * D);
        needI32(op, "keyStart", ks);
        needNumel(op, "keyStart", ks, B);
    }

    private void toHeads(long dst, GpuTensor src, int B, int T, int H, int D) {
        boolean vec = D % 8 == 0 && aligned(src) && (dst & 15) == 0;
        long work = (long) B * T * H * D / (vec ? 8 : 1);
        int blocks = (int) Math.max(1, Math.min(SM_BLOCKS * 4L, (work + 255) / 256));
        launch("to_heads_" + sfx(src, "attention"), blocks, 1, 256, 0,
                new Kernels.Args().ptr(dst).ptr(src.address()).i(B).i(T).i(H).i(D).i(vec ? 1 : 0));
    }

    private void fromHeads(GpuTensor dst, long src, int B, int T, int H, int D) {
        boolean vec = D % 8 == 0 && aligned(dst) && (src & 15) == 0;
        long work = (long) B * T * H * D / (vec ? 8 : 1);
        int blocks = (int) Math.max(1, Math.min(SM_BLOCKS * 4L, (work + 255) / 256));
        launch("from_heads_" + sfx(dst, "attention"), blocks, 1, 256, 0,
                new Kernels.Args().ptr(dst.address()).ptr(src).i(B).i(T).i(H).i(D).i(vec ? 1 : 0));
    }

    private static long align256(long bytes) { return (bytes + 255) & ~255L; }

    private static final float LOG2E = 1.4426950408889634f;

    private static boolean flashEligible(int D, GpuTensor... ts) {
        if (D != 32 && D != 64 && D != 128) return false;
        for (GpuTensor t : ts) if (t.dtype() != DType.BF16) return false;
        return aligned(ts);
    }

    /** Launch constant {@code what} (threads, rows, smem_bytes) of the fused kernel {@code kernel}, from attention.cu (F3Smem, B3Smem). */
    private static int flash3(String kernel, String what) { return Kernels.constant("attention", kernel + "_" + what); }

    /** Bytes of attn_cached's shared memory per float: the query row and one score per visible key. */
    private static final int CACHED_ENTRY_BYTES = Kernels.constant("attention", "attn_cached_smem_entry_bytes");

    void attention(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyStart,
                   int batch, int seqLen, int heads, int kvHeads, int headDim, float scale) {
        bind();
        GpuTensor O = own(out), L = own(lse), Q = own(q), K = own(k), V = own(v), KS = own(keyStart);
        int B = batch, T = seqLen, Hq = heads, Hkv = kvHeads, D = headDim;
        checkAttention("attention", Q, K, V, KS, B, T, Hq, Hkv, D);
        needNumel("attention", "out", O, Q.numel());
        needF32("attention", "lse", L);
        needNumel("attention", "lse", L, (long) B * Hq * T);
        if (B == 0 || T == 0) return;
        if (flashEligible(D, O, Q, K, V)) {
            // grid (head, sequence, query tile): the kernel walks the query tiles longest first; a tile is
            // 128 queries: 4 warps of 32 rows at D = 128, 8 warps of 16 rows below (attention.cu)
            String f = "flash3_fwd_d" + D;
            int rows = flash3(f, "rows");
            kernels.launch(f, Hq, B, (T + rows - 1) / rows, flash3(f, "threads"), flash3(f, "smem_bytes"), stream,
                    new Kernels.Args().ptr(O.address()).ptr(L.address()).ptr(Q.address()).ptr(K.address()).ptr(V.address())
                            .ptr(KS.address()).i(T).i(Hq).i(Hkv).f(scale * LOG2E));
            return;
        }
        gemmForward(O, L, Q, K, V, KS, B, T, Hq, Hkv, D, scale);
    }

    /**
     * The GEMM path of the forward: head-major bf16 copies of q, k, v (the G query heads of a KV group
     * are then one contiguous matrix, and one strided-batched GEMM covers every (sequence, group)),
     * fp32 scores, a fused masked softmax, bf16 probabilities.
     */
    void gemmForward(GpuTensor O, GpuTensor L, GpuTensor Q, GpuTensor K, GpuTensor V, GpuTensor KS,
                     int B, int T, int Hq, int Hkv, int D, float scale) {
        int G = Hq / Math.max(1, Hkv);
        long qn = (long) B * Hq * T * D, kn = (long) B * Hkv * T * D, sn = (long) B * Hq * T * T;
        long qh = scratch("attn.qh", align256(qn * 2)), kh = scratch("attn.kh", align256(kn * 2)), vh = scratch("attn.vh", align256(kn * 2));
        long S = scratch("attn.S", sn * 4), P = scratch("attn.P", sn * 2), oh = scratch("attn.oh", align256(qn * 2));
        toHeads(qh, Q, B, T, Hq, D);
        toHeads(kh, K, B, T, Hkv, D);
        toHeads(vh, V, B, T, Hkv, D);
        int GT = G * T;
        // S_bg (G·T × T) = scale · Qh_bg · Kh_bgᵀ, one batch entry per (sequence, kv group)
        owner.blas.gemmBatched(false, true, GT, T, D, scale, qh, DType.BF16, D, (long) GT * D, kh, DType.BF16, D, (long) T * D,
                0f, S, DType.F32, T, (long) GT * T, B * Hkv);
        long rows = (long) B * Hq * T;
        if (T <= 1024) {  // one warp per row, the row in registers
            String w = T <= 256 ? "w8" : T <= 512 ? "w16" : "w32";
            launch("attn_softmax_" + w, (int) ((rows * 32 + 255) / 256), 1, 256, 0,
                    new Kernels.Args().ptr(P).ptr(L.address()).ptr(S).ptr(KS.address()).i(Hq).i(T).l(rows));
        } else {
            launch("attn_softmax", (int) rows, 1, rowThreads(T, 256), 0,
                    new Kernels.Args().ptr(P).ptr(L.address()).ptr(S).ptr(KS.address()).i(Hq).i(T));
        }
        // Oh_bg (G·T × D) = P_bg · Vh_bg
        owner.blas.gemmBatched(false, false, GT, D, T, 1f, P, DType.BF16, T, (long) GT * T, vh, DType.BF16, D, (long) T * D,
                0f, oh, DType.BF16, D, (long) GT * D, B * Hkv);
        fromHeads(O, oh, B, T, Hq, D);
    }

    void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                           Tensor q, Tensor k, Tensor v, Tensor keyStart,
                           int batch, int seqLen, int heads, int kvHeads, int headDim, float scale) {
        bind();
        GpuTensor DQ = own(dq), DK = own(dk), DV = own(dv), DO = own(dout), O = own(out), L = own(lse);
        GpuTensor Q = own(q), K = own(k), V = own(v), KS = own(keyStart);
        int B = batch, T = seqLen, Hq = heads, Hkv = kvHeads, D = headDim;
        checkAttention("attentionBackward", Q, K, V, KS, B, T, Hq, Hkv, D);
        needNumel("attentionBackward", "dq", DQ, Q.numel());
        needNumel("attentionBackward", "dk", DK, K.numel());
        needNumel("attentionBackward", "dv", DV, V.numel());
        needNumel("attentionBackward", "dout", DO, Q.numel());
        needNumel("attentionBackward", "out", O, Q.numel());
        needF32("attentionBackward", "lse", L);
        needNumel("attentionBackward", "lse", L, (long) B * Hq * T);
        if (DO.dtype() != O.dtype()) throw new IllegalArgumentException("attentionBackward: dout " + DO + " and out " + O + " must share a dtype");
        if (B == 0 || T == 0) return;
        long rows = (long) B * Hq * T;
        if (flashEligible(D, DQ, DK, DV, DO, O, Q, K, V)) {
            long drow = scratch("attn.Drow", rows * 4);
            long dqn = (long) B * T * Hq * D;
            long dqAcc = scratch("attn.dqAcc", dqn * 4);
            // Drow = rowsum(dO ⊙ O) and the dQ accumulator cleared, in one pass (D/8 lanes per row)
            long warps = (rows * (D / 8) + 31) / 32;
            launch("attn_bwd_prep", (int) ((warps + 7) / 8), 1, 256, 0,
                    new Kernels.Args().ptr(drow).ptr(dqAcc).ptr(DO.address()).ptr(O.address()).i(B).i(T).i(Hq).i(D));
            // grid (kv head, sequence, key tile of 64): key tile 0, which meets the most query tiles, first
            String f = "flash3_bwd_d" + D;
            int keys = flash3(f, "rows");
            kernels.launch(f, Hkv, B, (T + keys - 1) / keys, flash3(f, "threads"), flash3(f, "smem_bytes"), stream,
                    new Kernels.Args().ptr(DK.address()).ptr(DV.address()).ptr(dqAcc).ptr(Q.address()).ptr(K.address()).ptr(V.address())
                            .ptr(DO.address()).ptr(L.address()).ptr(drow).ptr(KS.address()).i(T).i(Hq).i(Hkv).f(scale * LOG2E).f(scale));
            launch("attn_dq_convert", (int) Math.max(1, Math.min(SM_BLOCKS * 4L, (dqn / 8 + 255) / 256)), 1, 256, 0,
                    new Kernels.Args().ptr(DQ.address()).ptr(dqAcc).l(dqn / 8));
            return;
        }
        gemmBackward(DQ, DK, DV, DO, O, L, Q, K, V, KS, B, T, Hq, Hkv, D, scale);
    }

    /** The GEMM path of the backward: the scores recomputed from the lse stash, dS with the scale folded in. */
    void gemmBackward(GpuTensor DQ, GpuTensor DK, GpuTensor DV, GpuTensor DO, GpuTensor O, GpuTensor L, GpuTensor Q, GpuTensor K,
                      GpuTensor V, GpuTensor KS, int B, int T, int Hq, int Hkv, int D, float scale) {
        int G = Hq / Math.max(1, Hkv);
        long rows = (long) B * Hq * T;
        long qn = (long) B * Hq * T * D, kn = (long) B * Hkv * T * D, sn = (long) B * Hq * T * T;
        long qh = scratch("attn.qh", align256(qn * 2)), kh = scratch("attn.kh", align256(kn * 2)), vh = scratch("attn.vh", align256(kn * 2));
        long doh = scratch("attn.doh", align256(qn * 2)), S = scratch("attn.S", sn * 4), dP = scratch("attn.dP", sn * 4);
        long P = scratch("attn.P", sn * 2), dS = scratch("attn.dS", sn * 2), Drow = scratch("attn.Drow", rows * 4);
        long dqh = scratch("attn.dqh", align256(qn * 2)), dkh = scratch("attn.dkh", align256(kn * 2)), dvh = scratch("attn.dvh", align256(kn * 2));
        toHeads(qh, Q, B, T, Hq, D);
        toHeads(kh, K, B, T, Hkv, D);
        toHeads(vh, V, B, T, Hkv, D);
        toHeads(doh, DO, B, T, Hq, D);
        int GT = G * T, batches = B * Hkv;
        owner.blas.gemmBatched(false, true, GT, T, D, scale, qh, DType.BF16, D, (long) GT * D, kh, DType.BF16, D, (long) T * D,
                0f, S, DType.F32, T, (long) GT * T, batches);
        // dP_bg (G·T × T) = dOh_bg · Vh_bgᵀ
        owner.blas.gemmBatched(false, true, GT, T, D, 1f, doh, DType.BF16, D, (long) GT * D, vh, DType.BF16, D, (long) T * D,
                0f, dP, DType.F32, T, (long) GT * T, batches);
        launch("attn_rowdot_" + sfx(O, "attentionBackward"), (int) ((rows * 32 + 255) / 256), 1, 256, 0,
                new Kernels.Args().ptr(Drow).ptr(DO.address()).ptr(O.address()).i(B).i(T).i(Hq).i(D));
        launch("attn_softmax_bwd", (int) rows, 1, rowThreads(T, 256), 0, new Kernels.Args().ptr(P).ptr(dS).ptr(S).ptr(dP)
                .ptr(L.address()).ptr(Drow).ptr(KS.address()).i(Hq).i(T).f(scale));
        // dVh_bg (T × D) = P_bgᵀ · dOh_bg      (sums over the G query heads of the group: K = G·T)
        owner.blas.gemmBatched(true, false, T, D, GT, 1f, P, DType.BF16, T, (long) GT * T, doh, DType.BF16, D, (long) GT * D,
                0f, dvh, DType.BF16, D, (long) T * D, batches);
        // dQh_bg (G·T × D) = dS_bg · Kh_bg      (scale folded into dS)
        owner.blas.gemmBatched(false, false, GT, D, T, 1f, dS, DType.BF16, T, (long) GT * T, kh, DType.BF16, D, (long) T * D,
                0f, dqh, DType.BF16, D, (long) GT * D, batches);
        // dKh_bg (T × D) = dS_bgᵀ · Qh_bg
        owner.blas.gemmBatched(true, false, T, D, GT, 1f, dS, DType.BF16, T, (long) GT * T, qh, DType.BF16, D, (long) GT * D,
                0f, dkh, DType.BF16, D, (long) T * D, batches);
        fromHeads(DQ, dqh, B, T, Hq, D);
        fromHeads(DK, dkh, B, T, Hkv, D);
        fromHeads(DV, dvh, B, T, Hkv, D);
    }

    void attentionCached(Tensor out, Tensor q, Tensor kCache, Tensor vCache, int pos0,
                         int heads, int kvHeads, int headDim, float scale) {
        bind();
        GpuTensor O = own(out), Q = own(q), KC = own(kCache), VC = own(vCache);
        int D = headDim, Hq = heads, Hkv = kvHeads;
        if (Hkv <= 0 || Hq % Hkv != 0) throw new IllegalArgumentException("attentionCached: heads " + Hq + " is not a multiple of kv heads " + Hkv);
        int n = (int) (Q.numel() / ((long) Hq * D));
        needNumel("attentionCached", "out", O, Q.numel());
        long maxT = KC.numel() / ((long) Hkv * D);
        if (pos0 < 0 || pos0 + n > maxT) throw new IllegalArgumentException("attentionCached: positions [" + pos0 + ", " + (pos0 + n) + ") exceed the cache of " + maxT);
        if (O.dtype() != Q.dtype() || KC.dtype() != Q.dtype() || VC.dtype() != Q.dtype())
            throw new IllegalArgumentException("attentionCached: out, q and the caches must share a dtype");
        if (n == 0) return;
        long smem = (long) (D + pos0 + n) * CACHED_ENTRY_BYTES;
        if (smem > Kernels.DEFAULT_DYNAMIC_SHARED_BYTES) throw new IllegalArgumentException("attentionCached: context of " + (pos0 + n) + " tokens exceeds this kernel's shared-memory score buffer (~12K)");
        kernels.launch("attn_cached_" + sfx(Q, "attentionCached"), n, Hq, 128, (int) smem, stream,
                new Kernels.Args().ptr(O.address()).ptr(Q.address()).ptr(KC.address()).ptr(VC.address())
                        .i(pos0).i(Hq).i(Hkv).i(D).f(scale));
    }

    /** {@link org.sparselora.engine.backend.Backend#attentionCachedBatch}: attn_cached_batch, one block per (new token, head, sequence). */
    void attentionCachedBatch(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor keyStart, int batch, int pos0,
                              int heads, int kvHeads, int headDim, float scale) {
        bind();
        GpuTensor O = own(out), Q = own(q), KC = own(kCache), VC = own(vCache), KS = own(keyStart);
        int B = batch, D = headDim, Hq = heads, Hkv = kvHeads;
        String op = "attentionCachedBatch";
        if (B <= 0) throw new IllegalArgumentException(op + ": batch must be > 0, got " + B);
        if (Hkv <= 0 || Hq % Hkv != 0) throw new IllegalArgumentException(op + ": heads " + Hq + " is not a multiple of kv heads " + Hkv);
        long qRow = (long) B * Hq * D, kvRow = (long) B * Hkv * D;
        if (Q.numel() % qRow != 0) throw new IllegalArgumentException(op + ": q " + Q + " is not n tokens of " + B + " sequences × " + Hq + "·" + D);
        if (KC.numel() % kvRow != 0) throw new IllegalArgumentException(op + ": kCache " + KC + " is not maxT slots of " + B + " sequences × " + Hkv + "·" + D);
        int n = (int) (Q.numel() / qRow);
        long maxT = KC.numel() / kvRow;
        needNumel(op, "out", O, Q.numel());
        needNumel(op, "vCache", VC, KC.numel());
        needI32(op, "keyStart", KS);
        needNumel(op, "keyStart", KS, B);
        if (pos0 < 0 || pos0 + n > maxT) throw new IllegalArgumentException(op + ": slots [" + pos0 + ", " + (pos0 + n) + ") exceed the cache of " + maxT);
        if (O.dtype() != Q.dtype() || KC.dtype() != Q.dtype() || VC.dtype() != Q.dtype())
            throw new IllegalArgumentException(op + ": out, q and the caches must share a dtype");
        if (n == 0) return;
        long smem = (long) (D + pos0 + n) * CACHED_ENTRY_BYTES; // keyStart may be 0: room for every slot
        if (smem > Kernels.DEFAULT_DYNAMIC_SHARED_BYTES) throw new IllegalArgumentException(op + ": context of " + (pos0 + n) + " slots exceeds this kernel's shared-memory score buffer (~12K)");
        kernels.launch("attn_cached_batch_" + sfx(Q, op), n, Hq, B, 128, (int) smem, stream,
                new Kernels.Args().ptr(O.address()).ptr(Q.address()).ptr(KC.address()).ptr(VC.address()).ptr(KS.address())
                        .i(pos0).i(Hq).i(Hkv).i(D).f(scale));
    }
}
