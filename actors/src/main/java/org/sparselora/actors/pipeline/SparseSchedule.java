package org.sparselora.actors.pipeline;

import java.util.Map;
import org.sparselora.proto.control.SparsityConfig;

/**
 * SparseLoRA's step schedule (docs/METHOD.md#schedule): sparsity is on for 0-based steps in
 * [start_step·T, end_step·T), dense otherwise; a config with mode {@code dense} or no ratio above
 * zero is dense throughout (and needs no predictor).
 */
public record SparseSchedule(int totalSteps, int firstSparse, int endExclusive) {

    public static SparseSchedule of(SparsityConfig cfg, int totalSteps) {
        boolean any = false;
        for (Map.Entry<String, Double> e : cfg.getSparsityMap().entrySet()) any |= e.getValue() > 0;
        if (!any || cfg.getMode().isEmpty() || cfg.getMode().equals("dense")) return new SparseSchedule(totalSteps, totalSteps, totalSteps);
        // the -1e-9 keeps products like 0.05·100 = 5.000000000000001 from moving the boundary
        int first = (int) Math.ceil(cfg.getStartStep() * totalSteps - 1e-9);
        int end = (int) Math.ceil(cfg.getEndStep() * totalSteps - 1e-9);
        return new SparseSchedule(totalSteps, Math.max(0, first), Math.min(totalSteps, end));
    }

    public static SparseSchedule dense(int totalSteps) { return new SparseSchedule(totalSteps, totalSteps, totalSteps); }

    public boolean isSparse(int step) { return step >= firstSparse && step < endExclusive; }

    /** Whether any step of the job is sparse (the job then needs the predictor). */
    public boolean anySparse() { return firstSparse < endExclusive; }
}
