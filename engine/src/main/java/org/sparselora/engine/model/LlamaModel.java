package org.sparselora.engine.model;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.sparse.LayerSelector;
import org.sparselora.engine.sparse.SparsePlan;
import org.sparselora.engine.train.Batch;

/**
 * A Llama-family decoder (Llama 2/3.x, Mistral, Qwen2) with LoRA, written once against
 * {@link Backend}, llm.c style: {@link #forward} runs the layers and stashes what {@link #backward}
 * needs; the head and cross-entropy run chunk by chunk over the output tokens only (never more than
 * a chunk × V of logits), computing dlogits and the head's backward inside the same chunk. Only the
 * LoRA parameters get gradients (summed over output tokens, accumulated into the adapter's buffers);
 * frozen weights are read-only and have no gradient buffers; the embedding gets no gradient.
 *
 * <p>SparseLoRA: with a {@link SparsePlan}, each frozen projection that has a kept-index set runs on
 * the plan's sparse tokens as a dense GEMM on the gathered weight slice (rows of W for q/k/v/gate/up,
 * columns of W — and of the input — for o/down), its outputs scattered (pruned frozen outputs are 0);
 * the plan's dense tokens run on the whole weight; the two groups are re-joined in place. The LoRA
 * branch is always dense on every channel and token. Weight slices are gathered once per forward and
 * reused by the backward. Backward through the slices follows {@link SparsePlan.FrozenGrad}.
 * When gate/up/down carry no LoRA (the reference default targets q,k,v,o) the sparse tokens' MLP
 * runs compact, at the kept intermediate width from end to end ({@link #mlpForwardCompact}); the
 * sparse rows are re-joined with fused block ops ({@link Backend#scatterRowsCols},
 * {@link Backend#gatherRowsCols}) and q/k/v's input gradients are summed before one scatter.
 * When gate/up/down do carry LoRA (all seven targets), g, u and h stay at the full intermediate width
 * and the MLP joins the token groups' frozen outputs into LoRA's ({@link #mlpForwardJoined}: LoRA
 * written first, one swiglu pass that adds the frozen rows and kept channels). The MLP's kept set is
 * padded to a multiple of 8 channels with zero-weight channels ({@link #padMlpKept}), which keeps the
 * kept-slice GEMMs on cuBLAS's aligned kernels without changing any result.
 * When every sequence has its sparse and dense tokens at the same positions (each group is equally
 * spaced runs of rows, {@link RowBlocks}: the reference's timing batches, or every token sparse) the
 * frozen GEMMs read and write the activations in place ({@link Backend#matmulRowBlocks}) and no token
 * row is gathered or scattered; per row these are the same GEMMs, so the results are the same bits.
 * With a {@link LayerSelector} the plan's layer entries are filled during the forward, each right
 * after the norm whose output the selection reads (SparseLoRA selects from the layer's own input),
 * and that layer's slices are gathered then.
 *
 * <p>LoRA: every GEMM reads the adapter's compute-type copies of A and B. Projections that read the
 * same input and share a fused A ({@link LoraAdapter.Group}: q,k,v on xn1, gate,up on xn2; dropout
 * 0) run their x·Aᵀ as one GEMM (Uᵀ = A_g·xᵀ) and their dA and dx terms as one GEMM each
 * ({@link #loraGroupForward}, {@link #loraGroupBackward}); the others run per projection.
 *
 * <p>A training step is split into its host part ({@link #prepareStep}: checks, uploads of the batch,
 * the token split and the selector's inputs into buffers the model keeps, shape buckets) and its
 * device part ({@link #queueForward}, {@link #backward}: no host reads), then {@link #stepLoss} waits
 * for the loss; so the device part can be recorded once per {@link StepKey} and replayed as a CUDA
 * graph ({@code LoraTrainer}). {@link #bufferEpoch()} changes whenever a buffer that outlives a step
 * is made or freed, which makes recordings stale.
 *
 * <p>Activation buffers are allocated once per batch shape and reused across steps; the stash keeps
 * per layer what the backward reads, no more: xn2 only for gate/up's LoRA and h only for down's
 * LoRA, otherwise one buffer serves every layer (see {@code Acts.bindStash}). {@link #close()} gives
 * them back. Not thread-safe: one model instance per worker thread.
 */
public final class LlamaModel implements AutoCloseable {

    private final Backend be;
    private final LlamaWeights w;
    private final LlamaConfig c;
    private final Tensor ropeCos, ropeSin; // (maxPos, D/2) F32
    private final int ropeMaxPos;
    private final float attnScale;
    /** Upper bound on logits floats per cross-entropy chunk. */
    private int logitsChunkElems = 1 << 21;

    private Acts acts;
    private boolean closed;
    /** Bumped whenever a buffer that outlives a step is made or given back: a recorded step is valid only while it is unchanged. */
    private long bufferEpoch;

    /** Whether the sparse MLP pads its kept channels to a multiple of 8 ({@link #padMlpKept}); tests turn it off to compare. */
    boolean padMlp = true;
    /** Whether the full-width sparse MLP may take the joined path ({@link #joinedLoraMlp}); tests turn it off to compare. */
    boolean joinMlp = true;
    /** Layers whose MLP took the joined path in the last forward (tests check which path ran). */
    int joinedMlpLayers;
    /** Test hook on the frozen outputs of sparse tokens (shapes at {@link FrozenSparseHook}); null in normal use. */
    FrozenSparseHook frozenHook;

    /**
     * Sees (and may replace) the frozen sliced outputs of the sparse tokens before they are re-joined:
     * (n_s, k) for the output-sliced projections (q/k/v/gate/up), (n_s, out) for o/down.
     */
    interface FrozenSparseHook { void apply(int layer, Projection p, Tensor ys); }
    // per-forward state read by backward
    private LoraAdapter curLora;
    private SparsePlan curPlan;
    private LayerSelector curSelector;
    private long curSeed;
    private boolean curTraining; // LoRA dropout is active only in training forwards
    private boolean haveStash;
    // per-forward sparse token split
    private Tensor sIdx, dIdx;
    private int nS, nD;
    // the projection input whose sparse/dense token rows sit in Acts.xsShared/xdShared (q, k, v read
    // the same normed input, as do gate and up: gather once); reset by every forward
    private Tensor gatheredFrom;
    // gathered weight slices, [layer][projection]; buffers reused when k repeats
    private final Tensor[][] slices, biasSlices;
    // per layer, the kept MLP channels the MLP runs on (mlpIdx) and the plan's set they came from
    // (mlpSrc): the plan's set padded to a multiple of 8 channels (see padMlpKept), or the set itself
    private final Tensor[] mlpIdx, mlpSrc, mlpPadBuf;
    // the sparse / dense token group as equally spaced row blocks of the activations (null: gathered
    // and scattered); set per forward, read by the backward. dBlocks is only set with sBlocks.
    private RowBlocks sBlocks, dBlocks;
    private RowBlockMode rowBlockMode = RowBlockMode.fromProperty();

    /**
     * Which token groups run their frozen GEMMs on row blocks in place when their layout allows
     * (system property {@code sparselora.rowBlocks}: {@code contiguous}, the default — only a group
     * that is one contiguous run of rows, e.g. every token sparse or a single sequence, so its GEMMs are
     * plain GEMMs on row views and nothing is gathered —, {@code off}, {@code sparse} or {@code all}).
     * Every mode gives the same bits. Measured on the H200 (8B, 8×512, math10k config,
     * q,k,v,o, 2026-11-29): the gathered path 126.8 ms/step, {@code sparse} 131.8, {@code all} 133.4 —
     * cuBLAS's strided-batched GEMMs over 8 blocks of 384 rows against narrow kept-channel slices run
     * slower than one GEMM over the 3072 gathered rows by more than the gathers cost, so several
     * blocks per group are used only when asked for.
     */
    public enum RowBlockMode {
        OFF, CONTIGUOUS, SPARSE, ALL;

        static RowBlockMode fromProperty() {
            String v = System.getProperty("sparselora.rowBlocks", "contiguous");
            return switch (v) {
                case "off" -> OFF;
                case "contiguous" -> CONTIGUOUS;
                case "sparse" -> SPARSE;
                case "all" -> ALL;
                default -> throw new IllegalArgumentException("system property sparselora.rowBlocks must be contiguous, off, sparse or all, not '" + v + "'");
            };
        }
    }

    public void setRowBlockMode(RowBlockMode mode) { this.rowBlockMode = java.util.Objects.requireNonNull(mode); }

    public RowBlockMode rowBlockMode() { return rowBlockMode; }

    /** Whether the last forward ran its sparse token group as row blocks (GEMMs in place, no token gathers). */
    public boolean usedRowBlocks() { return sBlocks != null; }

    /** Whether the last forward ran its dense token group as row blocks too. */
    public boolean usedDenseRowBlocks() { return dBlocks != null; }

    /**
     * A token group that is {@code blocks} runs of {@code len} consecutive rows, run j starting at row
     * {@code off + j·stride}: the same positions in every sequence (stride T), or one run. Frozen GEMMs
     * on such a group read and write the activations in place ({@link Backend#matmulRowBlocks}).
     */
    record RowBlocks(int blocks, int stride, int off, int len) {
        /** The layout of the ascending rows idx, or null when they are not equally spaced runs of one length. */
        static RowBlocks of(int[] idx, int seqLen) {
            int n = idx.length;
            if (n == 0) return null;
            int len = 1;
            while (len < n && idx[len] == idx[0] + len) len++;
            if (len == n) return new RowBlocks(1, n, idx[0], n);
            if (n % len != 0 || len > seqLen) return null;
            for (int i = 0; i < n; i++)
                if (idx[i] != idx[0] + (i / len) * seqLen + i % len) return null;
            return new RowBlocks(n / len, seqLen, idx[0], len);
        }
    }

    public LlamaModel(Backend be, LlamaWeights w) { this(be, w, Math.min(w.config.maxPositions(), 16384)); }

    public LlamaModel(Backend be, LlamaWeights w, int ropeMaxPos) {
        this.be = be;
        this.w = w;
        this.c = w.config;
        this.ropeMaxPos = ropeMaxPos;
        RopeTables rt = new RopeTables(c, ropeMaxPos);
        this.ropeCos = be.fromFloats(rt.cos, DType.F32, ropeMaxPos, rt.half);
        this.ropeSin = be.fromFloats(rt.sin, DType.F32, ropeMaxPos, rt.half);
        this.attnScale = (float) (1.0 / Math.sqrt(c.headDim()));
        // On a device backend a chunk of a few rows would re-read the whole (V, C) head per chunk
        // (an M=16 GEMM is bound by that read): take ~1k rows at a time there. The CPU keeps small
        // chunks (memory).
        if (be.computeType() != DType.F32) this.logitsChunkElems = 1 << 27;
        int np = Projection.values().length;
        this.slices = new Tensor[c.numLayers()][np];
        this.biasSlices = new Tensor[c.numLayers()][np];
        this.mlpIdx = new Tensor[c.numLayers()];
        this.mlpSrc = new Tensor[c.numLayers()];
        this.mlpPadBuf = new Tensor[c.numLayers()];
    }

    public LlamaConfig config() { return c; }

    public LlamaWeights weights() { return w; }

    public Backend backend() { return be; }

    /**
     * Gives the model's own device memory back: the activation buffers, the gathered weight slices and
     * the RoPE tables (the weights and adapters belong to their callers). A model that is dropped
     * without this keeps its buffers in the backend's pool for good (tensors have no finalizer).
     */
    @Override
    public void close() {
        if (closed) return;
        closed = true;
        bufferEpoch++;
        if (acts != null) acts.close();
        acts = null;
        haveStash = false;
        for (Tensor[] ts : concat(concat(slices, biasSlices), new Tensor[][] {mlpPadBuf}))
            for (int i = 0; i < ts.length; i++) {
                if (ts[i] != null) ts[i].close();
                ts[i] = null;
            }
        Arrays.fill(mlpIdx, null);
        Arrays.fill(mlpSrc, null);
        ropeCos.close();
        ropeSin.close();
    }

    private static Tensor[][] concat(Tensor[][] x, Tensor[][] y) {
        Tensor[][] r = Arrays.copyOf(x, x.length + y.length);
        System.arraycopy(y, 0, r, x.length, y.length);
        return r;
    }

    /** Caps the logits held at once by the chunked cross-entropy (tests use it to force several chunks). */
    public void setLogitsChunkElems(int elems) { this.logitsChunkElems = Math.max(1, elems); }

    // ------------------------------------------------------------------ activations

    /** Every buffer of one batch shape. Names follow the forward: resIn → xn1 → q,k,v → att → resMid → xn2 → g,u,h. */
    private final class Acts {
        final int B, T, N, maxW;
        final Tensor tokens, positions, keyStart;            // (N) (N) (B) I32
        final Tensor[] resIn, resMid, xn1, xn2, rstd1, rstd2; // (N,C) / (N)
        final Tensor[] q, k, v, att, lse;                     // (N,Hq·D) (N,Hkv·D) (N,Hkv·D) (N,Hq·D) (B,Hq,T)
        final Tensor[] g, u, h;                               // (N,I); h[l] and xn2[l] bound per layer by bindStash
        final Tensor[] xn2Own, hOwn;                          // per-layer stashes, made when a layer's LoRA needs them
        Tensor xn2Shared, hShared;                            // the one buffer of layers that need no stash
        final Tensor[][] loraU;                               // [layer][proj] (N,r) or null
        final Tensor[][] loraUt;                              // [layer][group: 0 q/k/v, 1 gate/up] (k·r,N) of a fused group, or null
        final Tensor resOut, xf, rstdf;                       // (N,C) (N,C) (N)
        final Tensor tmpC, dres, dxn, dq, dk, dv, datt, dh, dg, du, dxf; // gradients and a (N,C) temp
        final Tensor s1, s2, s3;                              // flat scratch, N·maxW each
        final Tensor xsShared, xdShared;                      // token-split rows of one projection input, shared by q/k/v and gate/up
        final Tensor ones;                                    // (N,1) for bias adds
        final Tensor losses;                                  // (N) F32
        final Tensor outIdx, outTargets;                      // (N) I32 (first nO used)
        final Tensor sTok, dTok, rows;                        // (N) I32: the step's sparse / dense token split and non-padding rows (first n used)
        Tensor logits;                                        // (chunk, V)
        Tensor dLoraU;                                        // (N, rmax)

