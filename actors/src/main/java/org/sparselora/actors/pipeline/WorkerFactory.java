package org.sparselora.actors.pipeline;

import org.sparselora.engine.train.TrainingWorker;

/**
 * Creates the TrainingWorker a Stepper drives. Called on the Stepper's own pinned thread, so a GPU
 * context created here stays bound to the thread that uses it. Every call must produce a worker with
 * the same initial adapter (deterministic from the job's seed); the supervisor still aligns all
 * replicas with the first worker's state before step 0.
 */
public interface WorkerFactory {

    /** @param worker this worker's index in [0, workers) (e.g. its GPU ordinal) */
    TrainingWorker create(int worker, int workers) throws Exception;

    /** Hand the SVD predictor to a worker before its first sparse step (called on the worker's thread). */
    void attachPredictor(TrainingWorker worker, PredictorFactors factors);

    /**
     * Called on the worker's thread before each step it runs, with the supervisor's generation
     * (workers in other JVMs tag their channel scores with it, so a restarted job never mixes in
     * scores of a step it abandoned). Nothing to do for workers of one JVM.
     */
    default void beginStep(TrainingWorker worker, long generation, int step) {}
}
