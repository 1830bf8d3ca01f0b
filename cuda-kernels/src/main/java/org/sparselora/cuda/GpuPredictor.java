package org.sparselora.cuda;

import java.util.Arrays;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * A {@link GpuBackend}'s ops of the SparseLoRA predictor: top-k selection, the low-rank column
 * norms that score channels (‖t·q_c‖ through the Gram matrix tᵀt, and the SwiGLU form), and the
 * expansion of KV-head channels to their query groups.
 */
final class GpuPredictor extends GpuOps {
    GpuPredictor(GpuBackend owner, GpuDevice dev) { super(owner, dev); }

    void topK(Tensor idx, Tensor scores, int k) {
        bind();
        GpuTensor I = own(idx), S = own(scores);
        needI32("topK", "idx", I);
        needF32("topK", "scores", S);
        int n = (int) S.numel();
        if (k < 0 || k > n) throw new IllegalArgumentException("topK: k = " + k + " outside [0, " + n + "]");
        needNumel("topK", "idx", I, k);
        if (k == 0) return;
        launchTopK(I, S, 1, n, k);
    }

    void topKRows(Tensor idx, Tensor scores, int k) {
        bind();
        GpuTensor I = own(idx), S = own(scores);
        needI32("topKRows", "idx", I);
        needF32("topKRows", "scores", S);
        if (S.rank() != 2) throw new IllegalArgumentException("topKRows: scores must be (rows, n), got " + S);
        int m = S.dim(0), n = S.dim(1);
        if (k < 0 || k > n) throw new IllegalArgumentException("topKRows: k = " + k + " outside [0, " + n + "]");
        needNumel("topKRows", "idx", I, (long) m * k);
        if (k == 0 || m == 0) return;
        launchTopK(I, S, m, n, k);
    }

    /** Largest row the register-resident top-k takes (1024 threads × 16 keys); longer rows use topk_f32. */
    static final int TOPK_REG_MAX = 1024 * 16;

    /** One block per row of (rows, n) scores into (rows, k) indices: the register-resident kernel, or topk_f32 past its limit. */
    private void launchTopK(GpuTensor I, GpuTensor S, int rows, int n, int k) {
        if (n > TOPK_REG_MAX) {
            topKSingleBlock(I, S, rows, n, k);
            return;
        }
        int items = n <= 4096 ? 4 : 16;
        int threads = Math.max(32, ((n + items - 1) / items + 31) / 32 * 32);
        boolean vec = n % 4 == 0 && aligned(S);
        launch("topk_reg" + items + "_f32", rows, 1, threads, 0,
                new Kernels.Args().ptr(I.address()).ptr(S.address()).i(n).i(k).i(vec ? 1 : 0));
    }

    /** topk_f32: one 1024-thread block per row, the row streamed through shared-memory histograms (any n; the same result). */
    void topKSingleBlock(GpuTensor I, GpuTensor S, int rows, int n, int k) {
        launch("topk_f32", rows, 1, 1024, 0, new Kernels.Args().ptr(I.address()).ptr(S.address()).i(n).i(k));
    }

    /** Largest predictor rank the fused low-rank norm kernels take (their Q column lives in registers). */
    static final int LOW_RANK_MAX = Kernels.constant("sparse", "lowrank_max_rank");
    /** Columns per block and rows per chunk of the low-rank norm kernels (LR_COLS, LR_ROWS in sparse.cu). */
    static final int LR_COLS = Kernels.constant("sparse", "lowrank_cols"), LR_ROWS = Kernels.constant("sparse", "lowrank_rows");

