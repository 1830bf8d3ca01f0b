package org.sparselora.engine.model;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.SparseOps;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.lora.LoraAdapter;

/**
 * A Llama-family decoder (Llama 2/3.x, Mistral, Qwen2) with LoRA, written once against
 * {@link Backend}, llm.c style: {@link #forward} runs the layers and stashes what {@link #backward}
 * needs ({@link Activations}); the head and cross-entropy run chunk by chunk over the output tokens
 * only (never more than a chunk × V of logits), computing dlogits and the head's backward inside the
 * same chunk. In LoRA training only the LoRA parameters get gradients (summed over output tokens,
 * accumulated into the adapter's buffers); frozen weights are read-only and have no gradient buffers.
 * In full-parameter training ({@link #prepareFullStep}, dense, no LoRA) every base weight gets its
 * gradient added into a {@link WeightGrads}: the same backward, with each piece's weight gradient on.
 *
 * <p>The layer loop is plain; what differs between steps is chosen once per layer per step, as the
 * forward reaches the layer, by strategy objects holding their forward next to their backward
 * ({@link Step.Choice}): each frozen projection is a {@link FrozenLinear} (dense, sliced on gathered
 * token groups, or on row blocks in place), q/k/v's input gradient a {@link QkvInputGrad}, the MLP an
 * {@link Mlp} (compact, joined or three projections), and the LoRA branch, always dense on every
 * channel and token, a {@link LoraBranch}. The step's decisions — token groups, kept channels, LoRA
 * — live in one {@link Step}, not in the model.
 *
 * <p>SparseLoRA: with a {@link SparsePlan}, each frozen projection that has a kept-index set runs on
 * the plan's sparse tokens as a dense GEMM on the gathered weight slice ({@link WeightSlices}:
 * gathered once per forward, reused by the backward), its outputs re-joined with the dense tokens'
 * (pruned frozen outputs are 0). Backward through the slices follows {@link SparsePlan.FrozenGrad}.
 * With a {@link LayerSelector} the plan's layer entries are filled during the forward, each right
 * after the norm whose output the selection reads (SparseLoRA selects from the layer's own input),
 * and that layer's slices are gathered and its strategies chosen then.
 *
 * <p>A training step is split into its host part ({@link #prepareStep}: checks, uploads of the batch,
 * the token split and the selector's inputs into buffers the model keeps, shape buckets) and its
 * device part ({@link #queueForward}, {@link #backward}: no host reads), then {@link #stepLoss} waits
 * for the loss; so the device part can be recorded once per {@link StepKey} and replayed as a CUDA
 * graph ({@code LoraTrainer}). {@link #bufferEpoch()} changes whenever a buffer that outlives a step
 * is made or freed, which makes recordings stale.
 *
 * <p>Activation buffers are allocated once per batch shape and reused across steps; the stash keeps
 * per layer what the backward reads, no more (see {@link Activations#bindStash}). {@link #close()}
 * gives them back. Not thread-safe: one model instance per worker thread.
 */
public final class LlamaModel implements AutoCloseable {

    private final Backend be;
    private final SparseOps sp;   // null on a backend without SparseLoRA ops (dense steps only)
    private final LlamaWeights w;
    private final LlamaConfig c;
    private final Tensor ropeCos, ropeSin; // (maxPos, D/2) F32
    private final int ropeMaxPos;
    private final float attnScale;
    /** Makes and counts the buffers that outlive a step: a recorded step is valid only while their epoch is unchanged. */
    private final KeptBuffers buffers;
    private final WeightSlices slices;     // null without SparseOps
    /** Upper bound on logits floats per cross-entropy chunk. */
    private int logitsChunkElems = 1 << 21;
    private int outputRowBucket;
    private RowBlockMode rowBlockMode = RowBlockMode.CONTIGUOUS;
    private boolean checkpointing;         // activation checkpointing: keep layer inputs, recompute layers in the backward   // callers choose others (the benchmarks: RowBlockMode.fromProperty)
    private Activations acts;
    private Step step;                     // the step being run (prepared, forwarded, or backpropagated)
    private boolean closed;

