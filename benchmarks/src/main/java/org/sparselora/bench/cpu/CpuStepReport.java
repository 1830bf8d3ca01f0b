package org.sparselora.bench.cpu;

import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.RowBlockMode;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.sparse.FlopCount;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.model.Batch;

/**
 * With 1 thread, times are the calling thread's CPU time (ThreadMXBean), which stays meaningful on
 * a machine shared with other work; with more threads they are wall-clock times.
 *
 * A quick table without JMH: measured FMA peak, matmul GFLOP/s for the shapes a step runs, and
 * dense LoRA vs SparseLoRA step time on {@link BenchModels#stepModel()} with the FLOP reduction
 * next to the measured speed-up. {@code java ... CpuStepReport [threads] [steps]}.
 */
public final class CpuStepReport {
    public static void main(String[] args) {
        int threads = args.length > 0 ? Integer.parseInt(args[0]) : Runtime.getRuntime().availableProcessors();
        int steps = args.length > 1 ? Integer.parseInt(args[1]) : 5;
        cpuClock = threads == 1;
        try (CpuBackend be = new CpuBackend(threads)) {
            System.out.printf("cpu backend: %d threads, vector kernels: %s, clock: %s%n", threads, CpuBackend.vectorized(),
                    cpuClock ? "thread CPU time" : "wall");
            double peak = PeakFlops.measure(threads, 400);
            System.out.printf("measured FMA peak: %.1f GFLOP/s%n%n", peak);
            System.out.println("| matmul (M,K,N) | op | GFLOP/s | % of peak |");
            System.out.println("|---|---|---|---|");
            int[][] shapes = {{1024, 512, 1408}, {1024, 1408, 512}, {1024, 512, 512}, {256, 512, 1408}};
            for (int[] s : shapes)
                for (boolean tb : new boolean[] {true, false}) {
                    double g = matmulGflops(be, s[0], s[1], s[2], tb);
                    System.out.printf("| %d,%d,%d | %s | %.1f | %.0f%% |%n", s[0], s[1], s[2], tb ? "x·Wᵀ" : "dy·W", g, 100 * g / peak);
                }
            if (args.length > 2 && args[2].equals("matmul")) return;
            LlamaConfig c = BenchModels.stepModel();
            LlamaModel m = new LlamaModel(be, LlamaWeights.upload(be, new RandomWeights(c, 1)));
            m.setRowBlockMode(RowBlockMode.fromProperty());   // -Dsparselora.rowBlocks
            LoraAdapter lora = new LoraAdapter(be, c, BenchModels.lora());
            Batch b = BenchModels.batch(c, 4, 256, 0.75, 3);
            System.out.printf("%n| step (4x256, 75%% context) | ms/step (median) | GFLOP/step | GFLOP/s | FLOP reduction | speed-up |%n|---|---|---|---|---|---|%n");
            // modes interleaved step by step and the median taken, so drift in machine load hits all alike
            SparsePlan[] plans = {null, BenchModels.plan(be, c, b, BenchModels.math10kScaled(), SparsePlan.FrozenGrad.SLICED, 5),
                    BenchModels.plan(be, c, b, BenchModels.math10kScaled(), SparsePlan.FrozenGrad.CUT, 5)};
            String[] names = {"dense LoRA", "SparseLoRA (sliced)", "SparseLoRA (cut)"};
            double[][] ms = new double[plans.length][steps];
            for (SparsePlan p : plans) stepMs(m, lora, b, p, 0); // warm-up
            for (int s = 0; s < steps; s++)
                for (int i = 0; i < plans.length; i++) ms[i][s] = stepMs(m, lora, b, plans[i], 1);
            long denseF = FlopCount.dense(c, FlopCount.Lora.of(lora.config()), b).flops();
            double denseMs = median(ms[0]);
            for (int i = 0; i < plans.length; i++) {
                long f = FlopCount.executed(c, FlopCount.Lora.of(lora.config()), b, plans[i], 0).flops();
                double t = median(ms[i]);
                System.out.printf("| %s | %.1f | %.2f | %.1f | %.2fx | %.2fx |%n", names[i], t, f / 1e9, f / t / 1e6, denseF / (double) f, denseMs / t);
            }
        }
    }

    static boolean cpuClock;

    /** Nanoseconds: thread CPU time when single-threaded (robust to a busy machine), else wall time. */
    static long now() {
        return cpuClock ? java.lang.management.ManagementFactory.getThreadMXBean().getCurrentThreadCpuTime() : System.nanoTime();
    }

    static double matmulGflops(CpuBackend be, int m, int k, int n, boolean transB) {
        Tensor a = be.fromFloats(rand(m * k), DType.F32, m, k);
        Tensor w = transB ? be.fromFloats(rand(n * k), DType.F32, n, k) : be.fromFloats(rand(k * n), DType.F32, k, n);
        Tensor cc = be.empty(DType.F32, m, n);
        for (int i = 0; i < 15; i++) be.matmul(cc, a, false, w, transB, 1, 0);
        int reps = 10;
        long t0 = now();
        for (int i = 0; i < reps; i++) be.matmul(cc, a, false, w, transB, 1, 0);
        double s = (now() - t0) / 1e9;
        return 2.0 * m * k * n * reps / s / 1e9;
    }

    static double median(double[] x) {
        double[] s = x.clone();
        java.util.Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }

    /** ms per step over {@code steps} steps; 0 steps = two warm-up steps only. */
    static double stepMs(LlamaModel m, LoraAdapter lora, Batch b, SparsePlan plan, int steps) {
        if (steps == 0) {
            for (int i = 0; i < 2; i++) { m.forward(b, lora, plan, i); m.backward(); }
            return 0;
        }
        long t0 = now();
        for (int i = 0; i < steps; i++) { m.forward(b, lora, plan, i); m.backward(); }
        return (now() - t0) / 1e6 / steps;
    }

    static float[] rand(int n) {
        java.util.SplittableRandom r = new java.util.SplittableRandom(n);
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) (r.nextDouble() - 0.5);
        return x;
    }
}