        Acts(int B, int T) {
            bufferEpoch++;
            this.B = B; this.T = T; this.N = B * T;
            int L = c.numLayers(), C = c.hiddenSize(), I = c.intermediateSize(), qd = c.qDim(), kd = c.kvDim();
            DType dt = be.computeType();
            this.maxW = Math.max(Math.max(C, I), Math.max(qd, kd));
            tokens = be.empty(DType.I32, N); positions = be.empty(DType.I32, N); keyStart = be.empty(DType.I32, B);
            resIn = new Tensor[L]; resMid = new Tensor[L]; xn1 = new Tensor[L]; xn2 = new Tensor[L];
            rstd1 = new Tensor[L]; rstd2 = new Tensor[L];
            q = new Tensor[L]; k = new Tensor[L]; v = new Tensor[L]; att = new Tensor[L]; lse = new Tensor[L];
            g = new Tensor[L]; u = new Tensor[L]; h = new Tensor[L];
            xn2Own = new Tensor[L]; hOwn = new Tensor[L];
            loraU = new Tensor[L][Projection.values().length];
            loraUt = new Tensor[L][2];
            for (int l = 0; l < L; l++) {
                resIn[l] = be.empty(dt, N, C); resMid[l] = be.empty(dt, N, C);
                xn1[l] = be.empty(dt, N, C);
                rstd1[l] = be.empty(DType.F32, N); rstd2[l] = be.empty(DType.F32, N);
                q[l] = be.empty(dt, N, qd); k[l] = be.empty(dt, N, kd); v[l] = be.empty(dt, N, kd);
                att[l] = be.empty(dt, N, qd); lse[l] = be.empty(DType.F32, B, c.numHeads(), T);
                g[l] = be.empty(dt, N, I); u[l] = be.empty(dt, N, I);
            }
            resOut = be.empty(dt, N, C); xf = be.empty(dt, N, C); rstdf = be.empty(DType.F32, N);
            tmpC = be.empty(dt, N, C); dres = be.empty(dt, N, C); dxn = be.empty(dt, N, C); dxf = be.empty(dt, N, C);
            dq = be.empty(dt, N, qd); dk = be.empty(dt, N, kd); dv = be.empty(dt, N, kd); datt = be.empty(dt, N, qd);
            dh = be.empty(dt, N, I); dg = be.empty(dt, N, I); du = be.empty(dt, N, I);
            s1 = be.empty(dt, N * maxW); s2 = be.empty(dt, N * maxW); s3 = be.empty(dt, N * maxW);
            xsShared = be.empty(dt, N * Math.max(C, qd)); xdShared = be.empty(dt, N * Math.max(C, qd));
            ones = be.empty(dt, N, 1);
            be.fill(ones, 1f);
            losses = be.empty(DType.F32, N);
            outIdx = be.empty(DType.I32, N); outTargets = be.empty(DType.I32, N);
            sTok = be.empty(DType.I32, N); dTok = be.empty(DType.I32, N); rows = be.empty(DType.I32, N);
        }

        /**
         * Points xn2[l] and h[l] at a per-layer stash only when the backward reads them: xn2 is read
         * only by gate/up's LoRA (frozen gate/up need just W for dx) and h only by down's LoRA
         * (swiglu's backward reads g and u). Otherwise layer l writes a buffer shared by every layer,
         * so q,k,v,o-only training keeps no (N,I) h and no (N,C) xn2 per layer — PEFT keeps the same
         * set (g, u and, with down adapted, h). Buffers are made on first use and kept per shape.
         */
        void bindStash(int l, LoraAdapter lora, boolean training) {
            int C = c.hiddenSize(), I = c.intermediateSize();
            DType dt = be.computeType();
            boolean keepX = training && lora != null && (lora.get(l, Projection.GATE) != null || lora.get(l, Projection.UP) != null);
            boolean keepH = training && lora != null && lora.get(l, Projection.DOWN) != null;
            if (keepX) { if (xn2Own[l] == null) xn2Own[l] = kept(dt, N, C); xn2[l] = xn2Own[l]; }
            else { if (xn2Shared == null) xn2Shared = kept(dt, N, C); xn2[l] = xn2Shared; }
            if (keepH) { if (hOwn[l] == null) hOwn[l] = kept(dt, N, I); h[l] = hOwn[l]; }
            else { if (hShared == null) hShared = kept(dt, N, I); h[l] = hShared; }
        }

        /** Gives every buffer back to the backend (views of them must not be used afterwards). */
        void close() {
            bufferEpoch++;
            java.util.List<Tensor> all = new java.util.ArrayList<>(java.util.List.of(tokens, positions, keyStart, resOut, xf, rstdf,
                    tmpC, dres, dxn, dq, dk, dv, datt, dh, dg, du, dxf, s1, s2, s3, xsShared, xdShared, ones, losses, outIdx, outTargets,
                    sTok, dTok, rows));
            for (Tensor[] ts : new Tensor[][] {resIn, resMid, xn1, rstd1, rstd2, q, k, v, att, lse, g, u, xn2Own, hOwn}) all.addAll(java.util.Arrays.asList(ts));
            for (Tensor[] ts : loraU) all.addAll(java.util.Arrays.asList(ts));
            for (Tensor[] ts : loraUt) all.addAll(java.util.Arrays.asList(ts));
            all.addAll(java.util.Arrays.asList(xn2Shared, hShared, logits, dLoraU));
            for (Tensor t : all) if (t != null) t.close();
        }

        Tensor loraU(int l, Projection p, int r) {
            Tensor t = loraU[l][p.ordinal()];
            if (t == null || t.dim(1) != r) {
                if (t != null) t.close();
                loraU[l][p.ordinal()] = t = kept(be.computeType(), N, r);
            }
            return t;
        }

        /** The fused group's stash Uᵀ (rows, N) of layer l; slot 0 q/k/v, 1 gate/up. */
        Tensor loraUt(int l, int slot, int rows) {
            Tensor t = loraUt[l][slot];
            if (t == null || t.dim(0) != rows) {
                if (t != null) t.close();
                loraUt[l][slot] = t = kept(be.computeType(), rows, N);
            }
            return t;
        }

        /** dUᵀ (rows, N) of a fused group, in the same buffer as {@link #dLoraU}. */
        Tensor dLoraUt(int rows) {
            growDLoraU(rows);
            return dLoraU.view(0, rows, N);
        }

        Tensor dLoraU(int r) {
            growDLoraU(r);
            return dLoraU.view(0, N, r);
        }

        private void growDLoraU(int cols) {
            if (dLoraU != null && dLoraU.numel() >= (long) N * cols) return;
            if (dLoraU != null) dLoraU.close();
            dLoraU = kept(be.computeType(), N * cols);
        }

        Tensor logits(int rows) {
            if (logits == null || logits.dim(0) < rows) {
                if (logits != null) logits.close();
                logits = kept(be.computeType(), rows, c.vocabSize());
            }
            return logits.view(0, rows, c.vocabSize());
        }
    }

    /** A buffer made after the activation set, kept across steps (a new one invalidates recorded steps). */
    private Tensor kept(DType dtype, int... shape) {
        bufferEpoch++;
        return be.empty(dtype, shape);
    }

    private Acts acts(int B, int T) {
        if (acts == null || acts.B != B || acts.T != T) {
            if (acts != null) acts.close(); // give the old set back before allocating the new one
            acts = null;
            acts = new Acts(B, T);
        }
        return acts;
    }

    // ------------------------------------------------------------------ forward

    /**
     * Forward pass of a training step: stashes activations and computes the loss and the head's
     * backward chunk by chunk (so {@link #backward()} can follow). Returns Σ cross-entropy over the
     * batch's output tokens (nats).
     *
     * @param lora        may be null (base model only)
     * @param plan        may be null (dense)
     * @param dropoutSeed seed of this step's LoRA dropout masks (unused when dropout is 0)
     */
    public double forward(Batch batch, LoraAdapter lora, SparsePlan plan, long dropoutSeed) {
        return forward(batch, lora, plan, null, dropoutSeed);
    }

    /** {@link #forward(Batch, LoraAdapter, SparsePlan, long)} with the plan's layers chosen in-flight by {@code selector} (may be null). */
    public double forward(Batch batch, LoraAdapter lora, SparsePlan plan, LayerSelector selector, long dropoutSeed) {
        prepareStep(batch, lora, plan, selector, dropoutSeed);
        queueForward();
        return stepLoss();
    }

    /**
     * What fixes the ops of a training step: two steps with equal keys, prepared while
     * {@link #bufferEpoch()} stayed the same, run the same ops with the same arguments on the same
     * tensors — only the contents of the step's inputs differ (tokens, positions, targets and the
     * token split, which {@link #prepareStep} uploads into buffers the model keeps). So a step can be
     * recorded once ({@link Backend#beginCapture()}) and replayed for every later step of its key.
     * Parts: batch shape, output rows, adapter, the token split's group sizes and row-block layout,
     * frozen-gradient mode, whether a selector fills the plan in flight and over how many non-padding
     * rows it scores, the index tensors of a plan
     * given complete (by identity), and the model's settings that shape the ops.
     */
    public record StepKey(List<Object> parts) {}

    /**
     * First half of a training step, the host's part: checks the batch, makes or reuses the
     * activation buffers, uploads the batch and the token split (its device copies stay in
     * model-owned buffers, so a recorded step reads them at fixed addresses) and binds the selector to
     * them. Then {@link #queueForward()} and {@link #backward()} queue the device work (no host
     * reads), and {@link #stepLoss()} waits for the loss. Returns the step's {@link StepKey}, or null
     * when the step cannot be recorded (LoRA dropout draws new masks from the step's seed; the test
     * hook sees intermediate tensors on the host).
     */
    public StepKey prepareStep(Batch batch, LoraAdapter lora, SparsePlan plan, LayerSelector selector, long dropoutSeed) {
        Acts a = prepare(batch, lora, plan, selector, dropoutSeed, true, outputRowBucket > 0);
        int[] rows = outputRows(batch.targets());
        int n = rows.length;
        int[] tg = new int[n];
        for (int i = 0; i < n; i++) tg[i] = batch.targets()[rows[i]];
        if (outputRowBucket > 0 && n > 0 && n % outputRowBucket != 0) {
            // pad the head's rows to the bucket with rows that carry no loss (target ignored: loss 0,
            // no gradient), distinct from the output rows, so batches whose output counts differ
            // a little run the same head and their steps share a recording
            int nb = Math.min(a.N, (n + outputRowBucket - 1) / outputRowBucket * outputRowBucket);
            boolean[] used = new boolean[a.N];
            for (int r : rows) used[r] = true;
            rows = Arrays.copyOf(rows, nb);
            tg = Arrays.copyOf(tg, nb);
            for (int r = 0, j = n; j < nb; r++)
                if (!used[r]) { rows[j] = r; tg[j++] = Batch.IGNORE; }
            n = nb;
        }
        if (n > 0) {
            be.copyFromHost(a.outIdx.view(0, n), rows);
            be.copyFromHost(a.outTargets.view(0, n), tg);
        }
        curOutputs = n;
        haveStash = false;
        boolean recordable = frozenHook == null && (lora == null || lora.config().dropout() == 0f);
        if (!recordable) return null;
        List<Object> parts = new ArrayList<>(List.of(a.B, a.T, n, lora == null ? "no-lora" : lora, nS, nD,
                String.valueOf(sBlocks), String.valueOf(dBlocks), selector != null, curRealRows, rowBlockMode, logitsChunkElems));
        if (plan != null) {
            parts.add(plan.frozenGrad());
            for (SparsePlan.LayerPlan lp : plan.layers())
                if (lp != null) parts.add(Arrays.asList(lp.mlp(), lp.q(), lp.k(), lp.v(), lp.o()));   // identity of given indices
                else parts.add("-");
        }
        return new StepKey(parts);
    }

    /** Queues the forward of the prepared step and the head's loss and backward (no host reads). */
    public void queueForward() {
        if (!prepared) throw new IllegalStateException("queueForward() needs prepareStep() first");
        prepared = false;
        runLayers(acts);
        headLossAndBackward(acts);
        haveStash = true;
    }

    /** Σ cross-entropy of the last step's output tokens: waits for the device (call after {@link #backward()} to wait once). */
    public double stepLoss() {
        if (curOutputs == 0) return 0;
        double sum = 0;
        for (float x : be.toFloats(acts.losses.view(0, curOutputs))) sum += x;
        return sum;
    }