    // what tests inject to compare paths (package-private): the MLP strategies the layers may choose
    // from, the sparse MLP's kept-set padding, and an observer of the sparse tokens' frozen outputs
    Set<Mlp.Kind> mlpKinds = EnumSet.allOf(Mlp.Kind.class);
    KeptPadding keptPadding = KeptPadding.MULTIPLE_OF_8;
    FrozenSparseHook frozenHook;

    public LlamaModel(Backend be, LlamaWeights w) { this(be, w, Math.min(w.config.maxPositions(), 16384)); }

    public LlamaModel(Backend be, LlamaWeights w, int ropeMaxPos) {
        this.be = be;
        this.sp = be instanceof SparseOps ? be.sparse() : null;
        this.w = w;
        this.c = w.config;
        this.ropeMaxPos = ropeMaxPos;
        this.buffers = new KeptBuffers(be);
        this.slices = sp == null ? null : new WeightSlices(sp, w, buffers);
        RopeTables rt = new RopeTables(c, ropeMaxPos);
        this.ropeCos = be.fromFloats(rt.cos, DType.F32, ropeMaxPos, rt.half);
        this.ropeSin = be.fromFloats(rt.sin, DType.F32, ropeMaxPos, rt.half);
        this.attnScale = (float) (1.0 / Math.sqrt(c.headDim()));
        // On a device backend a chunk of a few rows would re-read the whole (V, C) head per chunk
        // (an M=16 GEMM is bound by that read): take ~1k rows at a time there. The CPU keeps small
        // chunks (memory).
        if (be.computeType() != DType.F32) this.logitsChunkElems = 1 << 27;
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
        buffers.changed();
        if (acts != null) acts.close();
        acts = null;
        step = null;
        if (slices != null) slices.close();
        ropeCos.close();
        ropeSin.close();
    }

    /** Caps the logits held at once by the chunked cross-entropy (tests use it to force several chunks). */
    public void setLogitsChunkElems(int elems) { this.logitsChunkElems = Math.max(1, elems); }

    public void setRowBlockMode(RowBlockMode mode) { this.rowBlockMode = java.util.Objects.requireNonNull(mode); }

    public RowBlockMode rowBlockMode() { return rowBlockMode; }

    /**
     * Activation checkpointing: the forward keeps only each transformer layer's input, and the
     * backward recomputes a layer's forward from it right before backpropagating through the layer
     * (one more forward pass for a stash of one (N, C) tensor per layer instead of the layer's
     * activations). Gradients are the same as without: the recompute runs the very ops, with the
     * same plan and dropout masks, on the same input.
     */
    public void setGradientCheckpointing(boolean on) {
        if (on != checkpointing && acts != null) {   // the activation set's layout changes: make it anew at the next step
            acts.close();
            acts = null;
            step = null;
        }
        this.checkpointing = on;
    }

    public boolean gradientCheckpointing() { return checkpointing; }

    /** Whether the last forward ran its sparse token group as row blocks (GEMMs in place, no token gathers). */
    public boolean usedRowBlocks() { return step != null && step.groups != null && step.groups.sBlocks != null; }

    /** Whether the last forward ran its dense token group as row blocks too. */
    public boolean usedDenseRowBlocks() { return step != null && step.groups != null && step.groups.dBlocks != null; }

    /** The MLP strategies the layers of the last forward chose (tests check which path ran). */
    List<Mlp.Kind> lastMlpKinds() { return step == null ? List.of() : step.mlpKinds(); }

    private Activations acts(int B, int T) {
        if (acts == null || acts.B != B || acts.T != T || acts.checkpointed != checkpointing) {
            if (acts != null) acts.close(); // give the old set back before allocating the new one
            acts = null;
            acts = new Activations(buffers, c, B, T, checkpointing);
        }
        return acts;
    }

