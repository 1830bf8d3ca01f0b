package org.sparselora.engine.train;

import org.sparselora.engine.model.Batch;

/**
 * One device's share of data-parallel LoRA training, the unit a Stepper actor drives. A step is
 * {@link #computeGradients} on every worker, an all-reduce of {@link #gradientsToHost()} (summed),
 * {@link #gradientsFromHost} with the sum, then {@link #applyUpdate} with the global output-token
 * count. With one worker the host round trip is skipped.
 */
public interface TrainingWorker extends AutoCloseable {

    /** Forward + backward; the LoRA gradients (sums over this batch's output tokens) stay inside.
     *  {@code sparse} says whether SparseLoRA's sparsity applies to this step (dense warm-up = false). */
    StepResult computeGradients(Batch batch, int step, boolean sparse);

    /** The held LoRA gradients, in a fixed canonical order. */
    float[][] gradientsToHost();

    /** Replace the held gradients (after an all-reduce). Same order and sizes as {@link #gradientsToHost()}. */
    void gradientsFromHost(float[][] grads);

    /** Scale gradients by 1/totalOutputTokens, clip by global norm, AdamW at the scheduled
     *  learning rate for {@code step} (0-based); returns that learning rate. */
    float applyUpdate(int step, long totalOutputTokens);

    TrainerState state();

    void restore(TrainerState state);

    @Override
    default void close() {}
}