    boolean lowRankColumnNorms(Tensor[] outs, Tensor[] ts, Tensor[] qs) {
        bind();
        if (outs.length != ts.length || outs.length != qs.length)
            throw new IllegalArgumentException("lowRankColumnNorms: " + outs.length + " outputs, " + ts.length + " t, " + qs.length + " Q");
        if (outs.length == 0) return true;
        if (outs.length > 3) {  // the kernel takes three segments: do the rest in further launches
            owner.lowRankColumnNorms(Arrays.copyOf(outs, 3), Arrays.copyOf(ts, 3), Arrays.copyOf(qs, 3));
            owner.lowRankColumnNorms(Arrays.copyOfRange(outs, 3, outs.length), Arrays.copyOfRange(ts, 3, ts.length), Arrays.copyOfRange(qs, 3, qs.length));
            return true;
        }
        GpuTensor[] O = new GpuTensor[outs.length], T = new GpuTensor[outs.length], Q = new GpuTensor[outs.length];
        int n = -1, r = -1, mTotal = 0;
        for (int i = 0; i < outs.length; i++) {
            O[i] = own(outs[i]); T[i] = own(ts[i]); Q[i] = own(qs[i]);
            needF32("lowRankColumnNorms", "outs[" + i + "]", O[i]);
            if (T[i].rank() != 2 || Q[i].rank() != 2 || T[i].dim(1) != Q[i].dim(0) || O[i].numel() != Q[i].dim(1))
                throw new IllegalArgumentException("lowRankColumnNorms: segment " + i + " has t " + T[i] + ", Q " + Q[i] + ", out " + O[i]);
            if (i == 0) { n = T[i].dim(0); r = T[i].dim(1); }
            else if (T[i].dim(0) != n || T[i].dim(1) != r)
                throw new IllegalArgumentException("lowRankColumnNorms: every t must be (" + n + ", " + r + "), segment " + i + " is " + T[i]);
            mTotal += Q[i].dim(1);
        }
        DType dt = T[0].dtype();
        boolean fused = r <= LOW_RANK_MAX && (dt == DType.BF16 || dt == DType.F32);
        for (int i = 0; i < outs.length; i++) fused &= T[i].dtype() == dt && Q[i].dtype() == dt;
        if (!fused) return false;
        if (mTotal == 0) return true;
        if (n == 0 || r == 0) { for (GpuTensor o : O) owner.fill(o, 0f); return true; }
        int gx = (mTotal + LR_COLS - 1) / LR_COLS;
        // ‖t·q_c‖² = q_cᵀ·(tᵀt)·q_c: one (r,r) Gram matrix per segment, then r² work per column
        // (not n·r): the attention predictor's q̂/k̂/v̂ norms over thousands of tokens cost a few µs
        int E = outs.length * r * r;
        if (E <= 1024) {
            // rows spread over up to 64 blocks of at least 64 rows each (measured at the 8B shape,
            // 4096 tokens: 64 chunks 10.9 µs for both kernels, 32 chunks of 128 rows 13.3 µs)
            int chunks = Math.max(1, Math.min(64, (n + 63) / 64)), rowsPerChunk = (n + chunks - 1) / chunks;
            chunks = (n + rowsPerChunk - 1) / rowsPerChunk;
            long part = scratch("lowrank.gram.part", (long) chunks * E * 4);
            launch("lowrank_gram_part_" + sfx(T[0], "lowRankColumnNorms"), chunks, 1, Math.max(128, (E + 31) / 32 * 32), 0,
                    segments(O, T, Q).ptr(part).i(n).i(r).i(rowsPerChunk));
            launch("lowrank_gram_part_norms_" + sfx(Q[0], "lowRankColumnNorms"), gx, 1, LR_COLS, 0,
                    segments(O, T, Q).ptr(part).i(chunks).i(r).i(mTotal));
            return true;
        }
        gramNormsCublas(O, T, Q, n, r, mTotal, true);
        return true;
    }

