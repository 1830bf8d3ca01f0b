package org.sparselora.engine.model;

import org.sparselora.engine.backend.Tensor;

/**
 * What SparseLoRA decided for one step, on the device: which tokens run the frozen projections
 * sparsely, and per layer which channels of each frozen projection are kept. The model executes it
 * (gathered weight slices + dense GEMMs on the slice; the LoRA branch always dense on all channels);
 * {@code SvdPredictor} + {@code ChannelSelection} produce it.
 *
 * @param sparseTokens token indices (into N = B·T) whose frozen projections run on the kept slice
 *                     (the context tokens, plus the {@code sparse_output_tokens} fraction), (n_s) I32
 * @param denseTokens  the other tokens (output tokens), dense on every channel, (n_d) I32; may be null
 *                     when every token is sparse ({@code skip_output_tokens: false})
 * @param layers       one entry per decoder layer; an entry (or any of its fields) null = dense
 * @param frozenGrad   how the backward treats the frozen sliced path on sparse tokens
 */
public record SparsePlan(Tensor sparseTokens, Tensor denseTokens, LayerPlan[] layers, FrozenGrad frozenGrad) {

    /**
     * Kept channel indices for one layer, each ascending I32 on the device; null = that projection
     * is dense.
     *
     * @param mlp kept intermediate channels (k ≤ I): rows of gate_proj and up_proj, columns of down_proj
     * @param q   kept q_proj output channels (indices into Hq·D), consistent with {@code k} per GQA group
     * @param k   kept k_proj output channels (indices into Hkv·D)
     * @param v   kept v_proj output channels (indices into Hkv·D)
     * @param o   kept o_proj input columns (indices into Hq·D): for each kept v channel (g, d), (h, d)
     *            for every query head h of group g
     */
    public record LayerPlan(Tensor mlp, Tensor q, Tensor k, Tensor v, Tensor o) {
        public boolean mlpSparse() { return mlp != null; }
        public boolean attentionSparse() { return q != null || v != null; }
    }

    /** {@code sliced}: gradient flows through the kept slice (default, the paper's wording);
     *  {@code cut}: the reference's behaviour, no gradient through the frozen path on sparse tokens
     *  (only LoRA and the residual carry it). */
    public enum FrozenGrad { SLICED, CUT }
}