    /**
     * Shape buckets for training steps of real data (0 = off), so steps whose batches differ a
     * little share one shape and one recording: the loss head's rows are padded up to a multiple of
     * {@code rows} with rows that carry no loss (an ignored target: loss 0, no gradient), and a
     * selector scores every row of its input with the padding rows zeroed
     * ({@link Backend#maskPaddingRows}) instead of gathering the non-padding rows, whose count
     * changes from batch to batch. Neither changes what a real token computes: padding never
     * reaches one (attention masks its keys) and gets no gradient; a selection's sums merely gain
     * exact zeros. (The planner's dense token group is bucketed by the planner.)
     */
    public void setShapeBucket(int rows) {
        if (rows < 0) throw new IllegalArgumentException("shape bucket must be ≥ 0, got " + rows);
        this.outputRowBucket = rows;
    }

    /** Changes whenever a buffer that outlives a step is made or freed; a recording is stale once it changed. */
    public long bufferEpoch() { return bufferEpoch; }

    /** Per-token losses (0 where the target is ignored) and, when asked, all logits. */
    public record Output(double lossSum, int outputTokens, float[] tokenLosses, float[] logits) {
        public double meanLoss() { return outputTokens == 0 ? 0 : lossSum / outputTokens; }
    }

    private int curOutputs;
    private int outputRowBucket;
    private int curRealRows;   // non-padding rows the selector scores (-1: no selector, -2: every row, padding zeroed): shapes its GEMMs
    private boolean maskPadding;
    private boolean prepared;

    /** Forward without gradients (scoring / evaluation). {@code logits} (N·V floats) only when asked. */
    public Output evaluate(Batch batch, LoraAdapter lora, SparsePlan plan, boolean wantLogits) {
        return evaluate(batch, lora, plan, null, wantLogits);
    }

    /** {@link #evaluate(Batch, LoraAdapter, SparsePlan, boolean)} with in-flight selection by {@code selector} (may be null). */
    public Output evaluate(Batch batch, LoraAdapter lora, SparsePlan plan, LayerSelector selector, boolean wantLogits) {
        Acts a = prepare(batch, lora, plan, selector, 0L, false, false);
        prepared = false;
        runLayers(a);
        haveStash = false;
        int N = a.N, V = c.vocabSize();
        int[] rows = wantLogits ? allRows(N) : outputRows(batch.targets());
        int n = rows.length;
        float[] tokenLosses = new float[N];
        float[] logits = wantLogits ? new float[N * V] : null;
        if (n > 0) {
            int[] tg = new int[n];
            for (int i = 0; i < n; i++) tg[i] = batch.targets()[rows[i]];
            Tensor idx = a.outIdx.view(0, n), tgt = a.outTargets.view(0, n);
            be.copyFromHost(idx, rows);
            be.copyFromHost(tgt, tg);
            Tensor xo = a.s1.view(0, n, c.hiddenSize());
            be.gatherRows(xo, a.xf, idx);
            int cs = chunkRows(n);
            for (int c0 = 0; c0 < n; c0 += cs) {
                int r = Math.min(cs, n - c0);
                Tensor lg = a.logits(cs).view(0, r, V);
                be.matmul(lg, xo.rows(c0, r), false, w.head, true, 1, 0);
                if (logits != null) System.arraycopy(be.toFloats(lg), 0, logits, c0 * V, r * V);
                be.crossEntropy(a.losses.view(c0, r), lg, lg, tgt.rows(c0, r), 1f);
            }
            float[] ls = be.toFloats(a.losses.view(0, n));
            for (int i = 0; i < n; i++) tokenLosses[rows[i]] = ls[i];
        }
        double sum = 0;
        for (int i = 0; i < N; i++) if (batch.targets()[i] != Batch.IGNORE) sum += tokenLosses[i];
        return new Output(sum, batch.outputTokenCount(), tokenLosses, logits);
    }

    private static int[] allRows(int n) {
        int[] r = new int[n];
        for (int i = 0; i < n; i++) r[i] = i;
        return r;
    }

    private static int[] outputRows(int[] targets) {
        int n = 0;
        for (int t : targets) if (t != Batch.IGNORE) n++;
        int[] r = new int[n];
        for (int i = 0, j = 0; i < targets.length; i++) if (targets[i] != Batch.IGNORE) r[j++] = i;
        return r;
    }

    private int chunkRows(int n) { return Math.max(1, Math.min(n, logitsChunkElems / c.vocabSize())); }

    /** The host's part of a forward: buffers, uploads, the token split and the selector's inputs. */
    private Acts prepare(Batch batch, LoraAdapter lora, SparsePlan plan, LayerSelector selector, long seed, boolean training, boolean bucketed) {
        if (lora != null && lora.modelConfig() != c && !lora.modelConfig().equals(c))
            throw new IllegalArgumentException("LoRA adapter was built for another model config");
        if (closed) throw new IllegalStateException("LlamaModel is closed");
        for (int p : batch.positions())
            if (p < 0 || p >= ropeMaxPos) throw new IllegalArgumentException("position " + p + " outside the RoPE table of " + ropeMaxPos);
        Acts a = acts(batch.batch(), batch.seqLen());
        curLora = lora;
        curPlan = plan;
        curSeed = seed;
        curTraining = training;
        curSelector = selector;
        haveStash = false;
        setupPlan(a, plan);
        be.copyFromHost(a.tokens, batch.tokens());
        be.copyFromHost(a.positions, batch.positions());
        be.copyFromHost(a.keyStart, batch.keyStart());
        maskPadding = bucketed && selector != null;
        if (maskPadding) {
            selector.bindInputs(a.keyStart, null);   // every row, padding zeroed before each selection
            curRealRows = -2;
        } else if (selector != null) {
            int[] real = org.sparselora.engine.sparse.TokenSplit.nonPaddingRows(batch);
            Tensor rows = null;
            if (real.length != a.N) {
                rows = a.rows.view(0, real.length);
                be.copyFromHost(rows, real);
            }
            selector.bindInputs(a.keyStart, rows);
            curRealRows = real.length;
        } else {
            curRealRows = -1;
        }
        prepared = true;
        return a;
    }

    /** The device part of a forward through the layers (no host reads: a training step may be recorded). */
    private void runLayers(Acts a) {
        LoraAdapter lora = curLora;
        LayerSelector selector = curSelector;
        boolean training = curTraining;
        if (curPlan != null && sIdx != null)   // the layers a plan brings complete: gather their weight slices once; backward reuses them
            for (int l = 0; l < c.numLayers(); l++) gatherSlices(l, Projection.values());
        int L = c.numLayers();
        float eps = c.rmsNormEps();
        be.embedding(a.resIn[0], a.tokens, w.embed);
        be.rmsNorm(a.xn1[0], a.rstd1[0], a.resIn[0], w.layers[0].attnNorm(), eps);
        for (int l = 0; l < L; l++) {
            LlamaWeights.Layer lw = w.layers[l];
            a.bindStash(l, lora, training);
            gatheredFrom = null;                      // xn2's buffer may be shared between layers: never reuse rows across layers
            if (selector != null && sIdx != null) {   // choose this layer's attention channels from its own input
                if (maskPadding) be.maskPaddingRows(a.xn1[l], a.keyStart, a.B, a.T);
                selector.attention(l, a.xn1[l]);
                gatherSlices(l, Projection.Q, Projection.K, Projection.V, Projection.O);
            }
            SparsePlan.LayerPlan lp = layerPlan(l);
            // attention: q, k, v from the normed input; RoPE; causal GQA attention; o
            projForward(a, a.q[l], a.xn1[l], l, Projection.Q, lp == null ? null : lp.q());
            projForward(a, a.k[l], a.xn1[l], l, Projection.K, lp == null ? null : lp.k());
            projForward(a, a.v[l], a.xn1[l], l, Projection.V, lp == null ? null : lp.v());
            loraGroupForward(a, l, fusedGroup(l, Projection.Q, Projection.K), a.xn1[l]);   // q/k/v's LoRA when fused
            be.ropeQK(a.q[l], a.k[l], a.positions, ropeCos, ropeSin, c.numHeads(), c.numKvHeads(), c.headDim(), false);
            if (c.hasSlidingWindow()) be.attention(a.att[l], a.lse[l], a.q[l], a.k[l], a.v[l], a.keyStart, a.B, a.T,
                    c.numHeads(), c.numKvHeads(), c.headDim(), attnScale, c.slidingWindow());
            else be.attention(a.att[l], a.lse[l], a.q[l], a.k[l], a.v[l], a.keyStart, a.B, a.T,
                    c.numHeads(), c.numKvHeads(), c.headDim(), attnScale);
            projForward(a, a.tmpC, a.att[l], l, Projection.O, lp == null ? null : lp.o());
            // residual add fused with the MLP's norm
            be.addRmsNormTo(a.resMid[l], a.resIn[l], a.xn2[l], a.rstd2[l], a.tmpC, lw.ffnNorm(), eps);
            // SwiGLU MLP
            if (selector != null && sIdx != null) {   // choose this layer's MLP channels from its own input
                selector.mlp(l, a.xn2[l]);
                gatherSlices(l, Projection.GATE, Projection.UP, Projection.DOWN);
                lp = layerPlan(l);
            }
            mlpForward(a, a.tmpC, l, lp);
            // residual add fused with the next layer's (or the final) norm
            boolean last = l == L - 1;
            Tensor next = last ? a.resOut : a.resIn[l + 1];
            be.addRmsNormTo(next, a.resMid[l], last ? a.xf : a.xn1[l + 1], last ? a.rstdf : a.rstd1[l + 1], a.tmpC,
                    last ? w.finalNorm : w.layers[l + 1].attnNorm(), eps);
        }
    }

    private SparsePlan.LayerPlan layerPlan(int l) {
        return curPlan == null || sIdx == null ? null : curPlan.layers()[l];
    }

    private void setupPlan(Acts a, SparsePlan plan) {
        gatheredFrom = null;
        sIdx = dIdx = null;
        sBlocks = dBlocks = null;
        nS = nD = 0;
        if (plan == null) return;
        if (plan.layers() == null || plan.layers().length != c.numLayers())
            throw new IllegalArgumentException("sparse plan has " + (plan.layers() == null ? 0 : plan.layers().length) + " layer entries, the model has " + c.numLayers());
        if (plan.sparseTokens() == null || plan.sparseTokens().numel() == 0) return; // nothing runs sparse
        nS = (int) plan.sparseTokens().numel();
        nD = plan.denseTokens() == null ? 0 : (int) plan.denseTokens().numel();
        if (nS + nD != a.N)
            throw new IllegalArgumentException("sparse plan splits " + nS + " sparse + " + nD + " dense tokens, the batch has " + a.N);
        // the split lives in the model's own buffers for the step: the same addresses every step
        sIdx = a.sTok.view(0, nS);
        be.copy(sIdx, plan.sparseTokens());
        dIdx = nD == 0 ? null : a.dTok.view(0, nD);
        if (dIdx != null) be.copy(dIdx, plan.denseTokens());
        // same positions in every sequence (or one run): GEMMs in place, no token gathers. Not with the
        // test hook, which sees each group's compact frozen outputs. Reading the index sets back waits
        // for the stream once per step, before any of its work is queued.
        if (rowBlockMode != RowBlockMode.OFF && frozenHook == null) {
            boolean oneRun = rowBlockMode == RowBlockMode.CONTIGUOUS;
            sBlocks = RowBlocks.of(be.toInts(sIdx), a.T);
            if (oneRun && sBlocks != null && sBlocks.blocks() != 1) sBlocks = null;
            if (sBlocks != null && nD > 0 && (rowBlockMode == RowBlockMode.ALL || oneRun)) {
                dBlocks = RowBlocks.of(be.toInts(dIdx), a.T);
                if (oneRun && dBlocks != null && dBlocks.blocks() != 1) dBlocks = null;
            }
        }
        // this step's weight slices are gathered by runLayers (with an in-flight selector, each layer's
        // right after its selection)
    }

    /** Gathers layer l's kept weight slices of the given projections (those with a kept-index set). */
    private void gatherSlices(int l, Projection... projections) {
        SparsePlan.LayerPlan lp = curPlan.layers()[l];
        boolean mlpPadded = false;
        for (Projection p : projections) {
            Tensor idx = lp == null ? null : keptIndex(lp, p);
            if (idx == null) continue;
            int k0 = (int) idx.numel();
            if (isMlp(p)) {                               // the MLP runs on its kept set padded to a multiple of 8
                if (!mlpPadded) padMlpKept(l, idx);
                mlpPadded = true;
                idx = mlpIdx[l];
            }
            int k = (int) idx.numel(), in = p.inDim(c), out = p.outDim(c);
            Tensor W = w.layers[l].weight(p);
            boolean rowsKept = outputSliced(p);
            int[] shape = rowsKept ? new int[] {k, in} : new int[] {out, k};
            Tensor s = slices[l][p.ordinal()];
            if (s == null || !Arrays.equals(s.shape(), shape)) {
                if (s != null) s.close(); // a new kept count: the old slice goes back to the pool
                slices[l][p.ordinal()] = s = kept(W.dtype(), shape);
            }
            if (rowsKept) be.gatherRows(s, W, idx); else be.gatherCols(s, W, idx);
            if (k > k0) {                                 // padding channels: zero weights, so their frozen outputs are 0
                if (rowsKept) be.fill(s.rows(k0, k - k0), 0f); else be.fillCols(s, k0, 0f);
            }
            Tensor bias = w.layers[l].bias(p);
            if (bias != null) {
                Tensor bs = biasSlices[l][p.ordinal()];
                if (bs == null || bs.numel() != k) {
                    if (bs != null) bs.close();
                    biasSlices[l][p.ordinal()] = bs = kept(bias.dtype(), k, 1);
                }
                be.gatherRows(bs, bias.reshape(out, 1), idx);
                if (k > k0) be.fill(bs.rows(k0, k - k0), 0f);
            }
        }
    }

