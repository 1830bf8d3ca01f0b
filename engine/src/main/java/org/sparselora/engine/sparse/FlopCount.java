package org.sparselora.engine.sparse;

import java.util.EnumSet;
import java.util.Set;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.train.Batch;

/**
 * FLOP accounting for one training step (forward + backward), the figures behind SparseLoRA's
 * "fewer FLOPs" claim and the {@code flops, dense_flops, predictor_flops} of {@code metrics.jsonl}.
 * A multiply-add counts 2. What is counted:
 * <ul>
 *   <li>frozen linears: forward {@code 2·in·out} per token and backward {@code 2·in·out} for dX
 *       only (frozen: no weight gradient). On sparse tokens both run on the kept slice; with
 *       {@code frozen_grad: cut} the backward through the slice is skipped. Layer 0's q/k/v input
 *       gradient is not computed (it could only reach the frozen embedding).</li>
 *   <li>LoRA on the targeted linears, always dense: forward {@code 2·r·(in+out)}, backward dA, dB,
 *       dU and dX (dX skipped where the frozen dX is).</li>
 *   <li>attention: {@code 4·D} per query head per visible (causal, non-padding) query–key pair
 *       forward (QKᵀ and P·V), twice that backward.</li>
 *   <li>the LM head (frozen): {@code 2·C·V} forward and again backward per head token (the model
 *       computes logits for the output tokens only, so callers pass the output-token count).</li>
 *   <li>the predictor, as measured by {@link SparsePlanner.Step#predictorFlops()}.</li>
 * </ul>
 * Norms, RoPE, SiLU and the loss are O(N·C) and left out (below 0.1% at these shapes).
 *
 * <p>This counts from a config (kept counts via {@link SparsityConfig.Resolved}), with no plan or
 * device tensors, so calibration can price candidate configs before running them; it follows the
 * same conventions as the model's executed-plan counter.
 */
public final class FlopCount {

    /** The seven linears of a Llama block. */
    public enum Linear { Q, K, V, O, GATE, UP, DOWN }

    /** LoRA's shape: rank and which linears carry an adapter. */
    public record Lora(int rank, Set<Linear> targets) {
        public static Lora qkvo(int rank) { return new Lora(rank, EnumSet.of(Linear.Q, Linear.K, Linear.V, Linear.O)); }

        public static Lora all(int rank) { return new Lora(rank, EnumSet.allOf(Linear.class)); }
    }

    /**
     * @param flops          executed (frozen on kept slices + LoRA + attention + head + predictor)
     * @param denseFlops     the same step with no sparsity (and no predictor)
     * @param predictorFlops the predictor's share of {@code flops}
     */
    public record Step(long flops, long denseFlops, long predictorFlops) {
        public double reduction() { return flops == 0 ? 1 : (double) denseFlops / flops; }
    }

    private FlopCount() {}

    static long in(LlamaConfig c, Linear l) {
        return switch (l) {
            case Q, K, V, GATE, UP -> c.hiddenSize();
            case O -> c.qDim();
            case DOWN -> c.intermediateSize();
        };
    }

    static long out(LlamaConfig c, Linear l) {
        return switch (l) {
            case Q -> c.qDim();
            case K, V -> c.kvDim();
            case O, DOWN -> c.hiddenSize();
            case GATE, UP -> c.intermediateSize();
        };
    }

    /** in·out of a linear with the kept channel counts of one sparse layer (kept MLP channels kI, kept KV channels kKv). */
    static long keptMacs(LlamaConfig c, Linear l, long kI, long kKv) {
        long group = c.numHeads() / c.numKvHeads();
        long h = c.hiddenSize();
        return switch (l) {
            case Q -> h * kKv * group;
            case K, V -> h * kKv;
            case O -> kKv * group * h;
            case GATE, UP -> h * kI;
            case DOWN -> kI * h;
        };
    }

    /** A dense step (plain LoRA, or a warm-up step). */
    public static Step dense(LlamaConfig c, Lora lora, Batch batch, int headTokens) {
        long d = common(c, lora, batch, headTokens) + frozen(c, null, batch.tokenCount(), 0, SparsePlan.FrozenGrad.SLICED);
        return new Step(d, d, 0);
    }

    /**
     * A step that ran {@code sparseTokens} tokens on the kept slices of {@code sparsity} and
     * {@code denseTokens} densely.
     */
    public static Step sparse(LlamaConfig c, Lora lora, Batch batch, int headTokens, SparsityConfig.Resolved sparsity,
                              int sparseTokens, int denseTokens, SparsePlan.FrozenGrad frozenGrad, long predictorFlops) {
        if (sparseTokens + denseTokens != batch.tokenCount())
            throw new IllegalArgumentException("sparse + dense tokens = " + (sparseTokens + denseTokens) + " but the batch has " + batch.tokenCount());
        long common = common(c, lora, batch, headTokens);
        long dense = common + frozen(c, null, batch.tokenCount(), 0, SparsePlan.FrozenGrad.SLICED);
        long actual = common + frozen(c, sparsity, sparseTokens, denseTokens, frozenGrad) + predictorFlops;
        return new Step(actual, dense, predictorFlops);
    }

    /** Frozen linears, forward + backward (dX), over all layers. */
    static long frozen(LlamaConfig c, SparsityConfig.Resolved sp, long sparseTokens, long denseTokens, SparsePlan.FrozenGrad fg) {
        long total = 0;
        for (int layer = 0; layer < c.numLayers(); layer++) {
            long kI = sp == null ? c.intermediateSize() : sp.keptMlp(layer);
            long kKv = sp == null ? c.kvDim() : sp.keptKv(layer);
            for (Linear l : Linear.values()) {
                long full = in(c, l) * out(c, l);
                long kept = keptMacs(c, l, kI, kKv);
                long fwd = 2 * (denseTokens * full + sparseTokens * kept);
                long bwd = 2 * (denseTokens * full + (fg == SparsePlan.FrozenGrad.CUT ? 0 : sparseTokens * kept));
                total += fwd + (needDx(layer, l) ? bwd : 0);
            }
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
    static boolean needDx(int layer, Linear l) { return layer > 0 || !(l == Linear.Q || l == Linear.K || l == Linear.V); }

    /** LoRA, attention and the head: the same for dense and sparse steps. */
    static long common(LlamaConfig c, Lora lora, Batch batch, int headTokens) {
        long n = batch.tokenCount();
        long loraTotal = 0;
        for (int layer = 0; layer < c.numLayers(); layer++)
            for (Linear l : lora.targets()) {
                long in = in(c, l), out = out(c, l), r = lora.rank();
                loraTotal += 2L * n * r * (in + out);                                  // x·Aᵀ, ·Bᵀ
                loraTotal += 2L * n * r * (2 * out + in + (needDx(layer, l) ? in : 0)); // dB, dU, dA, dX
            }
        long pairs = 0;
        for (int b = 0; b < batch.batch(); b++) {
            long len = batch.seqLen() - batch.keyStart()[b];
            pairs += len * (len + 1) / 2;
        }
        long attn = 3 * 4L * pairs * c.headDim() * c.numHeads() * c.numLayers();
        long head = 2 * 2L * headTokens * c.hiddenSize() * c.vocabSize();
        return loraTotal + attn + head;
    }
}
