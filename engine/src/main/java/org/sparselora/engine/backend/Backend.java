package org.sparselora.engine.backend;

import java.util.List;
import java.util.function.ObjIntConsumer;

/**
 * Every operation a Llama-family LoRA / SparseLoRA training step needs, on one device. The model
 * ({@code org.sparselora.engine.model}) is written once against this interface; {@code CpuBackend}
 * (fp32, the reference and the truth) and {@code GpuBackend} (bf16, JCuda PTX kernels + cuBLAS via
 * FFM, in {@code cuda-kernels/}) implement it.
 *
 * <p>Conventions (llm.c style): outputs first, then inputs; gradients are prefixed {@code d}; every
 * tensor argument has its shape in a comment. N = B·T flattened tokens, C = hidden size. All
 * matrices are row-major. Unless stated otherwise an op overwrites its outputs; ops named
 * {@code ...Accumulate} or taking {@code accumulate=true} add into them. Ops may run
 * asynchronously (GPU): only the {@code to*} download methods and {@link #synchronize()} wait.
 * Integer index tensors are {@link DType#I32}; per-row statistics (rstd, lse, losses) are F32.
 *
 * <p>Composite operations have default implementations built from the primitive ones; a backend
 * overrides them with fused kernels where that pays (the defaults are the reference semantics).
 */
public interface Backend extends AutoCloseable {

    /** A short name such as {@code cpu} or {@code cuda:0}. */
    String name();

    /** The dtype this backend stores activations and frozen weights in (F32 on the CPU, BF16 on the GPU). */
    DType computeType();

    // ------------------------------------------------------------------ memory

    Tensor empty(DType dtype, int... shape);

    default Tensor zeros(DType dtype, int... shape) {
        Tensor t = empty(dtype, shape);
        fill(t, 0f);
        return t;
    }

    /** Upload host floats, converting to {@code dtype}. {@code src.length == numel(shape)}. */
    default Tensor fromFloats(float[] src, DType dtype, int... shape) {
        Tensor t = empty(dtype, shape);
        copyFromHost(t, src);
        return t;
    }

    default Tensor fromInts(int[] src, int... shape) {
        Tensor t = empty(DType.I32, shape);
        copyFromHost(t, src);
        return t;
    }

    void copyFromHost(Tensor dst, float[] src);

    void copyFromHost(Tensor dst, int[] src);

    /** Download as floats (converting from the tensor's dtype); waits for pending work. */
    float[] toFloats(Tensor t);

    int[] toInts(Tensor t);

    /** dst = src elementwise, converting dtype; equal element counts. */
    void copy(Tensor dst, Tensor src);

    void fill(Tensor t, float value);

    /** Waits until all queued work is done. */
    void synchronize();

    @Override
    default void close() {}

    // ------------------------------------------------------------------ recorded runs (CUDA graphs)

    /** A run of ops recorded once ({@link #beginCapture()} … {@link #endCapture()}) and replayed as a unit. */
    interface Captured extends AutoCloseable {
        /** Queues the recorded ops once more: the same ops on the same tensors with the same arguments. */
        void replay();

        /** Frees the recording; the tensors made while recording that nobody holds go back to the backend. */
        @Override
        void close();
    }

    /**
     * Zeroes the padding rows of x (B·T, C): row b·T + t for t &lt; keyStart[b] (keyStart (B) I32 on
     * the device); other rows are untouched. Padding rows never reach a real token (attention masks
     * their keys, their targets are ignored), so a recorded sparse step zeroes them in the
     * selection's input and scores every row: one shape whatever the padding. Default: through the
     * host (reads keyStart); a device backend overrides it with one launch.
     */
    default void maskPaddingRows(Tensor x, Tensor keyStart, int batch, int seqLen) {
        if (keyStart.numel() != batch) throw new IllegalArgumentException("maskPaddingRows: keyStart " + Tensor.describe(keyStart) + " for batch " + batch);
        long rows = (long) batch * seqLen;
        if (rows == 0) return;
        if (x.numel() % rows != 0) throw new IllegalArgumentException("maskPaddingRows: x " + Tensor.describe(x) + " is not " + rows + " rows");
        int C = (int) (x.numel() / rows);
        int[] ks = toInts(keyStart);
        for (int b = 0; b < batch; b++) {
            int pad = Math.max(0, Math.min(seqLen, ks[b]));
            if (pad > 0) fill(x.view((long) b * seqLen * C, pad * C), 0f);
        }
    }