    // ------------------------------------------------------------------ a training step

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
     * recorded once ({@link org.sparselora.engine.backend.GraphCapture#beginCapture()}) and replayed
     * for every later step of its key. Parts: batch shape, output rows, adapter, the token split's
     * group sizes and row-block layout, frozen-gradient mode, whether a selector fills the plan in
     * flight and over how many non-padding rows it scores, the index tensors of a plan given complete
     * (by identity), and the model's settings that shape the ops.
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
        Step s = prepare(batch, lora, plan, selector, dropoutSeed, true, outputRowBucket > 0);
        Activations a = s.a;
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
        s.outputs = n;
        boolean recordable = frozenHook == null && (lora == null || lora.config().dropout() == 0f);
        if (!recordable) return null;
        TokenGroups g = s.groups;
        List<Object> parts = new ArrayList<>(List.of(a.B, a.T, n, lora == null ? "no-lora" : lora, g == null ? 0 : g.nS, g == null ? 0 : g.nD,
                String.valueOf(g == null ? null : g.sBlocks), String.valueOf(g == null ? null : g.dBlocks), selector != null, s.realRows,
                rowBlockMode, logitsChunkElems, checkpointing));
        if (plan != null) {
            parts.add(plan.frozenGrad());
            for (SparsePlan.LayerPlan lp : plan.layers())
                if (lp != null) parts.add(Arrays.asList(lp.mlp(), lp.q(), lp.k(), lp.v(), lp.o()));   // identity of given indices
                else parts.add("-");
        }
        return new StepKey(parts);
    }

    /**
     * {@link #prepareStep} of a full-parameter step: dense, no LoRA, and the backward adds every base
     * weight's gradient (Σ over the output tokens) into {@code grads}. The key includes {@code grads}
     * (a recording writes into its tensors).
     */
    public StepKey prepareFullStep(Batch batch, WeightGrads grads) {
        java.util.Objects.requireNonNull(grads, "grads");
        StepKey k = prepareStep(batch, null, null, null, 0L);
        step.grads = grads;
        if (k == null) return null;
        List<Object> parts = new ArrayList<>(k.parts());
        parts.add(grads);
        return new StepKey(parts);
    }

    /** Queues the forward of the prepared step and the head's loss and backward (no host reads). */
    public void queueForward() {
        if (step == null || !step.prepared) throw new IllegalStateException("queueForward() needs prepareStep() first");
        step.prepared = false;
        runLayers(step);
        headLossAndBackward(step.a, step.outputs, step.grads);
        step.stashed = true;
    }

    /** Σ cross-entropy of the last step's output tokens: waits for the device (call after {@link #backward()} to wait once). */
    public double stepLoss() {
        if (step == null || step.outputs == 0) return 0;
        double sum = 0;
        for (float x : be.toFloats(acts.losses.view(0, step.outputs))) sum += x;
        return sum;
    }

    /**
     * Shape buckets for training steps of real data (0 = off), so steps whose batches differ a
     * little share one shape and one recording: the loss head's rows are padded up to a multiple of
     * {@code rows} with rows that carry no loss (an ignored target: loss 0, no gradient), and a
     * selector scores every row of its input with the padding rows zeroed
     * ({@link SparseOps#maskPaddingRows}) instead of gathering the non-padding rows, whose count
     * changes from batch to batch. Neither changes what a real token computes: padding never
     * reaches one (attention masks its keys) and gets no gradient; a selection's sums merely gain
     * exact zeros. (The planner's dense token group is bucketed by the planner.)
     */
    public void setShapeBucket(int rows) {
        if (rows < 0) throw new IllegalArgumentException("shape bucket must be ≥ 0, got " + rows);
        this.outputRowBucket = rows;
    }

    /** Changes whenever a buffer that outlives a step is made or freed; a recording is stale once it changed. */
    public long bufferEpoch() { return buffers.epoch(); }

    // ------------------------------------------------------------------ evaluation

    /** Per-token losses (0 where the target is ignored) and, when asked, all logits. */
    public record Output(double lossSum, int outputTokens, float[] tokenLosses, float[] logits) {
        public double meanLoss() { return outputTokens == 0 ? 0 : lossSum / outputTokens; }
    }

    /** Forward without gradients (scoring / evaluation). {@code logits} (N·V floats) only when asked. */
    public Output evaluate(Batch batch, LoraAdapter lora, SparsePlan plan, boolean wantLogits) {
        return evaluate(batch, lora, plan, null, wantLogits);
    }

    /** {@link #evaluate(Batch, LoraAdapter, SparsePlan, boolean)} with in-flight selection by {@code selector} (may be null). */
    public Output evaluate(Batch batch, LoraAdapter lora, SparsePlan plan, LayerSelector selector, boolean wantLogits) {
        Step s = prepare(batch, lora, plan, selector, 0L, false, false);
        s.prepared = false;
        Activations a = s.a;
        runLayers(s);
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

    // ------------------------------------------------------------------ the host part

    /** The host's part of a forward: buffers, uploads, the token split and the selector's inputs; the new current step. */
    private Step prepare(Batch batch, LoraAdapter lora, SparsePlan plan, LayerSelector selector, long seed, boolean training, boolean bucketed) {
        if (lora != null && lora.modelConfig() != c && !lora.modelConfig().equals(c))
            throw new IllegalArgumentException("LoRA adapter was built for another model config");
        if (closed) throw new IllegalStateException("LlamaModel is closed");
        for (int p : batch.positions())
            if (p < 0 || p >= ropeMaxPos) throw new IllegalArgumentException("position " + p + " outside the RoPE table of " + ropeMaxPos);
        int keepOutputs = step == null ? 0 : step.outputs;   // an evaluation leaves the training step's loss rows alone
        step = null;
        Activations a = acts(batch.batch(), batch.seqLen());
        if (plan != null && sp == null) be.sparse();         // fails, naming the backend, before anything is queued
        TokenGroups groups = TokenGroups.of(be, a, plan, c.numLayers(), rowBlockMode, frozenHook);
        be.copyFromHost(a.tokens, batch.tokens());
        be.copyFromHost(a.positions, batch.positions());
        be.copyFromHost(a.keyStart, batch.keyStart());
        boolean maskPadding = bucketed && selector != null;
        int realRows;
        if (maskPadding) {
            selector.bindInputs(a.keyStart, null);   // every row, padding zeroed before each selection
            realRows = -2;
        } else if (selector != null) {
            int[] real = batch.nonPaddingRows();
            Tensor rows = null;
            if (real.length != a.N) {
                rows = a.rows.view(0, real.length);
                be.copyFromHost(rows, real);
            }
            selector.bindInputs(a.keyStart, rows);
            realRows = real.length;
        } else {
            realRows = -1;
        }
        Step s = new Step(a, new LoraBranch(be, lora, training, seed), groups, plan, selector, training, maskPadding, realRows, c.numLayers());
        s.outputs = keepOutputs;
        s.prepared = true;
        step = s;
        return s;
    }

    // ------------------------------------------------------------------ forward

    /** The device part of a forward through the layers (no host reads: a training step may be recorded). */
    private void runLayers(Step s) {
        Activations a = s.a;
        LoraBranch lora = s.lora;
        TokenGroups g = s.groups;
        LayerSelector selector = g == null ? null : s.selector;   // a selector runs only when something is sparse
        Step.Choice choose = new Step.Choice(be, sp, w, slices, mlpKinds);
        if (w.nf4() != null) w.nf4().invalidate();   // every dequantization in this step's ops (a recorded step replays them all)
        int L = c.numLayers();
        float eps = c.rmsNormEps();
        be.embedding(a.resIn[0], a.tokens, w.embed);
        be.rmsNorm(a.xn1[0], a.rstd1[0], a.resIn[0], w.layers[0].attnNorm(), eps);
        for (int l = 0; l < L; l++) {
            LlamaWeights.Layer lw = w.layers[l];
            w.materialize(l);                        // NF4 weights: this layer's projections dequantized
            a.bindStash(l, lora.adapter, s.training, s.grads.active());
            if (g != null) g.markGathered(null);     // xn2's buffer may be shared between layers: never reuse rows across layers
            if (g != null && selector == null)       // a plan brought complete: the layer's weight slices, kept for the backward
                slices.gather(l, s.plan.layers()[l], keptPadding, Projection.values());
            if (selector != null) {                  // choose this layer's attention channels from its own input
                if (s.maskPadding) sp.maskPaddingRows(a.xn1[l], a.keyStart, a.B, a.T);
                selector.attention(l, a.xn1[l]);
                slices.gather(l, s.plan.layers()[l], keptPadding, Projection.Q, Projection.K, Projection.V, Projection.O);
            }
            choose.attention(s, l);
            attentionForward(s, l);
            // SwiGLU MLP
            if (selector != null) {                  // choose this layer's MLP channels from its own input
                selector.mlp(l, a.xn2[l]);
                slices.gather(l, s.plan.layers()[l], keptPadding, Projection.GATE, Projection.UP, Projection.DOWN);
            }
            choose.mlp(s, l);
            s.mlp[l].forward(a, a.tmpC, l);
            // residual add fused with the next layer's (or the final) norm
            boolean last = l == L - 1;
            Tensor next = last ? a.resOut : a.resIn[l + 1];
            be.addRmsNormTo(next, a.resMid[l], last ? a.xf : a.xn1[l + 1], last ? a.rstdf : a.rstd1[l + 1], a.tmpC,
                    last ? w.finalNorm : w.layers[l + 1].attnNorm(), eps);
        }
    }


    /**
     * Layer l's attention half on xn1[l] (q, k, v with their LoRA, RoPE, attention, o) and the
     * residual add fused with the MLP's norm: xn2[l] for the MLP. The strategies are chosen.
     */
    private void attentionForward(Step s, int l) {
        Activations a = s.a;
        LoraBranch lora = s.lora;
        LlamaWeights.Layer lw = w.layers[l];
        float eps = c.rmsNormEps();
        FrozenLinear[] qkvo = s.attention[l];
        // attention: q, k, v from the normed input; RoPE; causal GQA attention; o
        qkvo[0].forward(a, a.q[l], a.xn1[l]);
        lora.forward(a, a.q[l], a.xn1[l], l, Projection.Q);
        qkvo[1].forward(a, a.k[l], a.xn1[l]);
        lora.forward(a, a.k[l], a.xn1[l], l, Projection.K);
        qkvo[2].forward(a, a.v[l], a.xn1[l]);
        lora.forward(a, a.v[l], a.xn1[l], l, Projection.V);
        lora.groupForward(a, l, lora.group(l, Projection.Q, Projection.K), a.xn1[l], 1f);   // q/k/v's LoRA when fused
        be.ropeQK(a.q[l], a.k[l], a.positions, ropeCos, ropeSin, c.numHeads(), c.numKvHeads(), c.headDim(), false);
        if (c.hasSlidingWindow()) be.attention(a.att[l], a.lse[l], a.q[l], a.k[l], a.v[l], a.keyStart, a.B, a.T,
                c.numHeads(), c.numKvHeads(), c.headDim(), attnScale, c.slidingWindow());
        else be.attention(a.att[l], a.lse[l], a.q[l], a.k[l], a.v[l], a.keyStart, a.B, a.T,
                c.numHeads(), c.numKvHeads(), c.headDim(), attnScale);
        qkvo[3].forward(a, a.tmpC, a.att[l]);
        lora.forward(a, a.tmpC, a.att[l], l, Projection.O);
        // residual add fused with the MLP's norm
        be.addRmsNormTo(a.resMid[l], a.resIn[l], a.xn2[l], a.rstd2[l], a.tmpC, lw.ffnNorm(), eps);
    }

    /**
     * Activation checkpointing: layer l's forward again, from its kept input resIn[l], up to what its
     * backward reads (the layer's output is not needed): the same ops on the same input with the
     * strategies, kept channels and dropout seeds the forward chose, so the same values. (The
     * forward computed xn1[l] fused with the previous layer's residual add; rmsNorm of the stored sum
     * is the same computation.)
     */
    private void recomputeLayer(Step s, int l) {
        Activations a = s.a;
        w.materialize(l);
        a.bindStash(l, s.lora.adapter, s.training, s.grads.active());
        if (s.groups != null) s.groups.markGathered(null);
        be.rmsNorm(a.xn1[l], a.rstd1[l], a.resIn[l], w.layers[l].attnNorm(), c.rmsNormEps());
        if (s.groups != null && s.selector != null && s.maskPadding) sp.maskPaddingRows(a.xn1[l], a.keyStart, a.B, a.T);
        attentionForward(s, l);
        s.mlp[l].forward(a, a.tmpC, l);
    }

    // ------------------------------------------------------------------ head

    /** The head over the prepared output rows: per-row losses into a.losses, dlogits and the head's backward (no host reads). */
    private void headLossAndBackward(Activations a, int n, WeightGrads grads) {
        int C = c.hiddenSize(), V = c.vocabSize();
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
            grads.head(lg, xo.rows(c0, r));
            be.matmul(dxo.rows(c0, r), lg, false, w.head, false, 1, 0); // the head's backward, (r, C)
        }
        be.fill(a.dxf, 0f);
        be.scatterRows(a.dxf, dxo, idx, false);
        grads.finalNorm(a.dxf, a.resOut, a.rstdf);
        be.rmsNormBackward(a.dres, a.dxf, a.resOut, w.finalNorm, a.rstdf, false);
    }

    // ------------------------------------------------------------------ backward

    /**
     * Backward of the last {@link #forward}: adds the LoRA gradients (sums over output tokens) into the
     * adapter's buffers, or, in a full-parameter step, every weight's into the step's {@link WeightGrads}.
     */
    public void backward() {
        if (step == null || !step.stashed) throw new IllegalStateException("backward() needs a preceding forward() of a training step");
        Step s = step;
        s.stashed = false;
        Activations a = s.a;
        LoraBranch lora = s.lora;
        if (w.nf4() != null) w.nf4().invalidate();   // a recorded backward dequantizes every layer it reads
        for (int l = c.numLayers() - 1; l >= 0; l--) {
            LlamaWeights.Layer lw = w.layers[l];
            if (a.checkpointed) recomputeLayer(s, l);   // the layer's activations (and NF4 weights) from its kept input
            else w.materialize(l);                      // NF4 weights: this layer's projections dequantized
            // a.dres = ∂loss/∂(layer output); the residual passes it straight to resMid
            s.mlp[l].backward(a, a.dxn, a.dres, l);
            s.grads.ffnNorm(l, a.dxn, a.resMid[l], a.rstd2[l]);
            be.rmsNormBackward(a.dres, a.dxn, a.resMid[l], lw.ffnNorm(), a.rstd2[l], true);
            // attention
            s.attention[l][3].backward(a, a.datt, false, a.dres, a.att[l]);
            lora.backward(a, a.datt, a.dres, a.att[l], l, Projection.O);
            if (c.hasSlidingWindow()) be.attentionBackward(a.dq, a.dk, a.dv, a.datt, a.att[l], a.lse[l], a.q[l], a.k[l], a.v[l],
                    a.keyStart, a.B, a.T, c.numHeads(), c.numKvHeads(), c.headDim(), attnScale, c.slidingWindow());
            else be.attentionBackward(a.dq, a.dk, a.dv, a.datt, a.att[l], a.lse[l], a.q[l], a.k[l], a.v[l], a.keyStart,
                    a.B, a.T, c.numHeads(), c.numKvHeads(), c.headDim(), attnScale);
            be.ropeQK(a.dq, a.dk, a.positions, ropeCos, ropeSin, c.numHeads(), c.numKvHeads(), c.headDim(), true);
            // layer 0's input gradient would only reach the embedding: skip it unless the embedding trains
            Tensor dx = l > 0 || s.grads.active() ? a.dxn : null;
            // q, k, v read the same input: their frozen input gradients first (summed per token group
            // before one scatter each), then LoRA's three terms
            if (dx != null) s.qkvGrad[l].backward(a, dx);
            lora.backward(a, dx, a.dq, a.xn1[l], l, Projection.Q);
            lora.backward(a, dx, a.dk, a.xn1[l], l, Projection.K);
            lora.backward(a, dx, a.dv, a.xn1[l], l, Projection.V);
            lora.groupBackward(a, dx, l, lora.group(l, Projection.Q, Projection.K), a.xn1[l]);
            if (dx != null) {
                s.grads.attnNorm(l, a.dxn, a.resIn[l], a.rstd1[l]);
                be.rmsNormBackward(a.dres, a.dxn, a.resIn[l], lw.attnNorm(), a.rstd1[l], true);
            }
        }
        s.grads.embedding(a.dres, a.tokens);   // a.dres = ∂loss/∂(the lookup's output)
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
            w.materialize(l);
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
