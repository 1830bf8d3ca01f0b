package org.sparselora.engine.model;

import org.sparselora.engine.backend.Tensor;

/**
 * The frozen part of one projection in one step, its forward next to its backward, chosen once per
 * layer per step: {@link DenseLinear} (every token on the whole weight), {@link SlicedLinear} (the
 * sparse tokens on the kept slice, token groups gathered and scattered) or {@link RowBlockLinear}
 * (the same with the groups' rows read and written in place). The LoRA branch is not part of it
 * ({@link LoraBranch}); a projection's forward is the frozen part, then LoRA's.
 */
interface FrozenLinear {

    /** y (N,out) = x·Wᵀ (+ bias) on every token, pruned outputs of the sparse tokens 0; x (N,in). */
    void forward(Activations a, Tensor y, Tensor x);

    /**
     * dx (N,in) = (accumulate: +=) the frozen path's input gradient from dy (N,out); x is the
     * forward's input (what a trainable weight's gradient reads).
     */
    void backward(Activations a, Tensor dx, boolean accumulate, Tensor dy, Tensor x);
}
