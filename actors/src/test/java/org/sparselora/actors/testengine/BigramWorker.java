package org.sparselora.actors.testengine;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.SplittableRandom;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.StepResult;
import org.sparselora.engine.train.TrainerState;
import org.sparselora.engine.train.TrainingWorker;

/**
 * A small but real TrainingWorker for the pipeline tests: a bigram softmax model (logits of the
 * next token = row {@code W[token]}, V×V) trained with exact cross-entropy gradients summed over
 * output tokens, global-norm clipping and AdamW with a constant/linear/cosine schedule. Deterministic
 * from its seed, so equivalence, restart and resume can be compared weight for weight. The
 * {@link Faults} hook injects a crash at a chosen step (once) or NaN losses from a step on.
 */
public final class BigramWorker implements TrainingWorker {

    public static final String WEIGHT = "base_model.model.bigram.lora_A.weight";

    /** Injected faults, shared by every worker of a job (and its restarts). */
    public static final class Faults {
        public volatile int throwAtStep = -1;
        public volatile int throwOnWorker = 0;
        public volatile int throwTimes = 1;
        public volatile int nanFromStep = Integer.MAX_VALUE;
        public volatile long delayMs;
        public volatile long hangAtStepMs;
        public volatile int hangAtStep = -1;
        int thrown;

        synchronized boolean shouldThrow(int worker, int step) {
            if (step == throwAtStep && worker == throwOnWorker && thrown < throwTimes) {
                thrown++;
                return true;
            }
            return false;
        }
    }

    private final int vocab;
    private final int worker;
    private final double lr, beta1, beta2, eps, weightDecay, clip;
    private final String schedule;
    private final int warmup, totalSteps;
    private final Faults faults;
    private float[] w, m, v, grad;
    private int adamStep;
    /** Steps this worker ran, and with which sparsity flag ("3s" = step 3 sparse). */
    public final List<String> log = Collections.synchronizedList(new ArrayList<>());
    public volatile Object predictor;

    public BigramWorker(int vocab, long seed, int worker, double lr, String schedule, int warmup, int totalSteps, Faults faults) {
        this.vocab = vocab;
        this.worker = worker;
        this.lr = lr;
        this.beta1 = 0.9;
        this.beta2 = 0.999;
        this.eps = 1e-8;
        this.weightDecay = 0.01;
        this.clip = 1.0;
        this.schedule = schedule;
        this.warmup = warmup;
        this.totalSteps = totalSteps;
        this.faults = faults;
        SplittableRandom r = new SplittableRandom(seed);
        w = new float[vocab * vocab];
        for (int i = 0; i < w.length; i++) w[i] = (float) (r.nextGaussian() * 0.01);
        m = new float[w.length];
        v = new float[w.length];
        grad = new float[w.length];
    }

    @Override
    public StepResult computeGradients(Batch b, int step, boolean sparse) {
        long t0 = System.nanoTime();
        log.add(step + (sparse ? "s" : "d"));
        if (faults.shouldThrow(worker, step)) throw new IllegalStateException("injected fault at step " + step + " on worker " + worker);
        if (step == faults.hangAtStep && worker == faults.throwOnWorker) {
            faults.hangAtStep = -1; // once: the replacement worker runs the step normally
            sleep(faults.hangAtStepMs);
        }
        if (faults.delayMs > 0) sleep(faults.delayMs);
        java.util.Arrays.fill(grad, 0f);
        double lossSum = 0;
        int out = 0;
        double[] p = new double[vocab];
        for (int n = 0; n < b.tokenCount(); n++) {
            int target = b.targets()[n];
            if (target == Batch.IGNORE) continue;
            int row = b.tokens()[n] * vocab;
            double max = Double.NEGATIVE_INFINITY;
            for (int j = 0; j < vocab; j++) max = Math.max(max, w[row + j]);
            double z = 0;
            for (int j = 0; j < vocab; j++) z += p[j] = Math.exp(w[row + j] - max);
            for (int j = 0; j < vocab; j++) grad[row + j] += (float) (p[j] / z - (j == target ? 1 : 0));
            lossSum -= Math.log(p[target] / z);
            out++;
        }
        if (step >= faults.nanFromStep) lossSum = Double.NaN;
        long dense = 6L * b.tokenCount() * vocab;
        return new StepResult(lossSum, out, b.tokenCount(), sparse, sparse ? dense / 2 : dense, dense, sparse ? b.tokenCount() : 0,
                (System.nanoTime() - t0) / 1e6);
    }

    @Override
    public float[][] gradientsToHost() { return new float[][]{grad.clone()}; }

    @Override
    public void gradientsFromHost(float[][] g) {
        if (g.length != 1 || g[0].length != grad.length) throw new IllegalArgumentException("gradient shape mismatch");
        grad = g[0].clone();
    }

    @Override
    public float applyUpdate(int step, long totalOutputTokens) {
        double scale = 1.0 / Math.max(1, totalOutputTokens);
        double norm = 0;
        for (float g : grad) norm += (g * scale) * (g * scale);
        norm = Math.sqrt(norm);
        if (clip > 0 && norm > clip) scale *= clip / norm;
        double rate = rate(step);
        adamStep++;
        double bc1 = 1 - Math.pow(beta1, adamStep), bc2 = 1 - Math.pow(beta2, adamStep);
        for (int i = 0; i < w.length; i++) {
            double g = grad[i] * scale;
            m[i] = (float) (beta1 * m[i] + (1 - beta1) * g);
            v[i] = (float) (beta2 * v[i] + (1 - beta2) * g * g);
            double upd = (m[i] / bc1) / (Math.sqrt(v[i] / bc2) + eps) + weightDecay * w[i];
            w[i] = (float) (w[i] - rate * upd);
        }
        return (float) rate;
    }

    double rate(int step) {
        if (step < warmup) return lr * (step + 1) / warmup;
        double frac = totalSteps <= warmup ? 1 : (double) (step - warmup) / (totalSteps - warmup);
        return switch (schedule) {
            case "linear" -> lr * (1 - frac);
            case "cosine" -> lr * 0.5 * (1 + Math.cos(Math.PI * frac));
            default -> lr;
        };
    }

    @Override
    public TrainerState state() {
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        t.put(WEIGHT, w);
        t.put(WEIGHT + ".exp_avg", m);
        t.put(WEIGHT + ".exp_avg_sq", v);
        return new TrainerState(adamStep, t);
    }

    @Override
    public void restore(TrainerState s) {
        w = s.tensors().get(WEIGHT).clone();
        m = s.tensors().get(WEIGHT + ".exp_avg").clone();
        v = s.tensors().get(WEIGHT + ".exp_avg_sq").clone();
        adamStep = s.step();
    }

    public float[] weights() { return w; }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
