package org.sparselora.bench.cpu;

import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * The machine's measured fp32 peak: independent FMA chains on register-resident vectors
 * ({@code SPECIES_PREFERRED}), one per thread. The yardstick for every GFLOP/s figure we print.
 */
public final class PeakFlops {
    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;

    private PeakFlops() {}

    /** GFLOP/s over all threads, measured for about {@code millis}; one thread is timed by its CPU time. */
    public static double measure(int threads, long millis) {
        if (threads == 1) {
            for (int w = 0; w < 200; w++) kernel(100_000);
            var mx = java.lang.management.ManagementFactory.getThreadMXBean();
            long calls = Math.max(1, millis * 4), t0 = mx.getCurrentThreadCpuTime();
            float s = 0;
            for (long r = 0; r < calls; r++) s += kernel(100_000);
            double sec = (mx.getCurrentThreadCpuTime() - t0) / 1e9;
            if (s == 42f) System.out.print(""); // keep the result alive
            return 2.0 * 8 * S.length() * calls * 100_000 / sec / 1e9;
        }
        try (var pool = Executors.newFixedThreadPool(threads)) {
            for (int w = 0; w < 200; w++) kernel(100_000); // compile kernel() whole, not on-stack-replaced
            long calls = Math.max(1, millis * 4), iters = calls * 100_000;
            Future<?>[] fs = new Future<?>[threads];
            long t0 = System.nanoTime();
            for (int t = 0; t < threads; t++) fs[t] = pool.submit(() -> { float s = 0; for (long r = 0; r < calls; r++) s += kernel(100_000); return s; });
            for (Future<?> f : fs) f.get();
            double s = (System.nanoTime() - t0) / 1e9;
            return 2.0 * 8 * S.length() * iters * threads / s / 1e9;
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    static float kernel(int iters) {
        FloatVector a = FloatVector.broadcast(S, 0.999f), b = FloatVector.broadcast(S, 1e-7f);
        FloatVector c0 = FloatVector.zero(S), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
        for (int i = 0; i < iters; i++) {
            c0 = a.fma(c0, b); c1 = a.fma(c1, b); c2 = a.fma(c2, b); c3 = a.fma(c3, b);
            c4 = a.fma(c4, b); c5 = a.fma(c5, b); c6 = a.fma(c6, b); c7 = a.fma(c7, b);
        }
        return c0.add(c1).add(c2).add(c3).add(c4).add(c5).add(c6).add(c7).reduceLanes(jdk.incubator.vector.VectorOperators.ADD);
    }
}