    private static boolean isMlp(Projection p) { return p == Projection.GATE || p == Projection.UP || p == Projection.DOWN; }

    /** The MLP's kept count padded to a multiple of 8 channels (at most the intermediate width). */
    static int paddedMlpCount(int k, int intermediate) { return Math.min((k + 7) & ~7, intermediate); }

    /**
     * Sets layer l's MLP index set (mlpIdx[l]) for the plan's kept channels {@code kept}: the set
     * itself when its count is a multiple of 8, else the set padded with the lowest unkept channels
     * ({@link Backend#padIndexSet}). The slices then carry zero weights on the padding channels, so the
     * frozen outputs there are 0, exactly a pruned channel's, and every result is unchanged; what the
     * padding buys is alignment: kept-channel activations of width k are the leading dimension of the
     * slice GEMMs, and cuBLAS falls back to kernels ~10× slower when a bf16 leading dimension is not
     * a multiple of 8 (k = 143 at 8B, 0.99 sparsity: 3072×143×4096 GEMMs ran at 38 TFLOP/s on the H200).
     */
    private void padMlpKept(int l, Tensor kept) {
        int k = (int) kept.numel(), I = c.intermediateSize(), kp = padMlp ? paddedMlpCount(k, I) : k;
        mlpSrc[l] = kept;
        if (kp == k) {
            mlpIdx[l] = kept;
            return;
        }
        Tensor buf = mlpPadBuf[l];
        if (buf == null || buf.numel() != kp) {
            if (buf != null) buf.close();
            mlpPadBuf[l] = buf = kept(DType.I32, kp);
        }
        be.padIndexSet(buf, kept, I);
        mlpIdx[l] = buf;
    }

    /** The channels layer l's MLP runs on for the plan's kept set {@code kept} (null: dense). */
    private Tensor mlpKept(int l, Tensor kept) {
        if (kept == null) return null;
        if (mlpSrc[l] != kept) throw new IllegalStateException("layer " + l + ": the MLP's weight slices were not gathered for this plan");
        return mlpIdx[l];
    }

    private static Tensor keptIndex(SparsePlan.LayerPlan lp, Projection p) {
        return switch (p) {
            case Q -> lp.q(); case K -> lp.k(); case V -> lp.v(); case O -> lp.o();
            case GATE, UP, DOWN -> lp.mlp();
        };
    }

    /** q/k/v/gate/up keep output rows of W; o/down keep input columns. */
    private static boolean outputSliced(Projection p) { return p != Projection.O && p != Projection.DOWN; }

    private long dropSeed(int l, Projection p) {
        return curSeed * 0x9E3779B97F4A7C15L + l * 7919L + p.ordinal() * 104729L + 1;
    }

    /** y (N,out) = frozen(x) [+ bias] + s·(drop(x)·Aᵀ)·Bᵀ; x (N,in). idx null or no sparse tokens = dense. */
    private void projForward(Acts a, Tensor y, Tensor x, int l, Projection p, Tensor idx) {
        int N = a.N, in = p.inDim(c), out = p.outDim(c);
        Tensor W = w.layers[l].weight(p), bias = w.layers[l].bias(p);
        if (idx == null || sIdx == null) {
            be.matmul(y, x, false, W, true, 1, 0);
            if (bias != null) be.matmul(y, a.ones, false, bias.reshape(1, out), false, 1, 1);
        } else if (sBlocks != null) {
            projForwardBlocks(a, y, x, l, p, idx);
        } else {
            int k = (int) idx.numel();
            // q/k/v and gate/up read the same input: gather its token rows once. o/down read only the
            // kept columns of the sparse rows (one gatherRowsCols, nothing to share).
            boolean share = outputSliced(p) && in <= Math.max(c.hiddenSize(), c.qDim());
            boolean have = share && gatheredFrom == x;
            if (share && !have) gatheredFrom = x;
            if (nD > 0) {
                Tensor xd = share ? a.xdShared.view(0, nD, in) : a.s1.view(0, nD, in), yd = a.s2.view(0, nD, out);
                if (!have) be.gatherRows(xd, x, dIdx);
                be.matmul(yd, xd, false, W, true, 1, 0);
                if (bias != null) be.matmul(yd, a.ones.rows(0, nD), false, bias.reshape(1, out), false, 1, 1);
                be.scatterRows(y, yd, dIdx, false);
            }
            Tensor ws = slices[l][p.ordinal()];
            if (outputSliced(p)) {
                Tensor xs = share ? a.xsShared.view(0, nS, in) : a.s1.view(0, nS, in), yk = a.s3.view(0, nS, k);
                if (!have) be.gatherRows(xs, x, sIdx);
                be.matmul(yk, xs, false, ws, true, 1, 0);                                  // (n_s,k)
                if (bias != null) be.matmul(yk, a.ones.rows(0, nS), false, biasSlices[l][p.ordinal()].reshape(1, k), false, 1, 1);
                if (frozenHook != null) frozenHook.apply(l, p, yk);
                be.scatterRowsCols(y, yk, sIdx, idx);                                       // pruned outputs 0
            } else {
                Tensor xk = a.s3.view(0, nS, k), ys = a.s2.view(0, nS, out);
                be.gatherRowsCols(xk, x, sIdx, idx);                                        // (n_s,k)
                be.matmul(ys, xk, false, ws, true, 1, 0);
                if (frozenHook != null) frozenHook.apply(l, p, ys);
                be.scatterRows(y, ys, sIdx, false);
            }
        }
        LoraAdapter.Lora lo = curLora == null || curLora.group(l, p) != null ? null : curLora.get(l, p); // fused: loraGroupForward
        if (lo != null) {
            float pd = curTraining ? curLora.config().dropout() : 0f;
            Tensor xin = x;
            if (pd > 0f) {
                xin = a.s1.view(0, N, in);
                be.dropout(xin, x, pd, dropSeed(l, p));
            }
            Tensor U = a.loraU(l, p, lo.rank());
            be.matmul(U, xin, false, lo.ac(), true, 1, 0);
            be.matmul(y, U, false, lo.bc(), true, curLora.scaling(), 1);
        }
    }

    /**
     * The frozen part of {@link #projForward} when the sparse token group is row blocks: its GEMM reads
     * x's rows into the compact (n_s,k) output that one scatterRowsCols re-joins (q/k/v/gate/up), or
     * reads the gathered kept columns and writes y's rows in place (o/down). The dense group does the
     * same in place when it is row blocks too, else it is gathered (once for q/k/v) and scattered.
     * Per row the same GEMMs as the gather path.
     */
    private void projForwardBlocks(Acts a, Tensor y, Tensor x, int l, Projection p, Tensor idx) {
        int in = p.inDim(c), out = p.outDim(c), k = (int) idx.numel();
        Tensor W = w.layers[l].weight(p), bias = w.layers[l].bias(p), ws = slices[l][p.ordinal()];
        RowBlocks s = sBlocks, d = dBlocks;
        if (nD > 0 && d != null) {
            be.matmulRowBlocks(y, d.off, d.stride, x, d.off, d.stride, W, true, d.blocks, d.len, 1, 0);
            if (bias != null) be.matmulRowBlocks(y, d.off, d.stride, a.ones, 0, 0, bias.reshape(1, out), false, d.blocks, d.len, 1, 1);
        } else if (nD > 0) {
            boolean share = outputSliced(p) && in <= Math.max(c.hiddenSize(), c.qDim());
            Tensor xd = share ? a.xdShared.view(0, nD, in) : a.s1.view(0, nD, in), yd = a.s2.view(0, nD, out);
            if (!share || gatheredFrom != x) be.gatherRows(xd, x, dIdx);
            if (share) gatheredFrom = x;                  // q, k, v read the same rows: gather once
            be.matmul(yd, xd, false, W, true, 1, 0);
            if (bias != null) be.matmul(yd, a.ones.rows(0, nD), false, bias.reshape(1, out), false, 1, 1);
            be.scatterRows(y, yd, dIdx, false);
        }
        if (outputSliced(p)) {
            Tensor yk = a.s3.view(0, nS, k);
            be.matmulRowBlocks(yk, 0, s.len, x, s.off, s.stride, ws, true, s.blocks, s.len, 1, 0);        // (n_s,k)
            if (bias != null) be.matmul(yk, a.ones.rows(0, nS), false, biasSlices[l][p.ordinal()].reshape(1, k), false, 1, 1);
            be.scatterRowsCols(y, yk, sIdx, idx);                                                       // pruned outputs 0
        } else {
            Tensor xk = a.s3.view(0, nS, k);
            be.gatherRowsCols(xk, x, sIdx, idx);                                                        // (n_s,k)
            be.matmulRowBlocks(y, s.off, s.stride, xk, 0, s.len, ws, true, s.blocks, s.len, 1, 0);
        }
    }

    // ------------------------------------------------------------------ MLP

    /**
     * Layer l's SwiGLU MLP, y (N,C) = down(swiglu(gate(x), up(x))) (+ LoRA) of x = xn2[l], on the
     * plan's kept channels (padded, {@link #padMlpKept}) when lp has an MLP set: compact when no
     * MLP projection carries LoRA, else at the full intermediate width.
     */
    private void mlpForward(Acts a, Tensor y, int l, SparsePlan.LayerPlan lp) {
        if (l == 0) joinedMlpLayers = 0;
        Tensor mlp = lp == null ? null : mlpKept(l, lp.mlp());
        if (compactMlp(l, mlp)) {
            mlpForwardCompact(a, y, l, mlp);
            return;
        }
        if (joinedLoraMlp(l, mlp)) {
            joinedMlpLayers++;
            mlpForwardJoined(a, y, l, mlp);
            return;
        }
        projForward(a, a.g[l], a.xn2[l], l, Projection.GATE, mlp);
        projForward(a, a.u[l], a.xn2[l], l, Projection.UP, mlp);
        loraGroupForward(a, l, fusedGroup(l, Projection.GATE), a.xn2[l]);         // gate/up's LoRA when fused
        be.swiglu(a.h[l], a.g[l], a.u[l]);
        projForward(a, y, a.h[l], l, Projection.DOWN, mlp);
    }

    /** Backward of {@link #mlpForward}: dx (N,C) = ∂/∂xn2[l] (overwritten) from dy (N,C); LoRA gradients +=. */
    private void mlpBackward(Acts a, Tensor dx, Tensor dy, int l, SparsePlan.LayerPlan lp) {
        Tensor mlp = lp == null ? null : mlpKept(l, lp.mlp());
        if (compactMlp(l, mlp)) {
            mlpBackwardCompact(a, dx, dy, l, mlp);
            return;
        }
        if (joinedLoraMlp(l, mlp)) {
            mlpBackwardJoined(a, dx, dy, l, mlp);
            return;
        }
        projBackward(a, a.dh, false, dy, a.h[l], l, Projection.DOWN, mlp);
        be.swigluBackward(a.dg, a.du, a.dh, a.g[l], a.u[l]);
        projBackward(a, dx, false, a.dg, a.xn2[l], l, Projection.GATE, mlp);
        projBackward(a, dx, true, a.du, a.xn2[l], l, Projection.UP, mlp);
        loraGroupBackward(a, dx, l, fusedGroup(l, Projection.GATE), a.xn2[l]);
    }

    // ------------------------------------------------------------------ sparse MLP with LoRA (full width, joined)

    /**
     * Whether layer l's sparse MLP, which carries LoRA on gate/up/down (so g, u, h stay at the full
     * intermediate width on every token), runs the joined path: the token groups are gathered (not
     * row blocks), no MLP bias, no LoRA dropout in this forward. Decided from the forward's state, so
     * the backward takes the same path.
     */
    private boolean joinedLoraMlp(int l, Tensor mlp) {
        if (!joinMlp || mlp == null || sIdx == null || sBlocks != null || curLora == null) return false;
        if (curTraining && curLora.config().dropout() > 0f) return false;
        LlamaWeights.Layer lw = w.layers[l];
        for (Projection p : new Projection[] {Projection.GATE, Projection.UP, Projection.DOWN})
            if (lw.bias(p) != null) return false;
        return true;
    }

    /** y (N,out) = s·(x·Aᵀ)·Bᵀ of projection p, written (beta 0); 0 when p has no adapter. p must not be in a fused group. */
    private void loraWrite(Acts a, Tensor y, Tensor x, int l, Projection p) {
        LoraAdapter.Lora lo = curLora.get(l, p);
        if (lo == null) {
            be.fill(y, 0f);
            return;
        }
        Tensor U = a.loraU(l, p, lo.rank());
        be.matmul(U, x, false, lo.ac(), true, 1, 0);
        be.matmul(y, U, false, lo.bc(), true, curLora.scaling(), 0);
    }