    /** Whether this backend can record ops ({@link #beginCapture()}); the CPU runs every op at once: no. */
    default boolean canCapture() { return false; }

    /**
     * Starts recording: ops queued from now on are recorded, not run, until {@link #endCapture()}
     * (a CUDA graph on the GPU). While recording nothing may wait for the device or move host data
     * ({@code to*}, {@code copyFromHost}, {@code from*}, {@link #synchronize()} throw); tensors may be
     * made and closed. A replay reads and writes exactly the tensors the recording did, so whatever
     * feeds a recording must sit in the same tensors at every replay.
     */
    default void beginCapture() { throw new UnsupportedOperationException(name() + " cannot record ops (no graph capture)"); }

    /** Ends the recording started by {@link #beginCapture()}. Nothing recorded has run yet: {@link Captured#replay()} runs it. */
    default Captured endCapture() { throw new UnsupportedOperationException(name() + " cannot record ops (no graph capture)"); }

    /** Ends a recording that failed half-way, dropping what was recorded; a no-op when none runs. */
    default void abortCapture() {}

    // ------------------------------------------------------------------ dense algebra

    /**
     * C = alpha·op(A)·op(B) + beta·C with row-major 2-D tensors, op(X) = X or Xᵀ.
     * A is (M,K) or, transposed, (K,M); B is (K,N) or, transposed, (N,K); C is (M,N) and F32 or
     * the compute type. A linear layer {@code y = x·Wᵀ} is {@code matmul(y, x, false, W, true, 1, 0)}.
     * With beta=1 the op accumulates (the fused LoRA scale-add is alpha=s, beta=1).
     */
    void matmul(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta);

    /**
     * {@link #matmul} over equally spaced row blocks: for j < blocks, rows [aOff + j·aStride, +m) of a
     * times op(b) go to rows [cOff + j·cStride, +m) of c, C_j = alpha·A_j·op(b) + beta·C_j. a (Ra,K),
     * b (K,N) or, transposed, (N,K), c (Rc,N); a stride of m makes that operand compact, a stride of 0
     * repeats its rows for every block. SparseLoRA's token groups are such blocks when every sequence
     * has its context and output tokens at the same positions (left-aligned prompts of one length, the
     * reference's timing batches): the frozen GEMMs then read and write the full activations in place,
     * with no gather or scatter of token rows. Each row's result is that of {@link #matmul} on it.
     * Default: one matmul per block on row views.
     */
    default void matmulRowBlocks(Tensor c, int cOff, int cStride, Tensor a, int aOff, int aStride, Tensor b, boolean transB,
                                 int blocks, int m, float alpha, float beta) {
        for (int j = 0; j < blocks; j++)
            matmul(c.rows(cOff + j * cStride, m), a.rows(aOff + j * aStride, m), false, b, transB, alpha, beta);
    }

    /**
     * outs[i] = a·bs[i] for every i: several products with one shared left operand, none transposed.
     * a (M,K), bs[i] (K,N), outs[i] (M,N). The SVD predictor's first factors of a layer (q, k, v; gate,
     * up) all read the layer's normed input. Default: one {@link #matmul} each; a device may run them
     * as one batched GEMM when the bs and the outs sit equally spaced in memory.
     */
    default void matmulSharedA(Tensor[] outs, Tensor a, Tensor[] bs) {
        if (outs.length != bs.length)
            throw new IllegalArgumentException("matmulSharedA: " + outs.length + " outputs for " + bs.length + " right operands");
        for (int i = 0; i < outs.length; i++) matmul(outs[i], a, false, bs[i], false, 1f, 0f);
    }

    /** y += alpha·x, elementwise, equal element counts. */
    void axpy(Tensor y, float alpha, Tensor x);

    /** t *= s. */
    void scale(Tensor t, float s);

    /** out = a ⊙ b elementwise. */
    void mul(Tensor out, Tensor a, Tensor b);

    /** Sum of squares over all given tensors, accumulated in double/fp32 (waits: returns to host). */
    double sumOfSquares(List<Tensor> tensors);

    // ------------------------------------------------------------------ layers

    /** out[n,:] = table[ids[n],:]. out (N,C), ids (N) I32, table (V,C). */
    void embedding(Tensor out, Tensor ids, Tensor table);

    /** out = x / rms(x) ⊙ weight per row; rstd[n] = 1/sqrt(mean(x[n]²)+eps). out,x (N,C); weight (C); rstd (N) F32. */
    void rmsNorm(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps);