    /**
     * The Gram form through cuBLAS (the chunked kernels' Gram matrices outgrow their shared memory
     * past 1024 entries): G_i = t_iᵀ·t_i for every segment in one strided-batched GEMM when the t sit
     * equally spaced (as the predictor stacks them) and batched is allowed, else one GEMM each; then
     * lowrank_gram_norms.
     */
    void gramNormsCublas(GpuTensor[] O, GpuTensor[] T, GpuTensor[] Q, int n, int r, int mTotal, boolean batchedAllowed) {
        DType dt = T[0].dtype();
        int gx = (mTotal + LR_COLS - 1) / LR_COLS;
        long gAddr = scratch("lowrank.gram", 3L * LOW_RANK_MAX * LOW_RANK_MAX * 4);
        long tStride = O.length > 1 ? T[1].address() - T[0].address() : 0;
        boolean batched = batchedAllowed && O.length > 1 && tStride >= (long) n * r * dt.bytes && tStride % dt.bytes == 0;
        for (int i = 0; batched && i < O.length; i++) batched = T[i].address() == T[0].address() + i * tStride;
        if (batched) {  // G_i = t_iᵀ·t_i for every segment in one strided-batched GEMM
            owner.blas.gemmBatched(true, false, r, r, n, 1f, T[0].address(), dt, r, tStride / dt.bytes, T[0].address(), dt, r, tStride / dt.bytes,
                    0f, gAddr, DType.F32, r, (long) r * r, O.length);
        } else {
            for (int i = 0; i < O.length; i++) {
                GpuTensor G = new GpuTensor(owner, DType.F32, new int[] {r, r}, new DevPtr().plus(gAddr + (long) i * r * r * 4), null);
                owner.matmul(G, T[i], true, T[i], false, 1f, 0f);
            }
        }
        launch("lowrank_gram_norms_" + sfx(Q[0], "lowRankColumnNorms"), gx, 1, LR_COLS, 0,
                segments(O, T, Q).ptr(gAddr).i(r).i(mTotal));
    }

    /** The flat segment parameters of the low-rank norm kernels: three t, three Q, three outputs, three widths, the count. */
    static Kernels.Args segments(GpuTensor[] O, GpuTensor[] T, GpuTensor[] Q) {
        Kernels.Args a = new Kernels.Args();
        for (int i = 0; i < 3; i++) a.ptr(i < T.length ? T[i].address() : 0L);
        for (int i = 0; i < 3; i++) a.ptr(i < Q.length ? Q[i].address() : 0L);
        for (int i = 0; i < 3; i++) a.ptr(i < O.length ? O[i].address() : 0L);
        for (int i = 0; i < 3; i++) a.i(i < Q.length ? Q[i].dim(1) : 0);
        return a.i(O.length);
    }

    boolean lowRankSwigluColumnNorms(Tensor out, Tensor tg, Tensor qg, Tensor tu, Tensor qu) {
        bind();
        GpuTensor O = own(out), TG = own(tg), QG = own(qg), TU = own(tu), QU = own(qu);
        needF32("lowRankSwigluColumnNorms", "out", O);
        if (TG.rank() != 2 || TU.rank() != 2 || QG.rank() != 2 || QU.rank() != 2 || !Arrays.equals(TG.shape(), TU.shape())
                || !Arrays.equals(QG.shape(), QU.shape()) || TG.dim(1) != QG.dim(0) || O.numel() != QG.dim(1))
            throw new IllegalArgumentException("lowRankSwigluColumnNorms: out " + O + ", tg " + TG + ", qg " + QG + ", tu " + TU + ", qu " + QU);
        int n = TG.dim(0), r = TG.dim(1), m = QG.dim(1);
        DType dt = TG.dtype();
        boolean fused = r <= LOW_RANK_MAX && (dt == DType.BF16 || dt == DType.F32)
                && TU.dtype() == dt && QG.dtype() == dt && QU.dtype() == dt;
        if (!fused) return false;
        if (m == 0) return true;
        if (n == 0 || r == 0) { owner.fill(O, 0f); return true; }
        if (n <= LR_ROWS) {   // the B sequence means: one pass, flat parameters
            launch("lowrank_swiglu_small_r" + (r <= 8 ? 8 : 32) + "_" + sfx(TG, "lowRankSwigluColumnNorms"), (m + 127) / 128, 1, 128, 0,
                    new Kernels.Args().ptr(O.address()).ptr(TG.address()).ptr(TU.address()).ptr(QG.address()).ptr(QU.address())
                            .i(n).i(r).i(m));
            return true;
        }
        swigluSegments(O, TG, QG, TU, QU, n, r, m);
        return true;
    }

