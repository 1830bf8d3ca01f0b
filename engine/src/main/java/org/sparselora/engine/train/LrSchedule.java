package org.sparselora.engine.train;

/** The learning rate at a 0-based step, HF semantics (warm-up from 0, then the schedule's decay). */
public final class LrSchedule {
    private LrSchedule() {}

    public static float lr(OptimizerConfig o, int step) {
        int w = o.warmupSteps(), t = o.totalSteps();
        if (step < w) return o.lr() * step / (float) Math.max(1, w);
        double progress = (step - w) / (double) Math.max(1, t - w);
        double f = switch (o.schedule()) {
            case CONSTANT -> 1.0;
            case LINEAR -> Math.max(0.0, (t - step) / (double) Math.max(1, t - w));
            case COSINE -> Math.max(0.0, 0.5 * (1 + Math.cos(Math.PI * Math.min(1.0, progress))));
        };
        return (float) (o.lr() * f);
    }
}
