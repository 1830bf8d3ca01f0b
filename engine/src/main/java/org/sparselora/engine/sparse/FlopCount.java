package org.sparselora.engine.sparse;

import java.util.EnumSet;
import java.util.Set;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.SparsePlan;

/**
 * The one FLOP model of a training step (forward + backward), exactly as {@code LlamaModel} executes
 * it: the figures behind SparseLoRA's "fewer FLOPs" claim, the {@code flops, dense_flops,
 * predictor_flops} of {@code metrics.jsonl}, the benchmarks' GFLOP/s and calibration's prices.
 * A multiply-add counts 2. What is counted:
 * <ul>
 *   <li>frozen linears: forward {@code 2·in·out} per token and backward {@code 2·in·out} for dX
 *       only (frozen: no weight gradient). On sparse tokens of a sparse projection both run on the
 *       kept slice; with {@code frozen_grad: cut} the backward through the slice is skipped (a
 *       projection the plan leaves dense runs its full backward on every token). Layer 0's q/k/v
 *       input gradient is not computed (it could only reach the frozen embedding).</li>
 *   <li>LoRA on the targeted linears, always dense: forward {@code 2·r·(in+out)}, backward dA, dB,
 *       dU and dX (dX skipped where the frozen dX is).</li>
 *   <li>attention: {@code 4·D} per query head per visible query–key pair forward (QKᵀ and P·V),
 *       twice that backward; visible = causal, not padding, and inside the sliding window if the
 *       config has one.</li>
 *   <li>the LM head (frozen): {@code 2·C·V} forward and again backward per output token (the model
 *       computes logits for the output tokens only; no head weight gradient).</li>
 *   <li>the predictor: measured ({@link SparsePlanner.Step#predictorFlops()}) or priced by
 *       {@link #mlpPredictor} / {@link #attentionPredictor}.</li>
 * </ul>
 * Norms, RoPE, SiLU and the loss are O(N·C) and left out (below 0.1% at these shapes).
 *
 * <p>Two entry points share one counting core: {@link #executed} counts the kept channels of an
 * actual {@link SparsePlan} (training metrics, benchmarks); {@link #sparse} counts them from a
 * config's ratios with no plan or device tensors, so calibration can price candidate configs before
 * running them. The same kept counts give the same figure either way.
 */
public final class FlopCount {

    /** LoRA's shape for counting: rank and which projections carry an adapter. */
    public record Lora(int rank, Set<Projection> targets) {
        /** No LoRA at all (a plain frozen forward/backward). */
        public static final Lora NONE = new Lora(0, EnumSet.noneOf(Projection.class));

        public Lora {
            if (rank < 0) throw new IllegalArgumentException("LoRA rank must be >= 0, got " + rank);
            targets = targets.isEmpty() ? EnumSet.noneOf(Projection.class) : EnumSet.copyOf(targets);
        }

        public static Lora qkvo(int rank) { return new Lora(rank, EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O)); }

        public static Lora all(int rank) { return new Lora(rank, EnumSet.allOf(Projection.class)); }

