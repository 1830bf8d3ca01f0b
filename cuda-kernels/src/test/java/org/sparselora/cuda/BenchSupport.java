package org.sparselora.cuda;

import java.util.SplittableRandom;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * What the device benches (KernelBench, PredictorBench, AttentionBench: plain mains run by the
 * benchmarks/gpu scripts) share: opening the GPU, uniform random device tensors from the bench's
 * own seeded stream, and the eager timing of an op (warm-up calls, then the mean over back-to-back
 * calls between two CUDA events).
 */
final class BenchSupport {
    private BenchSupport() {}

    /** The backend on GPU 0; bench names the caller in the error when there is no GPU. */
    static GpuBackend open(String bench) {
        if (!Gpu.available()) throw new IllegalStateException(bench + " needs a GPU: " + Gpu.reason());
        return GpuBackend.create(0);
    }

    /** A device tensor of the shape with entries uniform in [-1, 1) drawn from rng, stored as t. */
    static Tensor rand(GpuBackend g, SplittableRandom rng, DType t, int... shape) {
        long n = 1;
        for (int d : shape) n *= d;
        float[] a = new float[(int) n];
        for (int i = 0; i < a.length; i++) a[i] = (float) rng.nextDouble(-1, 1);
        return g.fromFloats(a, t, shape);
    }

    /** Mean µs per call of op: warm calls, a synchronize, then reps calls timed with CUDA events. */
    static double eagerUs(GpuBackend g, Runnable op, int warm, int reps) {
        for (int i = 0; i < warm; i++) op.run();
        g.synchronize();
        float ms = g.timeMs(() -> { for (int i = 0; i < reps; i++) op.run(); });
        return ms * 1e3 / reps;
    }
}
