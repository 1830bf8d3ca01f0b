package org.sparselora.engine.sparse;

import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LayerSelector;
import org.sparselora.engine.model.SparsePlan;

/**
 * Produces the {@link SparsePlan} of a sparse training step (the SVD predictor + channel selection
 * live behind this). The trainer ({@code LoraTrainer}) asks it only on steps whose {@code sparse} flag is set.
 */
public interface StepPlanner {

    /** The plan for this batch at this (0-based) step; null = run this step dense. */
    SparsePlan plan(Batch batch, int step);

    /** FLOPs the planner spent on the last plan (predictor GEMMs); 0 if not counted. Read after the backward:
     *  a planner with a {@link #selector()} chooses (and spends) during the forward. */
    default long lastPredictorFlops() { return 0; }

    /**
     * The selector that fills the last plan's layer entries during the forward, right after each
     * layer's norm (SparseLoRA selects from the layer's own input); null when {@link #plan} returns
     * complete plans.
     */
    default LayerSelector selector() { return null; }

    /**
     * Whether a step with this planner's plans may be recorded and replayed (a CUDA graph): the
     * selection must not read device values on the host (e.g. workers exchanging channel scores
     * through the host may not). Plans given complete are told apart by their index tensors
     * (identity), so a planner that makes new tensors per step is simply never replayed.
     */
    default boolean recordable() { return true; }

    /**
     * Asks the planner to grow each step's dense token group to a multiple of {@code tokens} (0 =
     * off) so steps of real data share shapes ({@code TokenSplit#of(Batch, boolean, double, long, int)});
     * the trainer asks when it records steps. A planner may ignore it.
     */
    default void bucketDenseTokens(int tokens) {}

    /** The last plan is no longer needed (after the backward): its device tensors may be freed. */
    default void release() {}
}
