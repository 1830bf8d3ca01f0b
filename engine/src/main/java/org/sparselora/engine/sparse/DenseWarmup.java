package org.sparselora.engine.sparse;

/**
 * The step schedule of SparseLoRA (docs/METHOD.md#schedule): the first {@code start_step·T} steps train densely
 * (the adapter settles before the frozen path is approximated), then steps in
 * {@code [start_step·T, end_step·T)} run sparse, and any steps after {@code end_step·T} are dense
 * again. Steps are 0-based.
 */
public record DenseWarmup(double startStep, double endStep, int totalSteps) {

    public DenseWarmup {
        if (totalSteps < 0) throw new IllegalArgumentException("totalSteps = " + totalSteps + " is negative");
        if (!(startStep >= 0 && startStep <= endStep && endStep <= 1))
            throw new IllegalArgumentException("need 0 <= start_step <= end_step <= 1, got start_step = "
                    + startStep + ", end_step = " + endStep);
    }

    public static DenseWarmup of(SparsityConfig config, int totalSteps) {
        return new DenseWarmup(config.startStep(), config.endStep(), totalSteps);
    }

    /** First sparse step: ceil(start·T). The 1e-9 slack absorbs binary rounding (0.1·30 = 3.0000000000000004). */
    public int firstSparseStep() { return (int) Math.ceil(startStep * totalSteps - 1e-9); }

    /** One past the last sparse step: ceil(end·T). */
    public int endSparseStep() { return (int) Math.ceil(endStep * totalSteps - 1e-9); }

    public boolean sparseAt(int step) { return step >= firstSparseStep() && step < endSparseStep(); }

    public int sparseStepCount() { return Math.max(0, endSparseStep() - firstSparseStep()); }
}