    /**
     * The full-width sparse MLP's forward with the token groups joined into LoRA's outputs instead of
     * LoRA added onto scattered frozen outputs. g and u are first written by their LoRA GEMMs (on the
     * sparse tokens' pruned channels that is all they hold); then one pass ({@link Backend#swigluJoin})
     * adds the dense tokens' frozen rows and the sparse tokens' kept-channel frozen outputs, runs
     * swiglu on every row, and gathers what down's frozen GEMMs read (h's dense rows, and h at the
     * kept channels of the sparse rows). Per (n,I) activation that saves the full-width rows of
     * zeros the re-join wrote and the read-modify-write of LoRA's beta-1 add, the separate swiglu
     * pass and the gathers of h.
     * Scratch: s1/s2 hold the dense rows' (n_d,I) frozen g/u (then h) followed by the sparse rows'
     * (n_s,k) kept g/u; s3 the kept h; xsShared/xdShared the token rows of x, then of y.
     */
    private void mlpForwardJoined(Acts a, Tensor y, int l, Tensor idx) {
        int C = c.hiddenSize(), I = c.intermediateSize(), k = (int) idx.numel();
        long off = (long) nD * I;
        LlamaWeights.Layer lw = w.layers[l];
        Tensor x = a.xn2[l], g = a.g[l], u = a.u[l], h = a.h[l];
        // LoRA of gate and up, written
        LoraAdapter.Group grp = fusedGroup(l, Projection.GATE, Projection.UP);
        loraGroupForward(a, l, grp, x, 0f);
        for (Projection p : new Projection[] {Projection.GATE, Projection.UP})
            if (grp == null || !grp.members().contains(p)) loraWrite(a, p == Projection.GATE ? g : u, x, l, p);
        // frozen gate/up: dense tokens on the whole weights, sparse tokens on the kept slices
        Tensor gd = null, ud = null;
        if (nD > 0) {
            Tensor xd = a.xdShared.view(0, nD, C);
            be.gatherRows(xd, x, dIdx);
            gd = a.s1.view(0, nD, I);
            ud = a.s2.view(0, nD, I);
            be.matmul(gd, xd, false, lw.weight(Projection.GATE), true, 1, 0);
            be.matmul(ud, xd, false, lw.weight(Projection.UP), true, 1, 0);
        }
        Tensor xs = a.xsShared.view(0, nS, C);
        be.gatherRows(xs, x, sIdx);
        gatheredFrom = null;                                                         // xs/xd get y's rows below
        Tensor gk = a.s1.view(off, nS, k), uk = a.s2.view(off, nS, k);
        be.matmul(gk, xs, false, slices[l][Projection.GATE.ordinal()], true, 1, 0);  // (n_s,k)
        be.matmul(uk, xs, false, slices[l][Projection.UP.ordinal()], true, 1, 0);
        if (frozenHook != null) {
            frozenHook.apply(l, Projection.GATE, gk);
            frozenHook.apply(l, Projection.UP, uk);
        }
        // both groups joined, swiglu on every row; h's dense rows gathered into gd's place, its kept
        // channels of the sparse rows into hk
        Tensor hk = a.s3.view(0, nS, k);
        be.swigluJoin(h, g, u, gd, ud, nD > 0 ? dIdx : null, gd, sIdx, gk, uk, idx, hk);
        // down: dense tokens on the whole weight, sparse tokens on the kept columns; then its LoRA
        if (nD > 0) {
            Tensor yd = a.xdShared.view(0, nD, C);
            be.matmul(yd, gd, false, lw.weight(Projection.DOWN), true, 1, 0);
            be.scatterRows(y, yd, dIdx, false);
        }
        Tensor ys = a.xsShared.view(0, nS, C);
        be.matmul(ys, hk, false, slices[l][Projection.DOWN.ordinal()], true, 1, 0);  // (n_s,C), slice (C,k)
        if (frozenHook != null) frozenHook.apply(l, Projection.DOWN, ys);
        be.scatterRows(y, ys, sIdx, false);
        LoraAdapter.Lora lo = curLora.get(l, Projection.DOWN);
        if (lo != null) {
            Tensor U = a.loraU(l, Projection.DOWN, lo.rank());
            be.matmul(U, h, false, lo.ac(), true, 1, 0);
            be.matmul(y, U, false, lo.bc(), true, curLora.scaling(), 1);
        }
    }

    /**
     * Backward of {@link #mlpForwardJoined}: dx (N,C) = ∂/∂xn2[l] (overwritten), LoRA gradients +=.
     * down's LoRA writes dh first; one pass ({@link Backend#swigluBackwardJoin}) adds both groups'
     * frozen dh (dense rows whole, sparse rows at the kept channels), runs swiglu's backward on every
     * row and gathers what gate/up's frozen GEMMs read (dg/du's dense rows and kept channels): no fill
     * of dh, no scatters into it, no separate gathers. Each token group's
     * frozen dx is built in one buffer and scattered once (no fill of dx, no accumulating scatters);
     * gate/up's LoRA then adds its dx. {@code cut}: the sparse tokens' frozen terms are left out.
     */
    private void mlpBackwardJoined(Acts a, Tensor dx, Tensor dy, int l, Tensor idx) {
        int C = c.hiddenSize(), I = c.intermediateSize(), k = (int) idx.numel();
        long off = (long) nD * I;
        LlamaWeights.Layer lw = w.layers[l];
        boolean sliced = curPlan.frozenGrad() == SparsePlan.FrozenGrad.SLICED;
        Tensor x = a.xn2[l], h = a.h[l];
        // down's LoRA: dB += s·dyᵀ·U, dU = s·dy·B, dA += dUᵀ·h, dh = dU·A (written)
        LoraAdapter.Lora lo = curLora.get(l, Projection.DOWN);
        if (lo != null) {
            float s = curLora.scaling();
            Tensor U = a.loraU[l][Projection.DOWN.ordinal()], dU = a.dLoraU(lo.rank());
            be.matmul(lo.db(), dy, true, U, false, s, 1);
            be.matmul(dU, dy, false, lo.bc(), false, s, 0);
            be.matmul(lo.da(), dU, true, h, false, 1, 1);
            be.matmul(a.dh, dU, false, lo.ac(), false, 1, 0);
        } else {
            be.fill(a.dh, 0f);
        }
        // frozen down: dense tokens through the whole weight (joined below), sparse tokens through the slice
        Tensor dhd = null;
        if (nD > 0) {
            Tensor dyd = a.xdShared.view(0, nD, C);
            be.gatherRows(dyd, dy, dIdx);
            dhd = a.s1.view(0, nD, I);
            be.matmul(dhd, dyd, false, lw.weight(Projection.DOWN), false, 1, 0);
        }
        gatheredFrom = null;
        Tensor dhk = null;
        if (sliced) {
            Tensor dys = a.xsShared.view(0, nS, C);
            dhk = a.s1.view(off, nS, k);
            be.gatherRows(dys, dy, sIdx);
            be.matmul(dhk, dys, false, slices[l][Projection.DOWN.ordinal()], false, 1, 0);   // (n_s,k)
        }
        // swiglu's backward on every row with both groups' frozen dh joined; the dense rows' dg/du
        // gathered whole, the sparse rows' at the kept channels
        Tensor dgd = nD > 0 ? a.s2.view(0, nD, I) : null, dud = nD > 0 ? a.s3.view(0, nD, I) : null;
        Tensor dgk = sliced ? a.s3.view(off, nS, k) : null, duk = sliced ? a.s2.view(off, nS, k) : null;
        be.swigluBackwardJoin(a.dg, a.du, a.dh, a.g[l], a.u[l], dhd, nD > 0 ? dIdx : null, dgd, dud, sIdx, dhk, idx, dgk, duk);
        // frozen gate/up input gradient, one buffer and one scatter per token group
        if (nD > 0) {
            Tensor dxd = a.xdShared.view(0, nD, C);
            be.matmul(dxd, dgd, false, lw.weight(Projection.GATE), false, 1, 0);
            be.matmul(dxd, dud, false, lw.weight(Projection.UP), false, 1, 1);
            be.scatterRows(dx, dxd, dIdx, false);
        }
        Tensor dxs = a.xsShared.view(0, nS, C);
        if (sliced) {
            be.matmul(dxs, dgk, false, slices[l][Projection.GATE.ordinal()], false, 1, 0);   // (n_s,C)
            be.matmul(dxs, duk, false, slices[l][Projection.UP.ordinal()], false, 1, 1);
        } else {
            be.fill(dxs, 0f);                                                              // cut: LoRA only
        }
        be.scatterRows(dx, dxs, sIdx, false);
        // gate/up's LoRA: dA, dB and dx +=
        loraBackward(a, dx, a.dg, x, l, Projection.GATE);
        loraBackward(a, dx, a.du, x, l, Projection.UP);
        loraGroupBackward(a, dx, l, fusedGroup(l, Projection.GATE, Projection.UP), x);
    }

    // ------------------------------------------------------------------ compact sparse MLP

    /**
     * Whether layer l's MLP runs compact: it has a kept-channel set, the batch has sparse tokens, and
     * gate/up/down carry neither LoRA nor bias. Then the sparse tokens' MLP never needs the full
     * intermediate width: the LoRA branch, which is dense on every channel, is absent, and pruned
     * gate/up outputs are 0, so their swiglu is 0 and down's pruned input columns contribute nothing.
     * Decided from the same state in the forward and the backward (the adapter and plan of the forward).
     */
    private boolean compactMlp(int l, Tensor mlp) {
        if (mlp == null || sIdx == null) return false;
        LlamaWeights.Layer lw = w.layers[l];
        for (Projection p : new Projection[] {Projection.GATE, Projection.UP, Projection.DOWN}) {
            if (lw.bias(p) != null) return false;
            if (curLora != null && curLora.get(l, p) != null) return false;
        }
        return true;
    }

    /**
     * The compact MLP's forward, y (N,C) = down(swiglu(gate(x), up(x))) of x = xn2[l]. Dense tokens run
     * the full width; sparse tokens run the k kept channels only, g_k = x_s·Wg_keptᵀ, u_k = x_s·Wu_keptᵀ,
     * h_k = swiglu (n_s,k), y_s = h_k·Wd_keptᵀ (n_s,C): no fill or scatter to the intermediate width and
     * no gather of h's columns. The stash packs both groups into g/u/h[l]: the dense tokens' (n_d,I)
     * first, then the sparse tokens' (n_s,k) — n_d·I + n_s·k ≤ N·I.
     */
    private void mlpForwardCompact(Acts a, Tensor y, int l, Tensor idx) {
        int C = c.hiddenSize(), I = c.intermediateSize(), k = (int) idx.numel();
        LlamaWeights.Layer lw = w.layers[l];
        Tensor x = a.xn2[l];
        if (sBlocks != null) {
            mlpForwardCompactBlocks(a, y, l, idx);
            return;
        }
        gatheredFrom = x;
        if (nD > 0) {
            Tensor xd = a.xdShared.view(0, nD, C);                                           // (n_d,C)
            Tensor gd = a.g[l].view(0, nD, I), ud = a.u[l].view(0, nD, I), hd = a.h[l].view(0, nD, I);
            be.gatherRows(xd, x, dIdx);
            be.matmul(gd, xd, false, lw.weight(Projection.GATE), true, 1, 0);
            be.matmul(ud, xd, false, lw.weight(Projection.UP), true, 1, 0);
            be.swiglu(hd, gd, ud);
            Tensor yd = a.s2.view(0, nD, C);
            be.matmul(yd, hd, false, lw.weight(Projection.DOWN), true, 1, 0);
            be.scatterRows(y, yd, dIdx, false);
        }
        long off = (long) nD * I;
        Tensor xs = a.xsShared.view(0, nS, C);                                               // (n_s,C)
        Tensor gk = a.g[l].view(off, nS, k), uk = a.u[l].view(off, nS, k), hk = a.h[l].view(off, nS, k);
        be.gatherRows(xs, x, sIdx);
        be.matmul(gk, xs, false, slices[l][Projection.GATE.ordinal()], true, 1, 0);      // (n_s,k)
        be.matmul(uk, xs, false, slices[l][Projection.UP.ordinal()], true, 1, 0);
        if (frozenHook != null) {
            frozenHook.apply(l, Projection.GATE, gk);
            frozenHook.apply(l, Projection.UP, uk);
        }
        be.swiglu(hk, gk, uk);
        Tensor ys = a.s2.view(0, nS, C);
        be.matmul(ys, hk, false, slices[l][Projection.DOWN.ordinal()], true, 1, 0);      // (n_s,C), slice (C,k)
        if (frozenHook != null) frozenHook.apply(l, Projection.DOWN, ys);
        be.scatterRows(y, ys, sIdx, false);
    }

    /** {@link #mlpForwardCompact} with row-block token groups: GEMMs read xn2's rows and write y's in place. */
    private void mlpForwardCompactBlocks(Acts a, Tensor y, int l, Tensor idx) {
        int I = c.intermediateSize(), k = (int) idx.numel();
        LlamaWeights.Layer lw = w.layers[l];
        Tensor x = a.xn2[l];
        RowBlocks s = sBlocks, d = dBlocks;
        if (nD > 0) {
            Tensor gd = a.g[l].view(0, nD, I), ud = a.u[l].view(0, nD, I), hd = a.h[l].view(0, nD, I);
            if (d != null) {
                be.matmulRowBlocks(gd, 0, d.len, x, d.off, d.stride, lw.weight(Projection.GATE), true, d.blocks, d.len, 1, 0);
                be.matmulRowBlocks(ud, 0, d.len, x, d.off, d.stride, lw.weight(Projection.UP), true, d.blocks, d.len, 1, 0);
                be.swiglu(hd, gd, ud);
                be.matmulRowBlocks(y, d.off, d.stride, hd, 0, d.len, lw.weight(Projection.DOWN), true, d.blocks, d.len, 1, 0);
            } else {
                Tensor xd = a.xdShared.view(0, nD, c.hiddenSize()), yd = a.s2.view(0, nD, c.hiddenSize());
                gatheredFrom = null;                      // xdShared now holds other rows
                be.gatherRows(xd, x, dIdx);
                be.matmul(gd, xd, false, lw.weight(Projection.GATE), true, 1, 0);
                be.matmul(ud, xd, false, lw.weight(Projection.UP), true, 1, 0);
                be.swiglu(hd, gd, ud);
                be.matmul(yd, hd, false, lw.weight(Projection.DOWN), true, 1, 0);
                be.scatterRows(y, yd, dIdx, false);
            }
        }
        long off = (long) nD * I;
        Tensor gk = a.g[l].view(off, nS, k), uk = a.u[l].view(off, nS, k), hk = a.h[l].view(off, nS, k);
        be.matmulRowBlocks(gk, 0, s.len, x, s.off, s.stride, slices[l][Projection.GATE.ordinal()], true, s.blocks, s.len, 1, 0);
        be.matmulRowBlocks(uk, 0, s.len, x, s.off, s.stride, slices[l][Projection.UP.ordinal()], true, s.blocks, s.len, 1, 0);
        be.swiglu(hk, gk, uk);
        be.matmulRowBlocks(y, s.off, s.stride, hk, 0, s.len, slices[l][Projection.DOWN.ordinal()], true, s.blocks, s.len, 1, 0);
    }