    /** dx (+)= ∂/∂x of rmsNorm given dout (the norm weight is frozen: no dweight). dx,dout,x (N,C). */
    void rmsNormBackward(Tensor dx, Tensor dout, Tensor x, Tensor weight, Tensor rstd, boolean accumulate);

    /** residual += delta; out = rmsNorm(residual). The fused form of the residual add + the next norm. */
    default void addRmsNorm(Tensor residual, Tensor out, Tensor rstd, Tensor delta, Tensor weight, float eps) {
        axpy(residual, 1f, delta);
        rmsNorm(out, rstd, residual, weight, eps);
    }

    /**
     * residualOut = residualIn + delta; out = rmsNorm(residualOut): {@link #addRmsNorm} out of place,
     * so a model that keeps every layer's residual for its backward needs no copy of it first.
     * residualOut must not alias residualIn's storage unless it is the same tensor.
     */
    default void addRmsNormTo(Tensor residualOut, Tensor residualIn, Tensor out, Tensor rstd, Tensor delta, Tensor weight, float eps) {
        if (residualOut != residualIn) copy(residualOut, residualIn);
        addRmsNorm(residualOut, out, rstd, delta, weight, eps);
    }

    /**
     * Rotary embedding in place, HF "rotate_half" layout: within each head of size D, element i pairs
     * with i + D/2. x (N, H·D); positions (N) I32; cos, sin (maxPos, D/2) F32 tables (llama3 rope
     * scaling is folded into the tables by the caller). {@code inverse=true} rotates by −θ, which is
     * the backward pass (rotation is orthogonal).
     */
    void rope(Tensor x, Tensor positions, Tensor cos, Tensor sin, int heads, int headDim, boolean inverse);

    /**
     * {@link #rope} on a layer's q (N, Hq·D) and k (N, Hkv·D) with the same positions and tables —
     * the pair every attention layer rotates (forward, and inverse in the backward) — in one op.
     * Default: the two {@code rope} calls (the reference semantics); a device backend does both in
     * one launch.
     */
    default void ropeQK(Tensor q, Tensor k, Tensor positions, Tensor cos, Tensor sin, int heads, int kvHeads, int headDim, boolean inverse) {
        rope(q, positions, cos, sin, heads, headDim, inverse);
        rope(k, positions, cos, sin, kvHeads, headDim, inverse);
    }

    /**
     * Causal grouped-query attention. q (N, Hq·D), k and v (N, Hkv·D), out (N, Hq·D), N = B·T;
     * query head h reads kv head h / (Hq/Hkv). Keys before {@code keyStart[b]} (left padding) are
     * masked; a query row with no visible key (a padding position) outputs zeros.
     * lse (B, Hq, T) F32 receives the log-sum-exp of each softmax row (the backward's stash).
     */
    void attention(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyStart,
                   int batch, int seqLen, int heads, int kvHeads, int headDim, float scale);

