package org.sparselora.engine.backend;

import java.util.List;
import java.util.Optional;

/**
 * The operations a Llama-family training step needs on one device: memory, linear algebra, the
 * layers and the optimizer. The model ({@code org.sparselora.engine.model}) is written once against
 * this interface; {@code CpuBackend} (fp32, the reference and the truth) and {@code GpuBackend}
 * (bf16, JCuda PTX kernels + cuBLAS via FFM, in {@code cuda-kernels/}) implement it.
 *
 * <p>Two capabilities sit beside it, each its own interface: {@link SparseOps}, SparseLoRA's fused
 * selection and slicing operations ({@link #sparse()}), and {@link GraphCapture}, recording a run of
 * ops once and replaying it ({@link #graphCapture()}). A dense model needs neither.
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

    // ------------------------------------------------------------------ capabilities

    /**
     * This backend's SparseLoRA operations. Asked once by whoever runs a sparse step (the model when
     * a plan is given, the channel selection); a backend without them fails here, by name, rather
     * than half-way through a step.
     */
    default SparseOps sparse() {
        if (this instanceof SparseOps s) return s;
        throw new UnsupportedOperationException(name() + " has no SparseLoRA operations (SparseOps)");
    }

    /** This backend's graph recording, when it can record ops now; empty on the CPU, which runs every op at once. */
    default Optional<GraphCapture> graphCapture() {
        return this instanceof GraphCapture g && g.canCapture() ? Optional.of(g) : Optional.empty();
    }


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

    /**
     * dweight (C) F32 += Σ_n dout[n,:] ⊙ x[n,:]·rstd[n]: the norm weight's gradient (full-parameter
     * training), from the forward's input x (N,C), its rstd (N) F32 and the output gradient dout (N,C).
     * Summed per column in a fixed order, so the same inputs give the same bits.
     */
    void rmsNormWeightGrad(Tensor dweight, Tensor dout, Tensor x, Tensor rstd);

    /**
     * dtable (V,C) F32 += the lookup's gradient: row ids[n] gains dout[n,:] for every n (rows not
     * named are left alone). ids (N) I32, dout (N,C). Repeated ids add in the order of n, so the
     * result is deterministic (no atomics on a device).
     */
    void embeddingBackward(Tensor dtable, Tensor dout, Tensor ids);

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

    // ------------------------------------------------------------------ token rows

    /** out[i,:] = src[idx[i],:]. out (k,C), src (R,C), idx (k) I32. Weight rows and token rows alike. */
    void gatherRows(Tensor out, Tensor src, Tensor idx);

    /** out[idx[i],:] (+)= src[i,:]; rows not named are left alone. out (R,C), src (k,C). */
    void scatterRows(Tensor out, Tensor src, Tensor idx, boolean accumulate);

    // ---- NF4 (QLoRA) frozen weights: see Nf4 for the format; the defaults run Nf4's host reference

    /**
     * out = NF4 dequantization of a whole tensor: out (numel) in its dtype; packed (⌈numel/8⌉) I32,
     * eight 4-bit code indices per int; absmax (⌈numel/64⌉) F32, one per block of 64 elements.
     */
    default void dequantizeNf4(Tensor out, Tensor packed, Tensor absmax) {
        copyFromHost(out, Nf4.dequantize(new Nf4.Quantized(toInts(packed), toFloats(absmax), (int) out.numel())));
    }

    /** out (k, cols) = rows {@code rows} (k) I32 of the NF4 (R, cols) matrix: the kept output channels' slice. */
    default void dequantizeNf4Rows(Tensor out, Tensor packed, Tensor absmax, Tensor rows, int cols) {
        int[] packedH = toInts(packed);
        Nf4.Quantized q = new Nf4.Quantized(packedH, toFloats(absmax), packedH.length * 8);
        copyFromHost(out, Nf4.dequantizeRows(q, cols, toInts(rows)));
    }

    /** out (R, k) = columns {@code cols} (k) I32 of the NF4 (R, C) matrix of numel R·C: the kept input channels' slice. */
    default void dequantizeNf4Cols(Tensor out, Tensor packed, Tensor absmax, Tensor cols, int C) {
        int[] colsH = toInts(cols);
        int R = out.dim(0);
        Nf4.Quantized q = new Nf4.Quantized(toInts(packed), toFloats(absmax), R * C);
        copyFromHost(out, Nf4.dequantizeCols(q, C, colsH));
    }
}
