package org.sparselora.engine.train;

import org.sparselora.engine.sparse.SparsePlan;

/**
 * Produces the {@link SparsePlan} of a sparse training step (the SVD predictor + channel selection
 * live behind this). {@link LoraTrainer} asks it only on steps whose {@code sparse} flag is set.
 */
public interface SparsePlanner {

    /** The plan for this batch at this (0-based) step; null = run this step dense. */
    SparsePlan plan(Batch batch, int step);

    /** FLOPs the planner spent on the last plan (predictor GEMMs); 0 if not counted. */
    default long lastPredictorFlops() { return 0; }
}
