package org.sparselora.engine.model;

import org.sparselora.engine.backend.Tensor;

/**
 * Sees (and may replace) the frozen sliced outputs of the sparse tokens before they are re-joined:
 * (n_s, k) for the output-sliced projections (q/k/v/gate/up), (n_s, out) for o/down. Tests inject
 * one ({@code LlamaModel.observeFrozenSparse}) to compare paths; a step with one is never recorded.
 */
interface FrozenSparseHook {
    void apply(int layer, Projection p, Tensor ys);
}
