package org.sparselora.actors.pipeline;

/**
 * The SVD predictor's factors for one base model, built once and shared read-only by every
 * Stepper of every job on that model. Opaque to the actors: the engine's implementation carries the
 * per-layer P/Q matrices; the WorkerFactory hands them to its workers.
 */
public interface PredictorFactors {
    /** Identifies the base model (and rank) the factors belong to; the cache key. */
    String cacheKey();

    /**
     * A hash of the factors' values: two nodes that built the factors from the same weights agree on
     * it (workers in other JVMs build their own and check it against the coordinator's).
     */
    default String fingerprint() { return cacheKey(); }
}