    /**
     * Backward of {@link #mlpForwardCompact}: dx (N,C) = ∂/∂xn2[l] (overwritten) from dy (N,C). With
     * {@code frozen_grad: cut} the sparse tokens' rows are 0 (the whole MLP is frozen on them); sliced
     * runs the same kept-channel GEMMs backwards. Per row the ops are those of the full path (dx =
     * dg·Wg, then += du·Wu), so a plan keeping every channel stays bit-for-bit dense.
     */
    private void mlpBackwardCompact(Acts a, Tensor dx, Tensor dy, int l, Tensor idx) {
        int C = c.hiddenSize(), I = c.intermediateSize(), k = (int) idx.numel();
        LlamaWeights.Layer lw = w.layers[l];
        boolean sliced = curPlan.frozenGrad() == SparsePlan.FrozenGrad.SLICED;
        if (!sliced) be.fill(dx, 0f);
        if (sBlocks != null) {
            mlpBackwardCompactBlocks(a, dx, dy, l, idx, sliced);
            return;
        }
        if (nD > 0) denseTokensMlpBackward(a, dx, dy, l);
        if (sliced) {
            long off = (long) nD * I;
            Tensor dys = a.s1.view(0, nS, C), dxs = a.s2.view(0, nS, C);
            Tensor gk = a.g[l].view(off, nS, k), uk = a.u[l].view(off, nS, k);
            Tensor dhk = a.dh.view(0, nS, k), dgk = a.dg.view(0, nS, k), duk = a.du.view(0, nS, k);
            be.gatherRows(dys, dy, sIdx);
            be.matmul(dhk, dys, false, slices[l][Projection.DOWN.ordinal()], false, 1, 0);   // (n_s,k)
            be.swigluBackward(dgk, duk, dhk, gk, uk);
            be.matmul(dxs, dgk, false, slices[l][Projection.GATE.ordinal()], false, 1, 0);   // (n_s,C)
            be.matmul(dxs, duk, false, slices[l][Projection.UP.ordinal()], false, 1, 1);
            be.scatterRows(dx, dxs, sIdx, false);
        }
    }

    /**
     * The compact MLP's backward for the dense tokens through gathered rows: their dy rows gathered,
     * the full-width down/swiglu/gate/up backward, their dx rows scattered back (overwritten).
     */
    private void denseTokensMlpBackward(Acts a, Tensor dx, Tensor dy, int l) {
        int C = c.hiddenSize(), I = c.intermediateSize();
        LlamaWeights.Layer lw = w.layers[l];
        Tensor dyd = a.s1.view(0, nD, C), dxd = a.s2.view(0, nD, C);
        Tensor gd = a.g[l].view(0, nD, I), ud = a.u[l].view(0, nD, I);
        Tensor dhd = a.dh.view(0, nD, I), dgd = a.dg.view(0, nD, I), dud = a.du.view(0, nD, I);
        be.gatherRows(dyd, dy, dIdx);
        be.matmul(dhd, dyd, false, lw.weight(Projection.DOWN), false, 1, 0);
        be.swigluBackward(dgd, dud, dhd, gd, ud);
        be.matmul(dxd, dgd, false, lw.weight(Projection.GATE), false, 1, 0);
        be.matmul(dxd, dud, false, lw.weight(Projection.UP), false, 1, 1);
        be.scatterRows(dx, dxd, dIdx, false);
    }

    /** {@link #mlpBackwardCompact} with row-block token groups: GEMMs read dy's rows and write dx's in place. */
    private void mlpBackwardCompactBlocks(Acts a, Tensor dx, Tensor dy, int l, Tensor idx, boolean sliced) {
        int I = c.intermediateSize(), k = (int) idx.numel();
        LlamaWeights.Layer lw = w.layers[l];
        RowBlocks s = sBlocks, d = dBlocks;
        if (nD > 0 && d == null) {
            denseTokensMlpBackward(a, dx, dy, l);
        } else if (nD > 0) {
            Tensor gd = a.g[l].view(0, nD, I), ud = a.u[l].view(0, nD, I);
            Tensor dhd = a.dh.view(0, nD, I), dgd = a.dg.view(0, nD, I), dud = a.du.view(0, nD, I);
            be.matmulRowBlocks(dhd, 0, d.len, dy, d.off, d.stride, lw.weight(Projection.DOWN), false, d.blocks, d.len, 1, 0);
            be.swigluBackward(dgd, dud, dhd, gd, ud);
            be.matmulRowBlocks(dx, d.off, d.stride, dgd, 0, d.len, lw.weight(Projection.GATE), false, d.blocks, d.len, 1, 0);
            be.matmulRowBlocks(dx, d.off, d.stride, dud, 0, d.len, lw.weight(Projection.UP), false, d.blocks, d.len, 1, 1);
        }
        if (sliced) {
            long off = (long) nD * I;
            Tensor gk = a.g[l].view(off, nS, k), uk = a.u[l].view(off, nS, k);
            Tensor dhk = a.dh.view(0, nS, k), dgk = a.dg.view(0, nS, k), duk = a.du.view(0, nS, k);
            be.matmulRowBlocks(dhk, 0, s.len, dy, s.off, s.stride, slices[l][Projection.DOWN.ordinal()], false, s.blocks, s.len, 1, 0);
            be.swigluBackward(dgk, duk, dhk, gk, uk);
            be.matmulRowBlocks(dx, s.off, s.stride, dgk, 0, s.len, slices[l][Projection.GATE.ordinal()], false, s.blocks, s.len, 1, 0);
            be.matmulRowBlocks(dx, s.off, s.stride, duk, 0, s.len, slices[l][Projection.UP.ordinal()], false, s.blocks, s.len, 1, 1);
        }
    }

    // ------------------------------------------------------------------ head

    /** The head over the prepared output rows: per-row losses into a.losses, dlogits and the head's backward (no host reads). */
    private void headLossAndBackward(Acts a) {
        int n = curOutputs, C = c.hiddenSize(), V = c.vocabSize();
        be.fill(a.dres, 0f);
        if (n == 0) return;
        Tensor idx = a.outIdx.view(0, n), tgt = a.outTargets.view(0, n);
        Tensor xo = a.s1.view(0, n, C), dxo = a.s2.view(0, n, C);
        be.gatherRows(xo, a.xf, idx);
        int cs = chunkRows(n);
        for (int c0 = 0; c0 < n; c0 += cs) {
            int r = Math.min(cs, n - c0);
            Tensor lg = a.logits(cs).view(0, r, V); // (r, V), becomes dlogits in place
            be.matmul(lg, xo.rows(c0, r), false, w.head, true, 1, 0);
            be.crossEntropy(a.losses.view(c0, r), lg, lg, tgt.rows(c0, r), 1f);
            be.matmul(dxo.rows(c0, r), lg, false, w.head, false, 1, 0); // the head's backward, (r, C)
        }
        be.fill(a.dxf, 0f);
        be.scatterRows(a.dxf, dxo, idx, false);
        be.rmsNormBackward(a.dres, a.dxf, a.resOut, w.finalNorm, a.rstdf, false);
    }

    // ------------------------------------------------------------------ backward

    /** Backward of the last {@link #forward}: adds the LoRA gradients (sums over output tokens) into the adapter's buffers. */
    public void backward() {
        if (!haveStash) throw new IllegalStateException("backward() needs a preceding forward() of a training step");
        haveStash = false;
        Acts a = acts;
        for (int l = c.numLayers() - 1; l >= 0; l--) {
            LlamaWeights.Layer lw = w.layers[l];
            SparsePlan.LayerPlan lp = layerPlan(l);
            // a.dres = ∂loss/∂(layer output); the residual passes it straight to resMid
            mlpBackward(a, a.dxn, a.dres, l, lp);
            be.rmsNormBackward(a.dres, a.dxn, a.resMid[l], lw.ffnNorm(), a.rstd2[l], true);
            // attention
            projBackward(a, a.datt, false, a.dres, a.att[l], l, Projection.O, lp == null ? null : lp.o());
            if (c.hasSlidingWindow()) be.attentionBackward(a.dq, a.dk, a.dv, a.datt, a.att[l], a.lse[l], a.q[l], a.k[l], a.v[l],
                    a.keyStart, a.B, a.T, c.numHeads(), c.numKvHeads(), c.headDim(), attnScale, c.slidingWindow());
            else be.attentionBackward(a.dq, a.dk, a.dv, a.datt, a.att[l], a.lse[l], a.q[l], a.k[l], a.v[l], a.keyStart,
                    a.B, a.T, c.numHeads(), c.numKvHeads(), c.headDim(), attnScale);
            be.ropeQK(a.dq, a.dk, a.positions, ropeCos, ropeSin, c.numHeads(), c.numKvHeads(), c.headDim(), true);
            // layer 0's input gradient would only reach the (frozen) embedding: skip it
            Tensor dx = l > 0 ? a.dxn : null;
            // q, k, v read the same input: their frozen input gradients first, summed per token group
            // before one scatter each, then LoRA's three terms
            if (dx != null) qkvFrozenBackward(a, dx, l, lp);
            loraBackward(a, dx, a.dq, a.xn1[l], l, Projection.Q);
            loraBackward(a, dx, a.dk, a.xn1[l], l, Projection.K);
            loraBackward(a, dx, a.dv, a.xn1[l], l, Projection.V);
            loraGroupBackward(a, dx, l, fusedGroup(l, Projection.Q, Projection.K), a.xn1[l]);
            if (l > 0) be.rmsNormBackward(a.dres, a.dxn, a.resIn[l], lw.attnNorm(), a.rstd1[l], true);
        }
    }

    /**
     * The frozen part of q/k/v's input gradient, dx (N,C) = Σ_p ∂/∂xn1 through W_p (overwritten), in
     * the order q, k, v for every token (so a plan keeping every channel is bit-for-bit dense). With
     * sparse tokens, the dense tokens' sum and the sparse tokens' sum (kept-channel slices under
     * {@code sliced}; nothing under {@code cut}) are each built in one (n,C) buffer and scattered once.
     */
    private void qkvFrozenBackward(Acts a, Tensor dx, int l, SparsePlan.LayerPlan lp) {
        Projection[] ps = {Projection.Q, Projection.K, Projection.V};
        Tensor[] dys = {a.dq, a.dk, a.dv};
        Tensor[] idx = lp == null ? new Tensor[3] : new Tensor[] {lp.q(), lp.k(), lp.v()};
        LlamaWeights.Layer lw = w.layers[l];
        int C = c.hiddenSize();
        if (sIdx == null || (idx[0] == null && idx[1] == null && idx[2] == null)) {
            for (int i = 0; i < 3; i++) be.matmul(dx, dys[i], false, lw.weight(ps[i]), false, 1, i == 0 ? 0 : 1);
            return;
        }
        boolean sliced = curPlan.frozenGrad() == SparsePlan.FrozenGrad.SLICED;
        if (sBlocks != null) {
            qkvFrozenBackwardBlocks(a, dx, l, ps, dys, idx, sliced);
            return;
        }
        Tensor dxd = a.s2.view(0, nD, C), dxs = a.s3.view(0, nS, C);
        boolean anyS = false;
        for (int i = 0; i < 3; i++) {
            int out = ps[i].outDim(c);
            if (nD > 0) {
                Tensor dyd = a.s1.view(0, nD, out);
                be.gatherRows(dyd, dys[i], dIdx);
                be.matmul(dxd, dyd, false, lw.weight(ps[i]), false, 1, i == 0 ? 0 : 1);
            }
            if (idx[i] == null) {                        // this projection runs dense on every token
                Tensor dyS = a.s1.view(0, nS, out);
                be.gatherRows(dyS, dys[i], sIdx);
                be.matmul(dxs, dyS, false, lw.weight(ps[i]), false, 1, anyS ? 1 : 0);
                anyS = true;
            } else if (sliced) {
                int k = (int) idx[i].numel();
                Tensor dyk = a.s1.view(0, nS, k);
                be.gatherRowsCols(dyk, dys[i], sIdx, idx[i]);
                be.matmul(dxs, dyk, false, slices[l][ps[i].ordinal()], false, 1, anyS ? 1 : 0);
                anyS = true;
            }
        }
        if (nD > 0) be.scatterRows(dx, dxd, dIdx, false);
        if (!anyS) be.fill(dxs, 0f);                     // cut: the sparse tokens' frozen path adds nothing
        be.scatterRows(dx, dxs, sIdx, false);
    }

