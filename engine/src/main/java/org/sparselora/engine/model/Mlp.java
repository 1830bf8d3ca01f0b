package org.sparselora.engine.model;

import org.sparselora.engine.backend.Tensor;

/**
 * A layer's SwiGLU MLP in one step, y (N,C) = down(swiglu(gate(x), up(x))) (+ LoRA) of x = xn2[l],
 * its forward next to its backward, chosen once per layer per step ({@link LayerPaths#mlp}):
 * <ul>
 *   <li>{@link Kind#COMPACT}: a sparse layer whose gate/up/down carry neither LoRA nor bias — the
 *       sparse tokens run at the kept width from end to end ({@link CompactMlp},
 *       {@link CompactMlpRowBlocks});</li>
 *   <li>{@link Kind#JOINED}: a sparse layer with LoRA on the MLP — g, u, h at the full width, the
 *       token groups' frozen outputs joined into LoRA's in one swiglu pass ({@link JoinedMlp});</li>
 *   <li>{@link Kind#PROJECTED}: three projections, each its own {@link FrozenLinear} plus LoRA
 *       ({@link ProjectedMlp}) — every dense layer, and what the others fall back to.</li>
 * </ul>
 */
interface Mlp {

    /** y (N,C) = the MLP of a.xn2[l]; stashes g, u, h for the backward. */
    void forward(Activations a, Tensor y, int l);

    /** dx (N,C) = ∂/∂xn2[l] (overwritten) from dy (N,C); LoRA gradients +=. */
    void backward(Activations a, Tensor dx, Tensor dy, int l);

    Kind kind();

    enum Kind { COMPACT, JOINED, PROJECTED }
}