    /** lowRankSwigluColumnNorms through the segment-struct kernel, any row count (row chunks of LR_ROWS, then lowrank_norm_finish). */
    void swigluSegments(GpuTensor O, GpuTensor TG, GpuTensor QG, GpuTensor TU, GpuTensor QU, int n, int r, int m) {
        int chunks = (n + LR_ROWS - 1) / LR_ROWS, gx = (m + LR_COLS - 1) / LR_COLS;
        long part = chunks > 1 ? scratch("lowrank.part", (long) chunks * m * 4) : 0;
        // segment parameters: t = (tg, tu), Q = (qg, qu), the one output, width m
        Kernels.Args a = new Kernels.Args().ptr(TG.address()).ptr(TU.address()).ptr(0L).ptr(QG.address()).ptr(QU.address()).ptr(0L)
                .ptr(O.address()).ptr(0L).ptr(0L).i(m).i(0).i(0).i(1);
        launch("lowrank_swiglu_colsumsq_" + sfx(TG, "lowRankSwigluColumnNorms"), gx, chunks, LR_COLS, 0, a.ptr(part).i(n).i(r));
        if (chunks > 1)
            launch("lowrank_norm_finish", gx, 1, LR_COLS, 0, segments(new GpuTensor[] {O}, new GpuTensor[] {TG}, new GpuTensor[] {QG})
                    .ptr(part).i(chunks).i(m));
    }

    void kvChannelScores(Tensor scores, Tensor qNorms, Tensor kNorms, int kvHeads, int groupSize, int headDim) {
        bind();
        GpuTensor S = own(scores), QN = own(qNorms), KN = own(kNorms);
        needF32("kvChannelScores", "scores", S);
        needF32("kvChannelScores", "qNorms", QN);
        needF32("kvChannelScores", "kNorms", KN);
        needNumel("kvChannelScores", "scores", S, (long) kvHeads * headDim);
        needNumel("kvChannelScores", "kNorms", KN, (long) kvHeads * headDim);
        needNumel("kvChannelScores", "qNorms", QN, (long) kvHeads * groupSize * headDim);
        int n = kvHeads * headDim;
        if (n == 0) return;
        launch("kv_channel_scores", (n + 255) / 256, 1, 256, 0, new Kernels.Args().ptr(S.address()).ptr(QN.address())
                .ptr(KN.address()).i(kvHeads).i(groupSize).i(headDim));
    }

    void expandGroupChannels(Tensor out, Tensor kvIdx, int groupSize, int headDim) {
        bind();
        GpuTensor O = own(out), I = own(kvIdx);
        needI32("expandGroupChannels", "out", O);
        needI32("expandGroupChannels", "kvIdx", I);
        int k = (int) I.numel();
        needNumel("expandGroupChannels", "out", O, (long) k * groupSize);
        long n = (long) k * groupSize;
        if (n == 0) return;
        launch("expand_group_channels", (int) ((n + 255) / 256), 1, 256, 0,
                new Kernels.Args().ptr(O.address()).ptr(I.address()).i(k).i(groupSize).i(headDim));
    }

    void expandGroupChannelsRows(Tensor out, Tensor kvIdx, int groupSize, int headDim) {
        bind();
        GpuTensor O = own(out), I = own(kvIdx);
        needI32("expandGroupChannelsRows", "out", O);
        needI32("expandGroupChannelsRows", "kvIdx", I);
        if (I.rank() != 2) throw new IllegalArgumentException("expandGroupChannelsRows: kvIdx must be (rows, k), got " + I);
        int rows = I.dim(0), k = I.dim(1);
        needNumel("expandGroupChannelsRows", "out", O, (long) rows * k * groupSize);
        long n = (long) k * groupSize;
        if (n == 0 || rows == 0) return;
        launch("expand_group_channels_rows", (int) ((n + 255) / 256), rows, 256, 0,
                new Kernels.Args().ptr(O.address()).ptr(I.address()).i(k).i(groupSize).i(headDim));
    }
}