    /**
     * {@link #qkvFrozenBackward} with row-block token groups: each group's sum over q, k, v is built in
     * dx's own rows (same order per row: q, then k, then v), reading dy's rows in place.
     */
    private void qkvFrozenBackwardBlocks(Acts a, Tensor dx, int l, Projection[] ps, Tensor[] dys, Tensor[] idx, boolean sliced) {
        LlamaWeights.Layer lw = w.layers[l];
        RowBlocks s = sBlocks, d = dBlocks;
        Tensor dxd = a.s2.view(0, nD, c.hiddenSize());   // the dense rows' sum when they are gathered
        boolean anyS = false;
        for (int i = 0; i < 3; i++) {
            Tensor W = lw.weight(ps[i]);
            if (nD > 0 && d != null) {
                be.matmulRowBlocks(dx, d.off, d.stride, dys[i], d.off, d.stride, W, false, d.blocks, d.len, 1, i == 0 ? 0 : 1);
            } else if (nD > 0) {
                Tensor dyd = a.s1.view(0, nD, ps[i].outDim(c));
                be.gatherRows(dyd, dys[i], dIdx);
                be.matmul(dxd, dyd, false, W, false, 1, i == 0 ? 0 : 1);
            }
            if (idx[i] == null) {                        // this projection runs dense on every token
                be.matmulRowBlocks(dx, s.off, s.stride, dys[i], s.off, s.stride, W, false, s.blocks, s.len, 1, anyS ? 1 : 0);
                anyS = true;
            } else if (sliced) {
                int k = (int) idx[i].numel();
                Tensor dyk = a.s1.view(0, nS, k);
                be.gatherRowsCols(dyk, dys[i], sIdx, idx[i]);
                be.matmulRowBlocks(dx, s.off, s.stride, dyk, 0, s.len, slices[l][ps[i].ordinal()], false, s.blocks, s.len, 1, anyS ? 1 : 0);
                anyS = true;
            }
        }
        if (nD > 0 && d == null) be.scatterRows(dx, dxd, dIdx, false);
        if (!anyS) {                                     // cut: the sparse tokens' frozen path adds nothing
            Tensor dxs = a.s3.view(0, nS, c.hiddenSize());
            be.fill(dxs, 0f);
            be.scatterRows(dx, dxs, sIdx, false);
        }
    }

    /**
     * Backward of {@link #projForward}: dx (N,in) (+)= ∂/∂x (null: not needed), LoRA dA, dB +=.
     * dy (N,out). The frozen term comes first, then LoRA's, in every path (bit-identical sums).
     */
    private void projBackward(Acts a, Tensor dx, boolean accumulate, Tensor dy, Tensor x, int l, Projection p, Tensor idx) {
        int N = a.N, in = p.inDim(c), out = p.outDim(c);
        Tensor W = w.layers[l].weight(p);
        if (dx != null) {
            if (idx == null || sIdx == null) {
                be.matmul(dx, dy, false, W, false, 1, accumulate ? 1 : 0);
            } else if (sBlocks != null) {
                projBackwardBlocks(a, dx, accumulate, dy, l, p, idx);
            } else {
                int k = (int) idx.numel();
                if (!accumulate) be.fill(dx, 0f);
                if (nD > 0) {
                    Tensor dyd = a.s1.view(0, nD, out), dxd = a.s2.view(0, nD, in);
                    be.gatherRows(dyd, dy, dIdx);
                    be.matmul(dxd, dyd, false, W, false, 1, 0);
                    be.scatterRows(dx, dxd, dIdx, true);
                }
                if (curPlan.frozenGrad() == SparsePlan.FrozenGrad.SLICED) {
                    Tensor ws = slices[l][p.ordinal()];
                    if (outputSliced(p)) {
                        Tensor dyk = a.s3.view(0, nS, k), dxs = a.s2.view(0, nS, in);
                        be.gatherRowsCols(dyk, dy, sIdx, idx);                                // (n_s,k)
                        be.matmul(dxs, dyk, false, ws, false, 1, 0);
                        be.scatterRows(dx, dxs, sIdx, true);
                    } else {
                        Tensor dys = a.s1.view(0, nS, out), dxk = a.s3.view(0, nS, k);
                        be.gatherRows(dys, dy, sIdx);
                        be.matmul(dxk, dys, false, ws, false, 1, 0);                           // (n_s,k)
                        if (!accumulate) {
                            be.scatterRowsCols(dx, dxk, sIdx, idx);                           // those rows are still 0
                        } else {
                            Tensor dxs = a.s2.view(0, nS, in);
                            be.fill(dxs, 0f);
                            be.scatterCols(dxs, dxk, idx, false);
                            be.scatterRows(dx, dxs, sIdx, true);
                        }
                    }
                }
                // CUT: no gradient through the frozen path on sparse tokens
            }
        }
        loraBackward(a, dx, dy, x, l, p);
    }

    /**
     * The frozen part of {@link #projBackward} with a row-block sparse group: GEMMs read dy's rows and
     * write (beta 0) or add into (beta 1) dx's rows in place (the dense group too when it is row blocks,
     * else gathered and scattered). Without accumulation every row is written
     * (dense rows by their GEMM; sparse rows by the slice's GEMM or, for o/down, one scatterRowsCols),
     * so dx is only zero-filled under {@code cut}, where the sparse rows get nothing.
     */
    private void projBackwardBlocks(Acts a, Tensor dx, boolean accumulate, Tensor dy, int l, Projection p, Tensor idx) {
        int in = p.inDim(c), k = (int) idx.numel();
        Tensor W = w.layers[l].weight(p), ws = slices[l][p.ordinal()];
        RowBlocks s = sBlocks, d = dBlocks;
        boolean sliced = curPlan.frozenGrad() == SparsePlan.FrozenGrad.SLICED;
        float beta = accumulate ? 1 : 0;
        if (!accumulate && !sliced) be.fill(dx, 0f);
        if (nD > 0 && d != null) {
            be.matmulRowBlocks(dx, d.off, d.stride, dy, d.off, d.stride, W, false, d.blocks, d.len, 1, beta);
        } else if (nD > 0) {
            Tensor dyd = a.s1.view(0, nD, p.outDim(c)), dxd = a.s2.view(0, nD, in);
            be.gatherRows(dyd, dy, dIdx);
            be.matmul(dxd, dyd, false, W, false, 1, 0);
            be.scatterRows(dx, dxd, dIdx, accumulate);
        }
        if (!sliced) return;                             // CUT: no gradient through the frozen path on sparse tokens
        if (outputSliced(p)) {
            Tensor dyk = a.s3.view(0, nS, k);
            be.gatherRowsCols(dyk, dy, sIdx, idx);                                                      // (n_s,k)
            be.matmulRowBlocks(dx, s.off, s.stride, dyk, 0, s.len, ws, false, s.blocks, s.len, 1, beta);
        } else {
            Tensor dxk = a.s3.view(0, nS, k);
            be.matmulRowBlocks(dxk, 0, s.len, dy, s.off, s.stride, ws, false, s.blocks, s.len, 1, 0);   // (n_s,k)
            if (!accumulate) {
                be.scatterRowsCols(dx, dxk, sIdx, idx);
            } else {
                Tensor dxs = a.s2.view(0, nS, in);
                be.fill(dxs, 0f);
                be.scatterCols(dxs, dxk, idx, false);
                be.scatterRows(dx, dxs, sIdx, true);
            }
        }
    }

    /** LoRA's part of {@link #projBackward}: dA, dB += and, when dx is not null, dx += its input gradient. */
    private void loraBackward(Acts a, Tensor dx, Tensor dy, Tensor x, int l, Projection p) {
        int N = a.N, in = p.inDim(c);
        LoraAdapter.Lora lo = curLora == null || curLora.group(l, p) != null ? null : curLora.get(l, p); // fused: loraGroupBackward
        if (lo != null) {
            float s = curLora.scaling(), pd = curLora.config().dropout();
            Tensor U = a.loraU[l][p.ordinal()];
            be.matmul(lo.db(), dy, true, U, false, s, 1);           // dB += s·dyᵀ·U      (out, r)
            Tensor dU = a.dLoraU(lo.rank());
            be.matmul(dU, dy, false, lo.bc(), false, s, 0);         // dU = s·dy·B        (N, r)
            Tensor xin = x;
            if (pd > 0f) {
                xin = a.s1.view(0, N, in);
                be.dropout(xin, x, pd, dropSeed(l, p));             // the forward's mask again
            }
            be.matmul(lo.da(), dU, true, xin, false, 1, 1);         // dA += dUᵀ·drop(x)  (r, in)
            if (dx != null) {
                if (pd > 0f) {
                    Tensor t = a.s2.view(0, N, in);
                    be.matmul(t, dU, false, lo.ac(), false, 1, 0);
                    be.dropout(t, t, pd, dropSeed(l, p));
                    be.axpy(dx, 1f, t);
                } else {
                    be.matmul(dx, dU, false, lo.ac(), false, 1, 1);
                }
            }
        }
    }

    // ------------------------------------------------------------------ fused LoRA of projections sharing an input

    /** The fused LoRA group of layer l that one of {@code ps} belongs to (first found), or null. */
    private LoraAdapter.Group fusedGroup(int l, Projection... ps) {
        if (curLora == null) return null;
        for (Projection p : ps) {
            LoraAdapter.Group g = curLora.group(l, p);
            if (g != null) return g;
        }
        return null;
    }

    /** The output (forward) or output gradient (backward) of a projection that can be in a fused group. */
    private static Tensor memberTensor(Acts a, int l, Projection p, boolean grad) {
        return switch (p) {
            case Q -> grad ? a.dq : a.q[l];
            case K -> grad ? a.dk : a.k[l];
            case V -> grad ? a.dv : a.v[l];
            case GATE -> grad ? a.dg : a.g[l];
            case UP -> grad ? a.du : a.u[l];
            default -> throw new IllegalStateException(p + " is never in a fused LoRA group");
        };
    }

    /**
     * LoRA of a fused group (projections reading the same x (N,in), dropout 0), after their frozen
     * parts: Uᵀ (k·r, N) = A_g·xᵀ in one GEMM (A_g = the members' A stacked by rows), then per member
     * t: y_t += s·(Uᵀ rows of t)ᵀ·B_tᵀ. Dense on every token and channel, like the per-projection path.
     */
    private void loraGroupForward(Acts a, int l, LoraAdapter.Group g, Tensor x) { loraGroupForward(a, l, g, x, 1f); }

    /** {@link #loraGroupForward} adding into (beta 1) or writing (beta 0) the members' outputs. */
    private void loraGroupForward(Acts a, int l, LoraAdapter.Group g, Tensor x, float beta) {
        if (g == null) return;
        int N = a.N, r = curLora.config().r(), k = g.members().size();
        Tensor Ut = a.loraUt(l, slot(g), k * r);                               // (k·r, N)
        be.matmul(Ut, g.ac(), false, x, true, 1, 0);                           // Uᵀ = A_g·xᵀ
        for (int j = 0; j < k; j++) {
            Projection p = g.members().get(j);
            Tensor y = memberTensor(a, l, p, false);                           // (N, out_t)
            be.matmul(y, Ut.view((long) j * r * N, r, N), true, curLora.get(l, p).bc(), true, curLora.scaling(), beta);
        }
    }

    /**
     * Backward of {@link #loraGroupForward}: per member dB_t += s·dy_tᵀ·U_t and dUᵀ_t = s·B_tᵀ·dy_tᵀ
     * (rows of one (k·r, N) buffer); then dA_g += dUᵀ·x and, when dx is not null, dx += dUᵀᵀ·A_g,
     * one GEMM each (K = k·r for dx).
     */
    private void loraGroupBackward(Acts a, Tensor dx, int l, LoraAdapter.Group g, Tensor x) {
        if (g == null) return;
        int N = a.N, r = curLora.config().r(), k = g.members().size();
        float s = curLora.scaling();
        Tensor Ut = a.loraUt[l][slot(g)], dUt = a.dLoraUt(k * r);                // (k·r, N)
        for (int j = 0; j < k; j++) {
            Projection p = g.members().get(j);
            LoraAdapter.Lora lo = curLora.get(l, p);
            Tensor dy = memberTensor(a, l, p, true);                           // (N, out_t)
            long off = (long) j * r * N;
            be.matmul(lo.db(), dy, true, Ut.view(off, r, N), true, s, 1);      // dB_t += s·dy_tᵀ·U_t    (out_t, r)
            be.matmul(dUt.view(off, r, N), lo.bc(), true, dy, true, s, 0);     // dUᵀ_t = s·B_tᵀ·dy_tᵀ   (r, N)
        }
        be.matmul(g.da(), dUt, false, x, false, 1, 1);                         // dA_g += dUᵀ·x          (k·r, in)
        if (dx != null) be.matmul(dx, dUt, true, g.ac(), false, 1, 1);         // dx += dU·A_g           (N, in)
    }

    private static int slot(LoraAdapter.Group g) {
        Projection p0 = g.members().get(0);
        return p0 == Projection.GATE || p0 == Projection.UP ? 1 : 0;
    }

    // ------------------------------------------------------------------ generation

    /** Per-layer K/V caches for one sequence, (maxT, Hkv·D) each. */
    public final class KvCache implements AutoCloseable {
        final Tensor[] k, v;
        public final int maxT;

