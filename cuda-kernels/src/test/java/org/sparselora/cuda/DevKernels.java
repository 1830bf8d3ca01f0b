package org.sparselora.cuda;

import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * The slower kernel variants of the GPU backend, kept where the benches can still time them and the
 * GPU tests still hold them against the CPU (as llm.c keeps its kernel versions in {@code dev/cuda}),
 * out of the production classes, which run only the winner of each comparison. Each variant takes
 * the arguments of the backend op it competes with; the callers pass valid ones (the op's own checks
 * are the backend's). Where a variant is also the backend's fallback for shapes the winner does not
 * take (the GEMM attention, topk_f32, the cuBLAS Gram matrices, the segment-struct SwiGLU scores),
 * this class calls that production code for shapes the winner would have taken; the one variant with
 * no production use, the row-sum low-rank norms, launches its kernels here.
 *
 * <p>Used by the GPU op tests ({@link GpuBlasTest}, {@link GpuAttentionTest}, {@link GpuPredictorTest}: each variant against the CPU), {@link KernelBench},
 * {@link AttentionBench} and {@link PredictorBench} (each variant timed beside the winner).
 */
final class DevKernels {
    private DevKernels() {}

    /**
     * How attention runs. Both compute the same function. Forward + backward at B8 T512 32/8×128 on
     * the H200 (NOTES.md run 4): GEMM ≈ 1090 µs, FLASH_PIPELINED ≈ 432, so the backend runs the fused
     * kernels wherever they apply (bf16 tensors with head dim 32/64/128, 16-byte aligned) and the GEMM
     * path elsewhere. Two earlier fused kinds (FLASH_WMMA ≈ 3000 µs, FLASH_MMA ≈ 1530) were removed once
     * FLASH_PIPELINED beat both at every measured shape.
     */
    enum Attention {
        /** cuBLAS strided-batched GEMMs on head-major copies + fused masked softmax, fp32 scores in memory, at every shape. */
        GEMM,
        /**
         * The backend's op: mma.sync kernels with cp.async double-buffered tiles and ldmatrix
         * fragments, 128-query forward blocks (4 warps of 32 rows at D = 128, 8 of 16 below), one
         * backward kernel per 64-key tile with dQ accumulated in fp32 by vector reductions (then
         * rounded to bf16); the GEMM path where the fused kernels do not apply.
         */
        FLASH_PIPELINED;

        void forward(GpuBackend g, Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyStart,
                     int B, int T, int Hq, int Hkv, int D, float scale) {
            if (this == FLASH_PIPELINED) {
                g.attention(out, lse, q, k, v, keyStart, B, T, Hq, Hkv, D, scale);
                return;
            }
            GpuAttention a = g.attention;
            a.bind();
            if (B == 0 || T == 0) return;
            a.gemmForward(a.own(out), a.own(lse), a.own(q), a.own(k), a.own(v), a.own(keyStart), B, T, Hq, Hkv, D, scale);
        }

        void backward(GpuBackend g, Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse, Tensor q, Tensor k,
                      Tensor v, Tensor keyStart, int B, int T, int Hq, int Hkv, int D, float scale) {
            if (this == FLASH_PIPELINED) {
                g.attentionBackward(dq, dk, dv, dout, out, lse, q, k, v, keyStart, B, T, Hq, Hkv, D, scale);
                return;
            }
            GpuAttention a = g.attention;
            a.bind();
            if (B == 0 || T == 0) return;
            a.gemmBackward(a.own(dq), a.own(dk), a.own(dv), a.own(dout), a.own(out), a.own(lse), a.own(q), a.own(k), a.own(v),
                    a.own(keyStart), B, T, Hq, Hkv, D, scale);
        }
    }

    /** topK through topk_f32, the first single-block kernel (the backend's register-resident top-k is faster up to 16384 keys). */
    static void topK(GpuBackend g, Tensor idx, Tensor scores, int k) {
        GpuPredictor p = g.predictor;
        p.bind();
        if (k == 0) return;
        GpuTensor S = p.own(scores);
        p.topKSingleBlock(p.own(idx), S, 1, (int) S.numel(), k);
    }

    /** topKRows through topk_f32. */
    static void topKRows(GpuBackend g, Tensor idx, Tensor scores, int k) {
        GpuPredictor p = g.predictor;
        p.bind();
        GpuTensor S = p.own(scores);
        if (k == 0 || S.dim(0) == 0) return;
        p.topKSingleBlock(p.own(idx), S, S.dim(0), S.dim(1), k);
    }

    /** The low-rank norm segments of one call (one to three), owned by g, with their common (n, r) and total width. */
    private record Segments(GpuTensor[] O, GpuTensor[] T, GpuTensor[] Q, int n, int r, int mTotal) {
        static Segments of(GpuPredictor p, Tensor[] outs, Tensor[] ts, Tensor[] qs) {
            if (outs.length < 1 || outs.length > 3 || ts.length != outs.length || qs.length != outs.length)
                throw new IllegalArgumentException("one to three segments, got " + outs.length + " outputs, " + ts.length + " t, " + qs.length + " Q");
            GpuTensor[] O = new GpuTensor[outs.length], T = new GpuTensor[outs.length], Q = new GpuTensor[outs.length];
            int mTotal = 0;
            for (int i = 0; i < outs.length; i++) {
                O[i] = p.own(outs[i]); T[i] = p.own(ts[i]); Q[i] = p.own(qs[i]);
                mTotal += Q[i].dim(1);
            }
            return new Segments(O, T, Q, T[0].dim(0), T[0].dim(1), mTotal);
        }

        /** Whether the fused kernels take these segments (else the backend's op runs its default). */
        boolean fused() {
            DType dt = T[0].dtype();
            boolean ok = r <= GpuPredictor.LOW_RANK_MAX && (dt == DType.BF16 || dt == DType.F32);
            for (int i = 0; i < T.length; i++) ok &= T[i].dtype() == dt && Q[i].dtype() == dt;
            return ok;
        }
    }

    /**
     * lowRankColumnNorms by summing (t·q)² over the rows (the first fused form): lowrank_colsumsq in
     * row chunks of LR_ROWS, then lowrank_norm_finish. The Gram form (the backend's) does r² work per
     * column instead of n·r: at the 8B attention predictor's shape (4096 tokens) it is several times
     * faster (PredictorBench).
     */
    static void lowRankColumnNormsRowSums(GpuBackend g, Tensor[] outs, Tensor[] ts, Tensor[] qs) {
        GpuPredictor p = g.predictor;
        p.bind();
        Segments s = Segments.of(p, outs, ts, qs);
        if (!s.fused()) { g.lowRankColumnNorms(outs, ts, qs); return; }
        int n = s.n(), r = s.r(), mTotal = s.mTotal();
        if (mTotal == 0) return;
        if (n == 0 || r == 0) { for (GpuTensor o : s.O()) g.fill(o, 0f); return; }
        int gx = (mTotal + GpuPredictor.LR_COLS - 1) / GpuPredictor.LR_COLS, chunks = (n + GpuPredictor.LR_ROWS - 1) / GpuPredictor.LR_ROWS;
        long part = chunks > 1 ? p.scratch("lowrank.part", (long) chunks * mTotal * 4) : 0;
        p.launch("lowrank_colsumsq_" + GpuOps.sfx(s.T()[0], "lowRankColumnNorms"), gx, chunks, GpuPredictor.LR_COLS, 0,
                GpuPredictor.segments(s.O(), s.T(), s.Q()).ptr(part).i(n).i(r).i(mTotal));
        if (chunks > 1)
            p.launch("lowrank_norm_finish", gx, 1, GpuPredictor.LR_COLS, 0, GpuPredictor.segments(s.O(), s.T(), s.Q()).ptr(part).i(chunks).i(mTotal));
    }

    /**
     * How the Gram form of lowRankColumnNorms gets G_s = t_sᵀ·t_s: one cuBLAS GEMM per segment (the
     * first form), one strided-batched cuBLAS GEMM for all segments (when the t sit equally spaced, as
     * the predictor stacks them), or the chunked kernel pair lowrank_gram_part +
     * lowrank_gram_part_norms (the backend's: no cuBLAS, the chunk sums added in a fixed order; past
     * 1024 Gram entries it falls back to the batched-or-each cuBLAS form itself).
     */
    enum GramMode {
        CUBLAS_EACH, CUBLAS_BATCHED, KERNEL;

        void lowRankColumnNorms(GpuBackend g, Tensor[] outs, Tensor[] ts, Tensor[] qs) {
            if (this == KERNEL) { g.lowRankColumnNorms(outs, ts, qs); return; }
            GpuPredictor p = g.predictor;
            p.bind();
            Segments s = Segments.of(p, outs, ts, qs);
            if (!s.fused()) { g.lowRankColumnNorms(outs, ts, qs); return; }
            if (s.mTotal() == 0) return;
            if (s.n() == 0 || s.r() == 0) { for (GpuTensor o : s.O()) g.fill(o, 0f); return; }
            p.gramNormsCublas(s.O(), s.T(), s.Q(), s.n(), s.r(), s.mTotal(), this == CUBLAS_BATCHED);
        }
    }

    /**
     * matmulSharedA through cuBLAS's strided-batched GEMM where the backend takes the skinny_shared_a
     * kernel (left operands of ≤ 32 rows, ≤ 32 columns in groups of 8): the same stacking rule as the
     * backend's op; products that are not stacked take its per-product default.
     */
    static void matmulSharedACublas(GpuBackend g, Tensor[] outs, Tensor a, Tensor[] bs) {
        GpuBlas b = g.blas;
        b.bind();
        int count = outs.length;
        GpuTensor A = b.own(a);
        boolean batched = count >= 2 && A.rank() == 2 && bs.length == count;
        GpuTensor[] O = new GpuTensor[count], B = new GpuTensor[count];
        for (int i = 0; i < count; i++) { O[i] = b.own(outs[i]); B[i] = b.own(bs[i]); }
        int M = batched ? A.dim(0) : 0, K = batched ? A.dim(1) : 0, N = batched && B[0].rank() == 2 ? B[0].dim(1) : -1;
        DType aT = A.dtype(), bT = B[0].dtype(), cT = O[0].dtype();
        batched &= M > 0 && K > 0 && N > 0 && aT == bT && (aT == DType.BF16 && (cT == DType.BF16 || cT == DType.F32)
                                                            || aT == DType.F32 && cT == DType.F32);
        long bStride = batched ? B[1].address() - B[0].address() : 0, cStride = batched ? O[1].address() - O[0].address() : 0;
        batched &= bStride >= (long) K * N * bT.bytes && bStride % bT.bytes == 0 && cStride >= (long) M * N * cT.bytes && cStride % cT.bytes == 0;
        for (int i = 0; batched && i < count; i++)
            batched = B[i].rank() == 2 && B[i].dim(0) == K && B[i].dim(1) == N && B[i].dtype() == bT
                    && O[i].rank() == 2 && O[i].dim(0) == M && O[i].dim(1) == N && O[i].dtype() == cT
                    && B[i].address() == B[0].address() + i * bStride && O[i].address() == O[0].address() + i * cStride;
        if (!batched) { g.matmulSharedA(outs, a, bs); return; }
        b.gemmBatched(false, false, M, N, K, 1f, A.address(), aT, K, 0L, B[0].address(), bT, N, bStride / bT.bytes,
                0f, O[0].address(), cT, N, cStride / cT.bytes, count);
    }

    /**
     * lowRankSwigluColumnNorms through the segment-struct kernel (lowrank_swiglu_colsumsq) where the
     * backend takes the flat lowrank_swiglu_small (≤ LR_ROWS rows: the MLP predictor's B sequence means).
     */
    static void lowRankSwigluSegments(GpuBackend g, Tensor out, Tensor tg, Tensor qg, Tensor tu, Tensor qu) {
        GpuPredictor p = g.predictor;
        p.bind();
        GpuTensor O = p.own(out), TG = p.own(tg), QG = p.own(qg), TU = p.own(tu), QU = p.own(qu);
        int n = TG.dim(0), r = TG.dim(1), m = QG.dim(1);
        if (r > GpuPredictor.LOW_RANK_MAX) throw new IllegalArgumentException("lowRankSwigluSegments: rank " + r + " over the kernel's " + GpuPredictor.LOW_RANK_MAX);
        if (m == 0) return;
        if (n == 0 || r == 0) { g.fill(O, 0f); return; }
        p.swigluSegments(O, TG, QG, TU, QU, n, r, m);
    }
}
