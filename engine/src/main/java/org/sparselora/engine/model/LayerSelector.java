package org.sparselora.engine.model;

import org.sparselora.engine.backend.Tensor;

/**
 * The callback through which the model asks for a layer's channel selection during its forward.
 * SparseLoRA selects from the very input the projection reads, so the choice for layer i can only
 * be made after layer i's norms have run: the model calls {@link #attention} right after
 * {@code input_layernorm} and {@link #mlp} right after {@code post_attention_layernorm}, then runs
 * the layer with the returned plan (and keeps it for the backward). A null return means that part
 * of the layer runs dense.
 */
public interface LayerSelector {

    /** x (N, C) the input_layernorm output of layer i; returns the layer's plan with q, k, v, o set, or null. */
    SparsePlan.LayerPlan attention(int layer, Tensor attnNormOut);

    /** x (N, C) the post_attention_layernorm output of layer i; returns the layer's plan with mlp set, or null. */
    SparsePlan.LayerPlan mlp(int layer, Tensor mlpNormOut);

    /**
     * The model's device copies of the step's inputs that a selection reads, called before the
     * forward's first layer: the first key of each sequence (B) I32, and the non-padding rows (n)
     * I32 or null when no token is padding. They sit in buffers the model keeps, so a recorded step
     * reads them at the same addresses at every replay. A selector that was never bound uploads
     * its own.
     */
    default void bindInputs(Tensor keyStart, Tensor rows) {}

    /** Every layer dense (plain LoRA, and the dense warm-up steps). */
    LayerSelector DENSE = new LayerSelector() {
        @Override public SparsePlan.LayerPlan attention(int layer, Tensor x) { return null; }
        @Override public SparsePlan.LayerPlan mlp(int layer, Tensor x) { return null; }
    };
}
