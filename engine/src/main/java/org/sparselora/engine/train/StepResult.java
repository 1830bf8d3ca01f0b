package org.sparselora.engine.train;

/**
 * What one forward/backward on one worker produced. Losses and gradients are <em>sums</em> over the
 * batch's output tokens, so N workers' results add up to exactly one worker's on the union batch;
 * normalisation by the global output-token count happens at the update.
 *
 * @param lossSum        Σ cross-entropy (nats) over output tokens
 * @param flops          FLOPs actually executed (frozen + LoRA + attention + head), forward + backward
 * @param denseFlops     FLOPs the same step costs with no sparsity
 * @param predictorFlops FLOPs spent in the SVD predictor (included in {@code flops})
 */
public record StepResult(double lossSum, int outputTokens, int tokens, boolean sparse,
                         long flops, long denseFlops, long predictorFlops, double millis) {

    public double meanLoss() { return outputTokens == 0 ? 0 : lossSum / outputTokens; }
}
