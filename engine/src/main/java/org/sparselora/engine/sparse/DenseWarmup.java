package org.sparselora.engine.sparse;

/**
 * SparseLoRA's step schedule, the one both the engine's planner and the actor pipeline follow: the
 * first {@code start_step·T} steps train densely (the adapter settles before the frozen path is
 * approximated), then steps in {@code [start_step·T, end_step·T)} run sparse, and any steps after
 * {@code end_step·T} are dense again. A config that can make nothing sparse (mode {@code dense}, or
 * no ratio above 0) is dense throughout, and a run on it needs no predictor. Steps are 0-based;
 * the boundaries are computed once, here.
 *
 * @param firstSparseStep first sparse step: ceil(start·T)
 * @param endSparseStep   one past the last sparse step: ceil(end·T); equal to the first when nothing is sparse
 */
public record DenseWarmup(int totalSteps, int firstSparseStep, int endSparseStep) {

    public DenseWarmup {
        if (totalSteps < 0) throw new IllegalArgumentException("totalSteps = " + totalSteps + " is negative");
        if (!(0 <= firstSparseStep && firstSparseStep <= endSparseStep && endSparseStep <= totalSteps))
            throw new IllegalArgumentException("need 0 <= first sparse step <= end <= " + totalSteps + ", got ["
                    + firstSparseStep + ", " + endSparseStep + ")");
    }

    /** The schedule of {@code config} over a run of {@code totalSteps} steps. */
    public static DenseWarmup of(SparsityConfig config, int totalSteps) {
        if (!config.anySparseLayer()) return dense(totalSteps);
        return of(config.startStep(), config.endStep(), totalSteps);
    }

    /** Sparse on {@code [start·T, end·T)}; {@code 0 <= start <= end <= 1}. */
    public static DenseWarmup of(double startStep, double endStep, int totalSteps) {
        if (!(startStep >= 0 && startStep <= endStep && endStep <= 1))
            throw new IllegalArgumentException("need 0 <= start_step <= end_step <= 1, got start_step = "
                    + startStep + ", end_step = " + endStep);
        if (totalSteps < 0) throw new IllegalArgumentException("totalSteps = " + totalSteps + " is negative");
        return new DenseWarmup(totalSteps, boundary(startStep, totalSteps), boundary(endStep, totalSteps));
    }

    /** Every step dense. */
    public static DenseWarmup dense(int totalSteps) { return new DenseWarmup(totalSteps, totalSteps, totalSteps); }

    /** ceil(f·T). The 1e-9 slack absorbs binary rounding (0.1·30 = 3.0000000000000004, 0.05·100 = 5.000000000000001). */
    private static int boundary(double fraction, int totalSteps) {
        return Math.min(totalSteps, (int) Math.ceil(fraction * totalSteps - 1e-9));
    }

    public boolean sparseAt(int step) { return step >= firstSparseStep && step < endSparseStep; }

    public int sparseStepCount() { return endSparseStep - firstSparseStep; }

    /** Whether any step is sparse (the run then needs the predictor). */
    public boolean anySparse() { return firstSparseStep < endSparseStep; }
}