        KvCache(int maxT) {
            if (maxT > ropeMaxPos) throw new IllegalArgumentException("KV cache of " + maxT + " positions exceeds the RoPE table of " + ropeMaxPos);
            this.maxT = maxT;
            k = new Tensor[c.numLayers()];
            v = new Tensor[c.numLayers()];
            for (int l = 0; l < c.numLayers(); l++) {
                k[l] = be.zeros(be.computeType(), maxT, c.kvDim());
                v[l] = be.zeros(be.computeType(), maxT, c.kvDim());
            }
        }

        @Override
        public void close() {
            for (Tensor t : k) t.close();
            for (Tensor t : v) t.close();
        }
    }

    public KvCache newKvCache(int maxT) { return new KvCache(maxT); }

    /**
     * Runs {@code tokens} at positions [pos0, pos0+n) of one sequence against the cache (which must
     * hold positions [0, pos0)), appends their K/V, and returns the logits of the last token (V).
     * LoRA (no dropout) is applied when given; generation is always dense.
     */
    public float[] forwardCached(int[] tokens, int pos0, KvCache cache, LoraAdapter lora) {
        int n = tokens.length, C = c.hiddenSize(), I = c.intermediateSize(), qd = c.qDim(), kd = c.kvDim();
        if (closed) throw new IllegalStateException("LlamaModel is closed");
        if (n == 0) throw new IllegalArgumentException("forwardCached needs at least one token");
        if (pos0 + n > cache.maxT) throw new IllegalArgumentException("sequence of " + (pos0 + n) + " tokens exceeds the KV cache of " + cache.maxT);
        DType dt = be.computeType();
        float eps = c.rmsNormEps();
        int[] pos = new int[n];
        for (int i = 0; i < n; i++) pos[i] = pos0 + i;
        Tensor ids = be.fromInts(tokens, n), positions = be.fromInts(pos, n);
        Tensor x = be.empty(dt, n, C), xn = be.empty(dt, n, C), rstd = be.empty(DType.F32, n), tmp = be.empty(dt, n, C);
        Tensor q = be.empty(dt, n, qd), att = be.empty(dt, n, qd), g = be.empty(dt, n, I), u = be.empty(dt, n, I), h = be.empty(dt, n, I);
        Tensor ones = be.empty(dt, n, 1);
        be.fill(ones, 1f);
        be.embedding(x, ids, w.embed);
        for (int l = 0; l < c.numLayers(); l++) {
            LlamaWeights.Layer lw = w.layers[l];
            be.rmsNorm(xn, rstd, x, lw.attnNorm(), eps);
            Tensor kNew = cache.k[l].rows(pos0, n), vNew = cache.v[l].rows(pos0, n);
            denseLinear(q, xn, l, Projection.Q, lora, ones);
            denseLinear(kNew, xn, l, Projection.K, lora, ones);
            denseLinear(vNew, xn, l, Projection.V, lora, ones);
            be.ropeQK(q, kNew, positions, ropeCos, ropeSin, c.numHeads(), c.numKvHeads(), c.headDim(), false);
            if (c.hasSlidingWindow()) be.attentionCached(att, q, cache.k[l], cache.v[l], pos0, c.numHeads(), c.numKvHeads(), c.headDim(), attnScale, c.slidingWindow());
            else be.attentionCached(att, q, cache.k[l], cache.v[l], pos0, c.numHeads(), c.numKvHeads(), c.headDim(), attnScale);
            denseLinear(tmp, att, l, Projection.O, lora, ones);
            be.addRmsNorm(x, xn, rstd, tmp, lw.ffnNorm(), eps);
            denseLinear(g, xn, l, Projection.GATE, lora, ones);
            denseLinear(u, xn, l, Projection.UP, lora, ones);
            be.swiglu(h, g, u);
            denseLinear(tmp, h, l, Projection.DOWN, lora, ones);
            be.axpy(x, 1f, tmp);
        }
        Tensor lastX = x.rows(n - 1, 1), lastN = xn.rows(0, 1);
        be.rmsNorm(lastN, rstd.rows(0, 1), lastX, w.finalNorm, eps);
        Tensor logits = be.empty(dt, 1, c.vocabSize());
        be.matmul(logits, lastN, false, w.head, true, 1, 0);
        float[] out = be.toFloats(logits);
        for (Tensor t : new Tensor[] {ids, positions, x, xn, rstd, tmp, q, att, g, u, h, ones, logits}) t.close();
        return out;
    }

    /**
     * Per-layer K/V caches for B left-padded sequences decoded in lockstep, time-major
     * (maxT·B, Hkv·D): slot p of sequence b is row p·B + b, so one step's new K/V of every
     * sequence is one contiguous block (see {@code Backend.attentionCachedBatch}). Sequence b's
     * real tokens start at slot keyStart[b]; its token at slot p has position p − keyStart[b]
     * (the position ids HF derives from the attention mask), so a padded sequence computes what it
     * would alone.
     */
    public final class BatchKvCache implements AutoCloseable {
        final Tensor[] k, v;
        final Tensor keyStartT;
        final int[] keyStart;
        public final int batch, maxT;

        BatchKvCache(int[] keyStart, int maxT) {
            // no RoPE bound on maxT: slots count padding, positions do not (forwardCachedBatch checks those)
            if (keyStart.length == 0) throw new IllegalArgumentException("batched KV cache needs at least one sequence");
            for (int b = 0; b < keyStart.length; b++)
                if (keyStart[b] < 0 || keyStart[b] >= maxT)
                    throw new IllegalArgumentException("keyStart[" + b + "] = " + keyStart[b] + " is outside the KV cache of " + maxT + " slots");
            this.batch = keyStart.length;
            this.maxT = maxT;
            this.keyStart = keyStart.clone();
            keyStartT = be.fromInts(this.keyStart, batch);
            k = new Tensor[c.numLayers()];
            v = new Tensor[c.numLayers()];
            for (int l = 0; l < c.numLayers(); l++) {
                k[l] = be.zeros(be.computeType(), maxT * batch, c.kvDim());
                v[l] = be.zeros(be.computeType(), maxT * batch, c.kvDim());
            }
        }

        /** Sequence b's first real slot. */
        public int keyStart(int b) { return keyStart[b]; }

        /**
         * A new cache of the same maxT holding only sequences {@code rows} (in that order), with their
         * slots [0, slots) copied: one row gather per layer and K/V. This cache stays open.
         */
        public BatchKvCache keep(int[] rows, int slots) {
            if (slots < 0 || slots > maxT) throw new IllegalArgumentException("keep: " + slots + " slots of a cache of " + maxT);
            int[] ks = new int[rows.length], idx = new int[slots * rows.length];
            for (int j = 0; j < rows.length; j++) {
                if (rows[j] < 0 || rows[j] >= batch) throw new IllegalArgumentException("keep: sequence " + rows[j] + " of a cache of " + batch);
                ks[j] = keyStart[rows[j]];
            }
            for (int p = 0; p < slots; p++)
                for (int j = 0; j < rows.length; j++) idx[p * rows.length + j] = p * batch + rows[j];
            BatchKvCache kept = new BatchKvCache(ks, maxT);
            if (idx.length == 0) return kept;
            try (Tensor ix = be.fromInts(idx, idx.length)) {
                for (int l = 0; l < c.numLayers(); l++) {
                    be.gatherRows(kept.k[l].rows(0, idx.length), k[l], ix);
                    be.gatherRows(kept.v[l].rows(0, idx.length), v[l], ix);
                }
            }
            return kept;
        }

        @Override
        public void close() {
            for (Tensor t : k) t.close();
            for (Tensor t : v) t.close();
            keyStartT.close();
        }
    }

    /** A cache for {@code keyStart.length} sequences of at most maxT slots each (padding included). */
    public BatchKvCache newBatchKvCache(int[] keyStart, int maxT) { return new BatchKvCache(keyStart, maxT); }

    /** The id {@link #forwardCachedBatch} takes for "no token here" (a finished sequence's slot). */
    public static final int NO_TOKEN = -1;

    /**
     * {@link #forwardCached} for a batch: tokens[b] (all of one length n) fill slots [pos0, pos0+n) of
     * sequence b. Slots before its keyStart are padding (any id; masked as keys, outputs unused); id
     * {@link #NO_TOKEN} marks a slot with no token (a sequence that has finished while others go on:
     * its K/V and logits are computed and never read). Appends the K/V and returns the last slot's
     * logits of every sequence, (B, V) row-major. With one sequence and keyStart 0 it runs
     * {@link #forwardCached}'s ops on the same shapes.
     */
    public float[] forwardCachedBatch(int[][] tokens, int pos0, BatchKvCache cache, LoraAdapter lora) {
        int B = cache.batch, C = c.hiddenSize(), I = c.intermediateSize(), qd = c.qDim();
        if (closed) throw new IllegalStateException("LlamaModel is closed");
        if (tokens.length != B) throw new IllegalArgumentException("forwardCachedBatch: " + tokens.length + " token rows for a cache of " + B + " sequences");
        int n = tokens[0].length;
        if (n == 0) throw new IllegalArgumentException("forwardCachedBatch needs at least one token per sequence");
        for (int b = 0; b < B; b++)
            if (tokens[b].length != n) throw new IllegalArgumentException("forwardCachedBatch: sequence " + b + " has " + tokens[b].length + " tokens, sequence 0 has " + n);
        if (pos0 < 0 || pos0 + n > cache.maxT) throw new IllegalArgumentException("slots [" + pos0 + ", " + (pos0 + n) + ") exceed the KV cache of " + cache.maxT);
        DType dt = be.computeType();
        float eps = c.rmsNormEps();
        int N = n * B;
        int[] ids0 = new int[N], pos = new int[N];
        for (int t = 0; t < n; t++)
            for (int b = 0; b < B; b++) { // time-major rows t·B + b, as the cache
                int id = tokens[b][t], p = pos0 + t - cache.keyStart[b];
                boolean real = id != NO_TOKEN && p >= 0;
                if (real && p >= ropeMaxPos)
                    throw new IllegalArgumentException("forwardCachedBatch: sequence " + b + " reaches position " + p + ", past the RoPE table of " + ropeMaxPos);
                ids0[t * B + b] = id == NO_TOKEN ? 0 : id;
                pos[t * B + b] = real ? p : 0;
            }
        Tensor ids = be.fromInts(ids0, N), positions = be.fromInts(pos, N);
        Tensor x = be.empty(dt, N, C), xn = be.empty(dt, N, C), rstd = be.empty(DType.F32, N), tmp = be.empty(dt, N, C);
        Tensor q = be.empty(dt, N, qd), att = be.empty(dt, N, qd), g = be.empty(dt, N, I), u = be.empty(dt, N, I), h = be.empty(dt, N, I);
        Tensor ones = be.empty(dt, N, 1);
        be.fill(ones, 1f);
        be.embedding(x, ids, w.embed);
        for (int l = 0; l < c.numLayers(); l++) {
            LlamaWeights.Layer lw = w.layers[l];
            be.rmsNorm(xn, rstd, x, lw.attnNorm(), eps);
            Tensor kNew = cache.k[l].rows(pos0 * B, N), vNew = cache.v[l].rows(pos0 * B, N);
            denseLinear(q, xn, l, Projection.Q, lora, ones);
            denseLinear(kNew, xn, l, Projection.K, lora, ones);
            denseLinear(vNew, xn, l, Projection.V, lora, ones);
            be.ropeQK(q, kNew, positions, ropeCos, ropeSin, c.numHeads(), c.numKvHeads(), c.headDim(), false);
            if (c.hasSlidingWindow())
                be.attentionCachedBatch(att, q, cache.k[l], cache.v[l], cache.keyStartT, B, pos0, c.numHeads(), c.numKvHeads(), c.headDim(), attnScale, c.slidingWindow());
            else be.attentionCachedBatch(att, q, cache.k[l], cache.v[l], cache.keyStartT, B, pos0, c.numHeads(), c.numKvHeads(), c.headDim(), attnScale);
            denseLinear(tmp, att, l, Projection.O, lora, ones);
            be.addRmsNorm(x, xn, rstd, tmp, lw.ffnNorm(), eps);
            denseLinear(g, xn, l, Projection.GATE, lora, ones);
            denseLinear(u, xn, l, Projection.UP, lora, ones);
            be.swiglu(h, g, u);
            denseLinear(tmp, h, l, Projection.DOWN, lora, ones);
            be.axpy(x, 1f, tmp);
        }
        Tensor lastX = x.rows((n - 1) * B, B), lastN = xn.rows(0, B);
        be.rmsNorm(lastN, rstd.rows(0, B), lastX, w.finalNorm, eps);
        Tensor logits = be.empty(dt, B, c.vocabSize());
        be.matmul(logits, lastN, false, w.head, true, 1, 0);
        float[] out = be.toFloats(logits);
        for (Tensor t : new Tensor[] {ids, positions, x, xn, rstd, tmp, q, att, g, u, h, ones, logits}) t.close();
        return out;
    }

    private void denseLinear(Tensor y, Tensor x, int l, Projection p, LoraAdapter lora, Tensor ones) {
        int n = x.dim(0), out = p.outDim(c);
        be.matmul(y, x, false, w.layers[l].weight(p), true, 1, 0);
        Tensor bias = w.layers[l].bias(p);
        if (bias != null) be.matmul(y, ones, false, bias.reshape(1, out), false, 1, 1);
        LoraAdapter.Lora lo = lora == null ? null : lora.get(l, p);
        if (lo != null) {
            Tensor U = be.empty(be.computeType(), n, lo.rank());
            be.matmul(U, x, false, lo.ac(), true, 1, 0);
            be.matmul(y, U, false, lo.bc(), true, lora.scaling(), 1);
            U.close();
        }
    }
}
