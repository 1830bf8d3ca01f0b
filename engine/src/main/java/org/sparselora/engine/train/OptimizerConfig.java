package org.sparselora.engine.train;

/**
 * AdamW and learning-rate schedule settings. {@code maxGradNorm ≤ 0} disables clipping; the
 * schedule follows HF's {@code get_*_schedule_with_warmup} (linear warm-up from 0 over
 * {@code warmupSteps}, then constant, linear decay to 0 at {@code totalSteps}, or half-cosine).
 */
public record OptimizerConfig(float lr, float beta1, float beta2, float eps, float weightDecay, float maxGradNorm,
                              Schedule schedule, int warmupSteps, int totalSteps) {

    public enum Schedule { CONSTANT, LINEAR, COSINE;
        public static Schedule parse(String s) {
            for (Schedule x : values()) if (x.name().equalsIgnoreCase(s)) return x;
            throw new IllegalArgumentException("unknown lr schedule '" + s + "' (constant, linear, cosine)");
        }
    }

    public OptimizerConfig {
        if (!(lr >= 0)) throw new IllegalArgumentException("lr must be >= 0, got " + lr);
        if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) throw new IllegalArgumentException("betas must be in [0,1), got " + beta1 + ", " + beta2);
        if (!(eps > 0)) throw new IllegalArgumentException("eps must be > 0, got " + eps);
        if (warmupSteps < 0) throw new IllegalArgumentException("warmup steps must be >= 0, got " + warmupSteps);
        if (totalSteps < 1) throw new IllegalArgumentException("total steps must be >= 1, got " + totalSteps);
        if (schedule == null) schedule = Schedule.CONSTANT;
    }

    /** PEFT-ish defaults: lr 3e-4, betas (0.9, 0.999), eps 1e-8, no weight decay, clip 1.0, linear, no warm-up. */
    public static OptimizerConfig defaults(int totalSteps) {
        return new OptimizerConfig(3e-4f, 0.9f, 0.999f, 1e-8f, 0f, 1f, Schedule.LINEAR, 0, totalSteps);
    }
}