        /** The shape of an adapter's config; null = no LoRA. */
        public static Lora of(LoraConfig c) { return c == null ? NONE : new Lora(c.r(), c.targets()); }
    }

    /**
     * @param flops          executed (frozen on kept slices + LoRA + attention + head + predictor)
     * @param denseFlops     the same step with no sparsity (and no predictor)
     * @param predictorFlops the predictor's share of {@code flops}
     */
    public record Step(long flops, long denseFlops, long predictorFlops) {
        public double reduction() { return flops == 0 ? 1 : (double) denseFlops / flops; }
    }

    /** Kept channels of projection p in one layer: output rows (q, k, v, gate, up) or input columns (o, down); -1 = dense. */
    @FunctionalInterface
    interface Kept {
        long of(int layer, Projection p);

        Kept DENSE = (layer, p) -> -1;
    }

    private FlopCount() {}

    /** A dense step (plain LoRA, or a warm-up step). */
    public static Step dense(LlamaConfig c, Lora lora, Batch batch) {
        long d = common(c, lora, batch) + frozen(c, Kept.DENSE, 0, batch.tokenCount(), SparsePlan.FrozenGrad.SLICED);
        return new Step(d, d, 0);
    }

    /**
     * A step that ran {@code sparseTokens} tokens on the kept slices of {@code sparsity} and
     * {@code denseTokens} densely (priced from the config: no plan needed).
     */
    public static Step sparse(LlamaConfig c, Lora lora, Batch batch, SparsityConfig.Resolved sparsity,
                              int sparseTokens, int denseTokens, SparsePlan.FrozenGrad frozenGrad, long predictorFlops) {
        if (sparseTokens + denseTokens != batch.tokenCount())
            throw new IllegalArgumentException("sparse + dense tokens = " + (sparseTokens + denseTokens) + " but the batch has " + batch.tokenCount());
        return step(c, lora, batch, kept(c, sparsity), sparseTokens, frozenGrad, predictorFlops);
    }

    /**
     * The frozen linears' FLOPs (forward + input gradient) of one step, over the projections in
     * {@code kinds} only, priced from a config's ratios ({@code sparsity} null: dense): the per-kind
     * figures of {@code sparsity check}.
     */
    public static long frozen(LlamaConfig c, SparsityConfig.Resolved sparsity, Set<Projection> kinds,
                              long sparseTokens, long denseTokens, SparsePlan.FrozenGrad frozenGrad) {
        if (kinds.isEmpty()) return 0;
        return frozen(c, sparsity == null ? Kept.DENSE : kept(c, sparsity), sparseTokens, denseTokens, frozenGrad, EnumSet.copyOf(kinds));
    }

    /** Kept channels per layer and projection from a config's ratios. */
    private static Kept kept(LlamaConfig c, SparsityConfig.Resolved sparsity) {
        int group = c.numHeads() / c.numKvHeads();
        return (layer, p) -> switch (p) {
            case GATE, UP, DOWN -> sparsity.mlpSparse(layer) ? sparsity.keptMlp(layer) : -1;
            case K, V -> sparsity.attentionSparse(layer) ? sparsity.keptKv(layer) : -1;
            case Q, O -> sparsity.attentionSparse(layer) ? (long) sparsity.keptKv(layer) * group : -1;
        };
    }

    /**
     * The step {@code plan} describes (null, or no sparse tokens = dense), with the predictor's
     * measured FLOPs added.
     */
    public static Step executed(LlamaConfig c, Lora lora, Batch batch, SparsePlan plan, long predictorFlops) {
        boolean sparse = plan != null && plan.sparseTokens() != null && plan.sparseTokens().numel() > 0;
        if (!sparse) {
            Step d = dense(c, lora, batch);
            return predictorFlops == 0 ? d : new Step(d.flops() + predictorFlops, d.denseFlops(), predictorFlops);
        }
        if (plan.layers().length != c.numLayers())
            throw new IllegalArgumentException("plan has " + plan.layers().length + " layers, the model " + c.numLayers());
        Kept kept = (layer, p) -> {
            SparsePlan.LayerPlan lp = plan.layers()[layer];
            if (lp == null) return -1;
            Tensor t = switch (p) {
                case Q -> lp.q(); case K -> lp.k(); case V -> lp.v(); case O -> lp.o();
                case GATE, UP, DOWN -> lp.mlp();
            };
            return t == null ? -1 : t.numel();
        };
        return step(c, lora, batch, kept, plan.sparseTokens().numel(), plan.frozenGrad(), predictorFlops);
    }

    private static Step step(LlamaConfig c, Lora lora, Batch batch, Kept kept, long sparseTokens,
                             SparsePlan.FrozenGrad fg, long predictorFlops) {
        long common = common(c, lora, batch);
        long n = batch.tokenCount();
        long dense = common + frozen(c, Kept.DENSE, 0, n, SparsePlan.FrozenGrad.SLICED);
        long actual = common + frozen(c, kept, sparseTokens, n - sparseTokens, fg) + predictorFlops;
        return new Step(actual, dense, predictorFlops);
    }

    /** Frozen linears, forward + backward (dX), over all layers. */
    static long frozen(LlamaConfig c, Kept kept, long sparseTokens, long denseTokens, SparsePlan.FrozenGrad fg) {
        return frozen(c, kept, sparseTokens, denseTokens, fg, EnumSet.allOf(Projection.class));
    }

    private static long frozen(LlamaConfig c, Kept kept, long sparseTokens, long denseTokens, SparsePlan.FrozenGrad fg,
                               Set<Projection> projections) {
        long total = 0;
        long n = sparseTokens + denseTokens;
        for (int layer = 0; layer < c.numLayers(); layer++)
            for (Projection p : projections) {
                long in = p.inDim(c), out = p.outDim(c), full = in * out;
                long k = kept.of(layer, p);
                boolean dx = needDx(layer, p);
                if (k < 0) { // dense on every token, full backward
                    total += 2 * n * full * (dx ? 2 : 1);
                    continue;
                }
                long slice = p == Projection.O || p == Projection.DOWN ? k * out : in * k;
                total += 2 * (denseTokens * full + sparseTokens * slice);
                if (dx) total += 2 * (denseTokens * full + (fg == SparsePlan.FrozenGrad.CUT ? 0 : sparseTokens * slice));
            }
        return total;
    }

    /** Predictor FLOPs of one MLP selection: gate and up estimates, rank r, of {@code sequences} sequence means. */
    public static long mlpPredictor(LlamaConfig c, int rank, int sequences) {
        return 2L * 2L * sequences * rank * ((long) c.hiddenSize() + c.intermediateSize());
    }

    /** Predictor FLOPs of one attention selection: q, k and v estimates, rank r, over {@code tokens} tokens. */
    public static long attentionPredictor(LlamaConfig c, int rank, int tokens) {
        long h = c.hiddenSize();
        return 2L * tokens * rank * ((h + c.qDim()) + 2 * (h + c.kvDim()));
    }

    /** Layer 0's q/k/v input gradient would only reach the frozen embedding: the model skips it. */
    static boolean needDx(int layer, Projection p) { return layer > 0 || !(p == Projection.Q || p == Projection.K || p == Projection.V); }

    /** LoRA, attention and the head: the same for dense and sparse steps. */
    static long common(LlamaConfig c, Lora lora, Batch batch) {
        long n = batch.tokenCount();
        long loraTotal = 0;
        for (int layer = 0; layer < c.numLayers(); layer++)
            for (Projection p : lora.targets()) {
                long in = p.inDim(c), out = p.outDim(c), r = lora.rank();
                loraTotal += 2L * n * r * (in + out);                                  // x·Aᵀ, ·Bᵀ
                loraTotal += 2L * n * r * (2 * out + in + (needDx(layer, p) ? in : 0)); // dB, dU, dA, dX
            }
        long attn = 3 * attentionForward(c, batch) * c.numLayers(); // forward + backward (2×)
        long head = 2 * 2L * batch.outputTokenCount() * c.hiddenSize() * c.vocabSize(); // logits + the head's input gradient
        return loraTotal + attn + head;
    }

    /** One layer's attention forward: 2·(QKᵀ + PV) over the visible query–key pairs of every sequence and head. */
    static long attentionForward(LlamaConfig c, Batch b) {
        long pairs = 0;
        for (int s = 0; s < b.batch(); s++) {
            long t = b.seqLen() - Math.min(b.seqLen(), Math.max(0, b.keyStart()[s]));
            pairs += visiblePairs(t, c.slidingWindow());
        }
        return 2L * 2L * pairs * c.numHeads() * c.headDim();
    }

    /** Query–key pairs a causal attention over t tokens sees: query i sees min(i+1, window) keys (window ≤ 0 = none). */
    static long visiblePairs(long t, long window) {
        if (window <= 0 || window >= t) return t * (t + 1) / 2;
        return window * (window + 1) / 2 + (t - window) * window;
    }
}