    /** Gradients of {@link #attention}: dq, dk, dv are overwritten. */
    void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                           Tensor q, Tensor k, Tensor v, Tensor keyStart,
                           int batch, int seqLen, int heads, int kvHeads, int headDim, float scale);

    /**
     * Attention of n new tokens of one sequence against a KV cache (generation). q (n, Hq·D) are
     * positions [pos0, pos0+n); kCache, vCache (maxT, Hkv·D) already hold positions [0, pos0+n).
     */
    void attentionCached(Tensor out, Tensor q, Tensor kCache, Tensor vCache, int pos0,
                         int heads, int kvHeads, int headDim, float scale);

    /**
     * {@link #attentionCached} for B left-padded sequences decoded in lockstep (batched generation).
     * The caches are time-major, (maxT, B, Hkv·D): slot p of sequence b is cache row p·B + b, so the
     * n new tokens of every sequence, slots [pos0, pos0+n), are one contiguous block of rows that the
     * K/V projections write straight into. q, out (n·B, Hq·D): new token t of sequence b is row
     * t·B + b. keyStart (B, I32): the first real slot of each sequence (its left padding comes first);
     * the token at slot p of sequence b sees keys keyStart[b] ≤ j ≤ p, and a token that sees none (a
     * padding slot) outputs zeros. The caches already hold slots [0, pos0+n).
     */
    void attentionCachedBatch(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor keyStart, int batch, int pos0,
                              int heads, int kvHeads, int headDim, float scale);

    // ---- sliding-window attention (Mistral's sliding_window): query i sees key j iff
    // keyStart ≤ j ≤ i and i − j < window. The defaults serve backends without a windowed kernel:
    // a window that covers the whole sequence is the plain op; a shorter one is one clear error.

    /** Whether a sliding window changes nothing for sequences of {@code seqLen} keys (≤ 0 = no window). */
    static boolean windowCoversSequence(int window, int seqLen) { return window <= 0 || window >= seqLen; }

    /** The error a backend without windowed attention gives for a window shorter than the sequence. */
    default UnsupportedOperationException windowUnsupported(String op, int window, int seqLen) {
        return new UnsupportedOperationException(op + ": sliding window " + window + " is shorter than the sequence length "
                + seqLen + " and " + getClass().getSimpleName() + " has no sliding-window attention"
                + " (use sequences of at most " + window + " tokens, or the CPU backend)");
    }

    /** {@link #attention} with a sliding window of {@code window} keys (≤ 0 = none). */
    default void attention(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyStart,
                           int batch, int seqLen, int heads, int kvHeads, int headDim, float scale, int window) {
        if (!windowCoversSequence(window, seqLen)) throw windowUnsupported("attention", window, seqLen);
        attention(out, lse, q, k, v, keyStart, batch, seqLen, heads, kvHeads, headDim, scale);
    }

    /** Gradients of the windowed {@link #attention(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, int, int, int, int, int, float, int)}. */
    default void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                                   Tensor q, Tensor k, Tensor v, Tensor keyStart,
                                   int batch, int seqLen, int heads, int kvHeads, int headDim, float scale, int window) {
        if (!windowCoversSequence(window, seqLen)) throw windowUnsupported("attentionBackward", window, seqLen);
        attentionBackward(dq, dk, dv, dout, out, lse, q, k, v, keyStart, batch, seqLen, heads, kvHeads, headDim, scale);
    }

    /** {@link #attentionCached} with a sliding window: the new token at position p sees keys (p − window, p]. */
    default void attentionCached(Tensor out, Tensor q, Tensor kCache, Tensor vCache, int pos0,
                                 int heads, int kvHeads, int headDim, float scale, int window) {
        int keys = pos0 + (int) (q.numel() / ((long) heads * headDim)); // positions [0, pos0 + n) are visible at most
        if (!windowCoversSequence(window, keys)) throw windowUnsupported("attentionCached", window, keys);
        attentionCached(out, q, kCache, vCache, pos0, heads, kvHeads, headDim, scale);
    }

    /** {@link #attentionCachedBatch} with a sliding window: the token at slot p also needs p − j < window. */
    default void attentionCachedBatch(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor keyStart, int batch, int pos0,
                                      int heads, int kvHeads, int headDim, float scale, int window) {
        int keys = pos0 + (batch <= 0 ? 0 : (int) (q.numel() / ((long) batch * heads * headDim))); // slots [0, pos0 + n) at most
        if (!windowCoversSequence(window, keys)) throw windowUnsupported("attentionCachedBatch", window, keys);
        attentionCachedBatch(out, q, kCache, vCache, keyStart, batch, pos0, heads, kvHeads, headDim, scale);
    }

    /** out = silu(gate) ⊙ up. All (N, I). */
    void swiglu(Tensor out, Tensor gate, Tensor up);

    /** dgate, dup from dout (all (N, I)); overwritten. */
    void swigluBackward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up);

    /**
     * Fused softmax cross-entropy over one chunk of rows. logits (n, V); targets (n) I32 where -100
     * means "no loss"; losses (n) F32 receives −log p[target] (0 for ignored rows);
     * dlogits (n, V) receives gradScale·(softmax − onehot) (0 rows for ignored targets) and may
     * be the same tensor as logits (computed in place).
     */
    void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, float gradScale);

    /** Inverted dropout: out = x ⊙ mask / (1−p), mask drawn from (seed, element index) so forward and
     *  backward agree; p = 0 copies. out, x same shape. Backward is the same call on dout. */
    void dropout(Tensor out, Tensor x, float p, long seed);

    /**
     * t = mean + std·z with z standard normal drawn from (seed, element index) by {@link CounterRng}
     * — the same values on every backend (up to the tensor's dtype), made where the tensor lives
     * (random-init weights for benchmarks never pass through host memory on the GPU). The default
     * draws on the host and uploads.
     */
    default void randomNormal(Tensor t, long seed, float mean, float std) {
        long n = t.numel();
        if (n > Integer.MAX_VALUE - 8) throw new IllegalArgumentException("randomNormal: " + n + " elements is too many for a host draw");
        float[] v = new float[(int) n];
        java.util.stream.IntStream.range(0, (int) ((n + 65535) >> 16)).parallel().forEach(c -> {
            int end = (int) Math.min(n, (c + 1L) << 16);
            for (int i = c << 16; i < end; i++) v[i] = mean + std * CounterRng.normal(seed, i);
        });
        copyFromHost(t, v);
    }

    // ------------------------------------------------------------------ optimizer

    /**
     * One AdamW step on a LoRA tensor (fp32 master param, fp32 moments): g = grad·gradScale;
     * m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²; param −= lr·(m̂/(√v̂+eps) + wd·param) with bias
     * correction by {@code step} (1-based). gradScale carries clipping and averaging.
     */
    void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2,
               float eps, float weightDecay, int step, float gradScale);

    /**
     * A multi-tensor AdamW over fixed {@code {param, grad, m, v[, computeCopy]}} slots (see
     * {@link AdamwGroup}): the trainer's whole optimizer phase — gradient norm, update, compute-copy
     * refresh, gradient zeroing — through one object. The slots' tensors must outlive the group.
     * The default loops over {@link #sumOfSquares}, {@link #adamw}, {@link #copy} and {@link #fill}
     * (the reference semantics); a device backend overrides it with fused multi-tensor kernels.
     */
    default AdamwGroup adamwGroup(List<Tensor[]> slots) {
        return new AdamwGroup.PerTensor(this, slots);
    }

    // ------------------------------------------------------------------ SparseLoRA: selection and slicing

    /** out[i,:] = src[idx[i],:]. out (k,C), src (R,C), idx (k) I32. Weight rows and token rows alike. */
    void gatherRows(Tensor out, Tensor src, Tensor idx);

    /** out[idx[i],:] (+)= src[i,:]; rows not named are left alone. out (R,C), src (k,C). */
    void scatterRows(Tensor out, Tensor src, Tensor idx, boolean accumulate);

    /** out[:,i] = src[:,idx[i]]. out (R,k), src (R,C). */
    void gatherCols(Tensor out, Tensor src, Tensor idx);

    /** out[:,idx[i]] (+)= src[:,i]; columns not named are left alone. out (R,C), src (R,k). */
    void scatterCols(Tensor out, Tensor src, Tensor idx, boolean accumulate);

    /**
     * out[i,j] = src[rowIdx[i], colIdx[j]]: a block of a matrix in one pass (the sparse tokens' kept
     * channels). out (k,m), src (R,C). Default: gatherRows into a temporary, then gatherCols.
     */
    default void gatherRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        try (Tensor t = empty(src.dtype(), (int) rowIdx.numel(), src.dim(1))) {
            gatherRows(t, src, rowIdx);
            gatherCols(out, t, colIdx);
        }
    }

    /**
     * Row rowIdx[i] of out becomes src[i,:] placed at the columns colIdx and 0 elsewhere; rows not
     * named are left alone. out (R,C), src (k,m). Re-joins the sparse tokens' sliced outputs into the
     * full-width activation in one pass. Default: fill a temporary with 0, scatterCols, scatterRows.
     */
    default void scatterRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        try (Tensor t = empty(out.dtype(), src.dim(0), out.dim(1))) {
            fill(t, 0f);
            scatterCols(t, src, colIdx, false);
            scatterRows(out, t, rowIdx, false);
        }
    }

    /** out[c] = sqrt(Σ_r x[r,c]²). out (C) F32, x (R,C). */
    void columnNorms(Tensor out, Tensor x);

    /**
     * Mean over each sequence's non-padding tokens: out[b,:] = mean_{t ≥ keyStart[b]} x[b·T+t,:].
     * out (B,C), x (B·T, C), keyStart (B) I32.
     */
    void sequenceMean(Tensor out, Tensor x, Tensor keyStart, int batch, int seqLen);

    /**
     * The k largest scores' indices, written in ascending index order; ties go to the lower index,
     * so the choice is deterministic. idx (k) I32, scores (n) F32. Runs on the device (no host trip).
     */
    void topK(Tensor idx, Tensor scores, int k);

    /**
     * {@link #topK} on every row: idx (m,k) I32 row i = the k largest of scores (m,n) F32 row i, with
     * topK's order and tie rule. Lets a device select several score vectors in one launch. Default:
     * topK per row.
     */
    default void topKRows(Tensor idx, Tensor scores, int k) {
        int m = scores.dim(0), n = scores.dim(1);
        if (idx.numel() != (long) m * k)
            throw new IllegalArgumentException("topKRows: idx " + Tensor.describe(idx) + " for " + m + " rows of k = " + k);
        for (int i = 0; i < m; i++) topK(idx.view((long) i * k, k), scores.view((long) i * n, n), k);
    }

    /**
     * The SVD predictor's per-channel norms straight from its low-rank factors, several projections at
     * once: for each i, {@code outs[i][c] = ‖(ts[i]·qs[i])[:, c]‖} over the rows, where ts[i] (n,r) is
     * x·P of projection i and qs[i] (r,M_i) its second factor; outs[i] (M_i) F32. A device backend
     * computes this without writing the (n, M_i) estimates. Default: the estimate in the compute type
     * ({@link #matmul}), then {@link #columnNorms}.
     */
    default void lowRankColumnNorms(Tensor[] outs, Tensor[] ts, Tensor[] qs) {
        if (outs.length != ts.length || outs.length != qs.length)
            throw new IllegalArgumentException("lowRankColumnNorms: " + outs.length + " outputs, " + ts.length + " t, " + qs.length + " Q");
        for (int i = 0; i < outs.length; i++) {
            try (Tensor e = empty(computeType(), ts[i].dim(0), qs[i].dim(1))) {
                matmul(e, ts[i], false, qs[i], false, 1f, 0f);
                columnNorms(outs[i], e);
            }
        }
    }

    /**
     * The MLP form of {@link #lowRankColumnNorms}: {@code out[c] = ‖(silu(tg·qg) ⊙ (tu·qu))[:, c]‖} over
     * the rows — the score of intermediate channel c from the gate and up estimates. out (M) F32,
     * tg, tu (n,r), qg, qu (r,M). Default: both estimates in the compute type, {@link #swiglu},
     * {@link #columnNorms}.
     */
    default void lowRankSwigluColumnNorms(Tensor out, Tensor tg, Tensor qg, Tensor tu, Tensor qu) {
        int n = tg.dim(0), m = qg.dim(1);
        try (Tensor gate = empty(computeType(), n, m); Tensor up = empty(computeType(), n, m); Tensor act = empty(computeType(), n, m)) {
            matmul(gate, tg, false, qg, false, 1f, 0f);
            matmul(up, tu, false, qu, false, 1f, 0f);
            swiglu(act, gate, up);
            columnNorms(out, act);
        }
    }

    /**
     * GQA-correct Q/K channel scores (SparseLoRA "QK-norm"): for each KV channel (g, d),
     * {@code scores[g·D+d] = kNorms[g·D+d] · mean_{j<G} qNorms[(g·G+j)·D+d]}, G = Hq/Hkv query heads
     * per KV head (HF head-contiguous layout, query head h reads KV head h/G).
     * scores (Hkv·D) F32, qNorms (Hq·D) F32, kNorms (Hkv·D) F32. The default goes through the host;
     * a device backend may override it with a kernel.
     */
    default void kvChannelScores(Tensor scores, Tensor qNorms, Tensor kNorms, int kvHeads, int groupSize, int headDim) {
        float[] qn = toFloats(qNorms), kn = toFloats(kNorms);
        float[] s = new float[kvHeads * headDim];
        for (int g = 0; g < kvHeads; g++)
            for (int d = 0; d < headDim; d++) {
                double sum = 0;
                for (int j = 0; j < groupSize; j++) sum += qn[(g * groupSize + j) * headDim + d];
                s[g * headDim + d] = (float) (kn[g * headDim + d] * (sum / groupSize));
            }
        copyFromHost(scores, s);
    }

    /**
     * Expands kept KV channels to the query-side channels of their group: for each kept (g, d)
     * (ascending indices g·D+d in {@code kvIdx}), the channels (h, d) = h·D+d for every query head
     * h = g·G+j of group g. Output is ascending: out (k·G) I32, kvIdx (k) I32. Used for the kept Q
     * channels (from K's) and the kept o_proj input columns (from V's). The default goes through the
     * host; a device backend may override it.
     */
    default void expandGroupChannels(Tensor out, Tensor kvIdx, int groupSize, int headDim) {
        int[] kv = toInts(kvIdx);
        int[] o = new int[kv.length * groupSize];
        int n = 0;
        for (int start = 0; start < kv.length; ) {
            int g = kv[start] / headDim, end = start;
            while (end < kv.length && kv[end] / headDim == g) end++;
            for (int j = 0; j < groupSize; j++)
                for (int i = start; i < end; i++) o[n++] = (g * groupSize + j) * headDim + kv[i] % headDim;
            start = end;
        }
        copyFromHost(out, o);
    }

    /**
     * {@link #expandGroupChannels} on every row: out (m, k·G) row i = the expansion of kvIdx (m, k)
     * row i (each row ascending). The attention selection expands its kept K channels (to the kept Q
     * channels) and its kept V channels (to the kept o_proj input columns) together, which a device
     * does in one launch. Default: expandGroupChannels per row.
     */
    default void expandGroupChannelsRows(Tensor out, Tensor kvIdx, int groupSize, int headDim) {
        if (kvIdx.rank() != 2) throw new IllegalArgumentException("expandGroupChannelsRows: kvIdx must be (rows, k), got " + Tensor.describe(kvIdx));
        int m = kvIdx.dim(0), k = kvIdx.dim(1);
        if (out.numel() != (long) m * k * groupSize)
            throw new IllegalArgumentException("expandGroupChannelsRows: out " + Tensor.describe(out) + " for " + m + " rows of " + k + " × " + groupSize);
        for (int i = 0; i < m; i++)
            expandGroupChannels(out.view((long) i * k * groupSize, k * groupSize), kvIdx.view((long) i * k, k), groupSize, headDim);
    }

    /**
     * Pads an index set to a wider one of distinct indices: out[:k] = idx, out[k:] = the smallest
     * values of [0, n) that idx does not hold, ascending. out (kp) I32, idx (k) I32, k ≤ kp ≤ n, idx
     * distinct values in [0, n). The sparse MLP pads its kept-channel count to a multiple of 8 this way
     * (with zero weights on the extra channels) so the kept slices' GEMMs have 16-byte aligned
     * leading dimensions. The default goes through the host; a device backend overrides it.
     */
    default void padIndexSet(Tensor out, Tensor idx, int n) {
        int[] kept = toInts(idx);
        int kp = (int) out.numel(), k = kept.length;
        if (kp < k || kp > n) throw new IllegalArgumentException("padIndexSet: " + k + " indices cannot be padded to " + kp + " of [0, " + n + ")");
        boolean[] used = new boolean[n];
        int[] o = java.util.Arrays.copyOf(kept, kp);
        for (int c : kept) {
            if (c < 0 || c >= n || used[c]) throw new IllegalArgumentException("padIndexSet: index " + c + " is outside [0, " + n + ") or repeated");
            used[c] = true;
        }
        for (int c = 0, j = k; j < kp; c++) if (!used[c]) o[j++] = c;
        copyFromHost(out, o);
    }

    /**
     * t[:, col0:] = value for every row. t (R,C). Zeroes the padding columns of a kept-column weight
     * slice. Default: a filled temporary scattered into those columns.
     */
    default void fillCols(Tensor t, int col0, float value) {
        int C = t.dim(-1), R = (int) (t.numel() / Math.max(1, C)), w = C - col0;
        if (col0 < 0 || col0 > C) throw new IllegalArgumentException("fillCols: column " + col0 + " outside rows of " + C + " (" + Tensor.describe(t) + ")");
        if (w == 0 || R == 0) return;
        int[] cols = new int[w];
        for (int j = 0; j < w; j++) cols[j] = col0 + j;
        try (Tensor tmp = empty(t.dtype(), R, w); Tensor idx = fromInts(cols, w)) {
            fill(tmp, value);
            scatterCols(t.reshape(R, C), tmp, idx, false);
        }
    }
    /**
     * out[rowIdx[i], colIdx[j]] += src[i,j]: adds a sparse token group's kept-channel outputs into a
     * full-width activation, touching only those elements. out (R,C), src (n,k); rowIdx (n) and colIdx
     * (k) I32 index sets. Default: the named rows gathered, scatterCols with accumulation, scattered back.
     */
    default void scatterAddRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        int n = (int) rowIdx.numel(), C = out.dim(-1);
        if (n == 0) return;
        try (Tensor t = empty(out.dtype(), n, C)) {
            gatherRows(t, out, rowIdx);
            scatterCols(t, src, colIdx, true);
            scatterRows(out, t, rowIdx, false);
        }
    }

    /**
     * SwiGLU over the rows of a token split, with both groups' frozen outputs joined in the same pass.
     * For row r = addRows[i] (the dense tokens): g[r] += addG[i], u[r] += addU[i], h[r] = silu(g[r])·u[r],
     * hAdd[i] = h[r]. For r = plainRows[i] (the sparse tokens), at each kept column c = keptCols[j]:
     * g[r,c] += keptG[i,j], u[r,c] += keptU[i,j]; then h[r] = silu(g[r])·u[r] on every column and
     * hKept[i,j] = h[r,c]. g and u are written back as stored; rows named by neither set are left alone.
     * h, g, u (R,C); addG, addU, hAdd (nAdd,C), hAdd may be addG (each element is read before it is
     * written); keptG, keptU, hKept (nPlain,k). addRows, plainRows, keptCols (k) may be null (none);
     * hKept may be null (not gathered). Default: accumulating scatters and gathered swiglu per group.
     */
    default void swigluJoin(Tensor h, Tensor g, Tensor u, Tensor addG, Tensor addU, Tensor addRows, Tensor hAdd,
                            Tensor plainRows, Tensor keptG, Tensor keptU, Tensor keptCols, Tensor hKept) {
        int C = g.dim(-1);
        forEachJoinGroup(addRows, plainRows, (rows, pass) -> {
            int n = (int) rows.numel();
            try (Tensor tg = empty(g.dtype(), n, C); Tensor tu = empty(u.dtype(), n, C); Tensor th = empty(h.dtype(), n, C)) {
                gatherRows(tg, g, rows);
                gatherRows(tu, u, rows);
                if (pass == 0) {
                    axpy(tg, 1f, addG);
                    axpy(tu, 1f, addU);
                } else if (keptCols != null) {
                    scatterCols(tg, keptG, keptCols, true);
                    scatterCols(tu, keptU, keptCols, true);
                }
                scatterRows(g, tg, rows, false);
                scatterRows(u, tu, rows, false);
                swiglu(th, tg, tu);
                scatterRows(h, th, rows, false);
                if (pass == 0) copy(hAdd, th);
                else if (keptCols != null && hKept != null) gatherCols(hKept, th, keptCols);
            }
        });
    }

    /**
     * Backward of {@link #swigluJoin}, with both groups' frozen input gradients joined: for row
     * r = addRows[i], d = dh[r] + addDh[i]; for r = plainRows[i], d = dh[r] plus keptDh[i,j] at each
     * kept column keptCols[j]; then (dg[r], du[r]) = swigluBackward(d, g[r], u[r]), with dgAdd[i] = dg[r],
     * duAdd[i] = du[r] for the add rows and dgKept[i,j] = dg[r,c], duKept[i,j] = du[r,c] at the kept
     * columns of the plain rows (gathered for the frozen GEMMs). dh is only read. dg, du, dh, g, u
     * (R,C); addDh, dgAdd, duAdd (nAdd,C); keptDh, dgKept, duKept (nPlain,k); none aliasing another.
     * keptDh and dgKept/duKept may be null (nothing added / nothing gathered). Default: gathered rows
     * per group.
     */
    default void swigluBackwardJoin(Tensor dg, Tensor du, Tensor dh, Tensor g, Tensor u, Tensor addDh, Tensor addRows,
                                    Tensor dgAdd, Tensor duAdd, Tensor plainRows, Tensor keptDh, Tensor keptCols,
                                    Tensor dgKept, Tensor duKept) {
        int C = g.dim(-1);
        forEachJoinGroup(addRows, plainRows, (rows, pass) -> {
            int n = (int) rows.numel();
            try (Tensor td = empty(dh.dtype(), n, C); Tensor tg = empty(g.dtype(), n, C); Tensor tu = empty(u.dtype(), n, C);
                 Tensor tdg = empty(dg.dtype(), n, C); Tensor tdu = empty(du.dtype(), n, C)) {
                gatherRows(td, dh, rows);
                if (pass == 0) axpy(td, 1f, addDh);
                else if (keptCols != null && keptDh != null) scatterCols(td, keptDh, keptCols, true);
                gatherRows(tg, g, rows);
                gatherRows(tu, u, rows);
                swigluBackward(tdg, tdu, td, tg, tu);
                scatterRows(dg, tdg, rows, false);
                scatterRows(du, tdu, rows, false);
                if (pass == 0) {
                    copy(dgAdd, tdg);
                    copy(duAdd, tdu);
                } else if (keptCols != null && dgKept != null) {
                    gatherCols(dgKept, tdg, keptCols);
                    gatherCols(duKept, tdu, keptCols);
                }
            }
        });
    }

    /**
     * The two row groups of a joined swiglu default, in order: group.accept(addRows, 0), then
     * group.accept(plainRows, 1), each only when its set is present and non-empty.
     */
    private static void forEachJoinGroup(Tensor addRows, Tensor plainRows, ObjIntConsumer<Tensor> group) {
        for (int pass = 0; pass < 2; pass++) {
            Tensor rows = pass == 0 ? addRows : plainRows;
            if (rows != null && rows.numel() > 0) group.accept(rows, pass);
        }
    }
}
