package org.sparselora.actors.pipeline;

/**
 * Builds (or loads from the on-disk cache) the SVD predictor of a base model. Called at most once
 * per {@link #cacheKey()} per process ({@link PredictorCache}); may take minutes, so it runs on the
 * blocking dispatcher and reports progress.
 */
public interface PredictorBuilder {

    /** Same key = same factors (base model identity + rank). */
    String cacheKey();

    PredictorFactors build(ProgressListener progress) throws Exception;

    /** Build progress: {@code fraction} in [0,1], e.g. ("svd", 0.25, "layer 8/32"), or negative for a note without one. */
    @FunctionalInterface
    interface ProgressListener {
        void progress(String stage, double fraction, String message);
    }
}
