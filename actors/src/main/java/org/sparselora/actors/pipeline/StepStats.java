package org.sparselora.actors.pipeline;

import java.util.Arrays;
import org.sparselora.engine.train.StepResult;
import org.sparselora.proto.control.StepMetrics;

/**
 * One step's metrics row from every worker's acknowledgement: losses and token counts summed over
 * the workers' shards, FLOPs summed, sparse if any worker ran sparse, skipped if any worker
 * skipped the update (a NaN/inf loss), and the gradient aggregation's timing figures.
 */
record StepStats(StepMetrics row, boolean skipped) {

    /** @param step 0-based step; the row carries it 1-based */
    static StepStats of(int step, int totalSteps, JobSupervisor.StepApplied[] applied, double ms) {
        double lossSum = 0;
        long out = 0, tokens = 0, flops = 0, dense = 0, pred = 0;
        boolean sparse = false, skipped = false;
        for (JobSupervisor.StepApplied a : applied) {
            StepResult r = a.stats();
            lossSum += r.lossSum();
            out += r.outputTokens();
            tokens += r.tokens();
            flops += r.flops();
            dense += r.denseFlops();
            pred += r.predictorFlops();
            sparse |= r.sparse();
            skipped |= a.skipped();
        }
        AggFigures agg = aggregation(applied);
        StepMetrics row = StepMetrics.newBuilder().setStep(step + 1).setTotalSteps(totalSteps).setAggMs(agg.ms()).setAggOverlap(agg.overlap())
                .setLoss(out == 0 ? 0 : lossSum / out).setLr(applied[0].lr()).setSparse(sparse)
                .setFlops(flops).setDenseFlops(dense).setPredictorFlops(pred).setMs(ms).setTokens(tokens).setOutputTokens(out).build();
        return new StepStats(row, skipped);
    }

    /** One step's aggregation figures for metrics.jsonl. */
    record AggFigures(double ms, double overlap) {}

    /**
     * {@code agg_ms}: from the last worker's backward end to the last worker holding the sum.
     * {@code agg_overlap}: of all aggregation wall time — the part before the last backward end in
     * which some worker already copied its shard to the host (union of the intervals [backward end,
     * shard sent] clipped there), plus {@code agg_ms} — the fraction that ran while another worker
     * was still in its backward pass. The device exchange starts only when every shard is in, so its
     * overlap is 0 by design; the host path overlaps the early workers' device-to-host copies.
     */
    static AggFigures aggregation(JobSupervisor.StepApplied[] applied) {
        if (applied.length < 2) return new AggFigures(0, 0);
        long lastBackward = Long.MIN_VALUE, lastReady = Long.MIN_VALUE;
        for (JobSupervisor.StepApplied a : applied) {
            if (a.times() == null || a.times().backwardEnd() == 0) return new AggFigures(0, 0);
            lastBackward = Math.max(lastBackward, a.times().backwardEnd());
            lastReady = Math.max(lastReady, a.times().sumReady());
        }
        long after = Math.max(0, lastReady - lastBackward);
        long[][] iv = new long[applied.length][];
        for (int w = 0; w < applied.length; w++)
            iv[w] = new long[]{applied[w].times().backwardEnd(), Math.min(applied[w].times().contributed(), lastBackward)};
        Arrays.sort(iv, (x, y) -> Long.compare(x[0], y[0]));
        long before = 0, curFrom = Long.MIN_VALUE, curTo = Long.MIN_VALUE;
        for (long[] i : iv) {
            if (i[1] <= i[0]) continue;
            if (i[0] > curTo) {
                if (curTo > curFrom) before += curTo - curFrom;
                curFrom = i[0];
                curTo = i[1];
            } else curTo = Math.max(curTo, i[1]);
        }
        if (curTo > curFrom) before += curTo - curFrom;
        long all = before + after;
        return new AggFigures(after / 1e6, all == 0 ? 0 : (double) before / all);
    }
}
