package org.sparselora.engine.model;

import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;

/**
 * A projection on the whole weight for every token: y = x·Wᵀ (+ bias), dx = dy·W. The weight's own
 * gradient goes through a {@link WeightGrad}: {@link WeightGrad#FROZEN} (LoRA training: nothing) or,
 * for full-parameter training, one that accumulates dW += dyᵀ·x — the same backward either way.
 */
final class DenseLinear implements FrozenLinear {

    /** What the backward does for W given dy (N,out) and the forward's x (N,in). */
    interface WeightGrad {
        void accumulate(Tensor dy, Tensor x);

        WeightGrad FROZEN = (dy, x) -> {};
    }

    private final Backend be;
    private final Tensor W, bias;      // (out,in), (out) or null
    private final WeightGrad weightGrad;

    DenseLinear(Backend be, Tensor W, Tensor bias, WeightGrad weightGrad) {
        this.be = be;
        this.W = W;
        this.bias = bias;
        this.weightGrad = weightGrad;
    }

    @Override
    public void forward(Activations a, Tensor y, Tensor x) {
        be.matmul(y, x, false, W, true, 1, 0);
        if (bias != null) be.matmul(y, a.ones, false, bias.reshape(1, (int) bias.numel()), false, 1, 1);
    }

    @Override
    public void backward(Activations a, Tensor dx, boolean accumulate, Tensor dy, Tensor x) {
        if (dx != null) be.matmul(dx, dy, false, W, false, 1, accumulate ? 1 : 0);
        weightGrad.accumulate(dy, x);
    }
}
