package org.sparselora.engine.train;

import org.sparselora.engine.model.Batch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.Predicate;
import java.util.function.ToDoubleFunction;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;

/**
 * Finite-difference check of a {@link FullParameterModel}'s gradients, parameter by parameter: for
 * {@code probes} random elements of every parameter, the analytic gradient (from
 * {@link FullParameterModel#forwardBackward}) against the central difference of the loss
 * {@code (L(w+h) − L(w−h)) / 2h}. For any implementation of the seam (the CPU test double, the real
 * model on an F32 {@code CpuBackend}).
 */
public final class FullGradientCheck {
    private FullGradientCheck() {}

    /**
     * @param loss      Σ loss of the batch with the model's current weights (no gradients needed)
     * @param zero      parameters whose gradient must be exactly zero (checked instead)
     * @param h         step of the difference
     * @param tol       allowed |fd − analytic| per unit of max(1, |fd|)
     * @return the number of parameters checked by differences
     */
    public static int check(FullParameterModel m, Batch b, ToDoubleFunction<Batch> loss, Predicate<String> zero,
                            int probes, float h, double tol, long seed) {
        Backend be = m.backend();
        int checked = 0;
        try (ModelGrads g = ModelGrads.zerosLike(be, m.parameters())) {
            m.forwardBackward(b, g);
            for (Map.Entry<String, Tensor> e : m.parameters().entrySet()) {
                String n = e.getKey();
                float[] w = be.toFloats(e.getValue()), an = g.toHost(n);
                if (zero.test(n)) {
                    for (int i = 0; i < an.length; i++) assertEquals(0f, an[i], n + "[" + i + "] must have no gradient");
                    continue;
                }
                SplittableRandom r = new SplittableRandom(seed ^ n.hashCode());
                int nonZero = 0;
                for (int p = 0; p < probes; p++) {
                    int i = r.nextInt(w.length);
                    float keep = w[i];
                    w[i] = keep + h; be.copyFromHost(e.getValue(), w);
                    double up = loss.applyAsDouble(b);
                    w[i] = keep - h; be.copyFromHost(e.getValue(), w);
                    double dn = loss.applyAsDouble(b);
                    w[i] = keep; be.copyFromHost(e.getValue(), w);
                    double fd = (up - dn) / (2.0 * h);
                    assertEquals(fd, an[i], tol * Math.max(1, Math.abs(fd)), n + "[" + i + "]");
                    if (an[i] != 0) nonZero++;
                }
                assertTrue(nonZero > 0, n + ": no probe hit a non-zero gradient");
                checked++;
            }
        }
        return checked;
    }
}
