package org.sparselora.cuda;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * Attention kernel timings on the device (not a test: a plain main run by the attention device
 * script). At the Llama-3-8B timing shape (B 8, T 512, 32 query / 8 KV heads, D 128, bf16) and the
 * Llama-3.2-1B head size (D 64) it times forward and backward of every {@link DevKernels.Attention}
 * with CUDA events (5 warm-up calls, then the mean over 30 back-to-back calls) and reports TFLOP/s
 * on the causal work (the visible half of the score square: forward 2 GEMMs, backward 5, 2 flops
 * per multiply-add). It then runs every kernel on the same inputs with left padding on two sequences
 * and prints the relative error of out, lse, dq, dk, dv against the GEMM path.
 * With the argument {@code memcheck} it only calls the fused (FLASH_PIPELINED) kernels at a few odd shapes, for
 * compute-sanitizer (no timing, no comparison).
 */
public final class AttentionBench {
    private static final SplittableRandom RNG = new SplittableRandom(7);

    /** A kernel choice (one per {@link DevKernels.Attention}; kept as a record so build variants can be added for a comparison). */
    record Variant(String name, DevKernels.Attention kernel) {
        void forward(GpuBackend g, Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor ks, int B, int T, int Hq, int Hkv, int D, float scale) {
            kernel.forward(g, o, lse, q, k, v, ks, B, T, Hq, Hkv, D, scale);
        }

        void backward(GpuBackend g, Tensor dq, Tensor dk, Tensor dv, Tensor dO, Tensor o, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor ks,
                      int B, int T, int Hq, int Hkv, int D, float scale) {
            kernel.backward(g, dq, dk, dv, dO, o, lse, q, k, v, ks, B, T, Hq, Hkv, D, scale);
        }
    }

    static List<Variant> variants() {
        List<Variant> v = new ArrayList<>();
        for (DevKernels.Attention k : DevKernels.Attention.values()) v.add(new Variant(k.name(), k));
        return v;
    }

    public static void main(String[] args) {
        try (GpuBackend g = BenchSupport.open("AttentionBench")) {
            if (args.length > 0 && args[0].equals("memcheck")) { memcheck(g); return; }
            if (args.length > 0 && args[0].equals("profile")) { profile(g, 8, 512, 32, 8, 128); return; }
            System.out.println("AttentionBench on " + g.deviceName());
            time(g, 8, 512, 32, 8, 128);
            time(g, 8, 512, 32, 8, 64);
            agreement(g, 8, 512, 32, 8, 128, new int[] {0, 100, 0, 0, 0, 0, 511, 0});
            System.out.printf(Locale.ROOT, "peak device memory held by the backend: %.2f GiB%n", g.peakMemory() / (double) (1L << 30));
        }
    }

    static void time(GpuBackend g, int B, int T, int Hq, int Hkv, int D) {
        int N = B * T;
        float scale = (float) (1 / Math.sqrt(D));
        Tensor q = rand(g, N, Hq * D), k = rand(g, N, Hkv * D), v = rand(g, N, Hkv * D), dO = rand(g, N, Hq * D);
        Tensor o = g.empty(DType.BF16, N, Hq * D), lse = g.empty(DType.F32, B, Hq, T), ks = g.zeros(DType.I32, B);
        Tensor dq = g.empty(DType.BF16, N, Hq * D), dk = g.empty(DType.BF16, N, Hkv * D), dv = g.empty(DType.BF16, N, Hkv * D);
        double fwdFlops = 4.0 * B * Hq * D * (T * (T + 1) / 2.0), bwdFlops = 2.5 * fwdFlops;
        System.out.printf(Locale.ROOT, "%nB%d T%d %d/%dx%d causal: fwd %.1f GFLOP, bwd %.1f GFLOP%n", B, T, Hq, Hkv, D, fwdFlops / 1e9, bwdFlops / 1e9);
        System.out.printf(Locale.ROOT, "%-34s %9s %9s %9s %9s %9s%n", "kernel", "fwd us", "TFLOP/s", "bwd us", "TFLOP/s", "sum us");
        for (Variant var : variants()) {
            double f = mean(g, () -> var.forward(g, o, lse, q, k, v, ks, B, T, Hq, Hkv, D, scale));
            double b = mean(g, () -> var.backward(g, dq, dk, dv, dO, o, lse, q, k, v, ks, B, T, Hq, Hkv, D, scale));
            System.out.printf(Locale.ROOT, "%-34s %9.1f %9.0f %9.1f %9.0f %9.1f%n", var.name, f, fwdFlops / f / 1e6, b, bwdFlops / b / 1e6, f + b);
        }
        for (Tensor t : new Tensor[] {q, k, v, dO, o, lse, ks, dq, dk, dv}) t.close();
    }

    static void agreement(GpuBackend g, int B, int T, int Hq, int Hkv, int D, int[] kst) {
        int N = B * T;
        float scale = (float) (1 / Math.sqrt(D));
        Tensor q = rand(g, N, Hq * D), k = rand(g, N, Hkv * D), v = rand(g, N, Hkv * D), dO = rand(g, N, Hq * D);
        Tensor o = g.empty(DType.BF16, N, Hq * D), lse = g.empty(DType.F32, B, Hq, T), ks = g.zeros(DType.I32, B);
        Tensor dq = g.empty(DType.BF16, N, Hq * D), dk = g.empty(DType.BF16, N, Hkv * D), dv = g.empty(DType.BF16, N, Hkv * D);
        g.copyFromHost(ks, kst);
        float[][] ref = null;
        System.out.println();
        for (Variant var : variants()) {
            for (Tensor t : new Tensor[] {o, lse, dq, dk, dv}) g.fill(t, Float.NaN);  // nothing left from the previous kernel
            var.forward(g, o, lse, q, k, v, ks, B, T, Hq, Hkv, D, scale);
            var.backward(g, dq, dk, dv, dO, o, lse, q, k, v, ks, B, T, Hq, Hkv, D, scale);
            float[][] got = {g.toFloats(o), g.toFloats(lse), g.toFloats(dq), g.toFloats(dk), g.toFloats(dv)};
            if (ref == null) { ref = got; continue; }
            String[] names = {"out", "lse", "dq", "dk", "dv"};
            StringBuilder sb = new StringBuilder(String.format(Locale.ROOT, "%-34s vs GEMM, B%d T%d %d/%dx%d padded:", var.name, B, T, Hq, Hkv, D));
            for (int i = 0; i < names.length; i++) sb.append(String.format(Locale.ROOT, " %s %.2e", names[i], KernelBench.relErr(got[i], ref[i])));
            System.out.println(sb);
        }
    }

    /** Two forward + backward calls per fused variant at one shape: the launches for a profiler (Nsight Compute). */
    static void profile(GpuBackend g, int B, int T, int Hq, int Hkv, int D) {
        int N = B * T;
        Tensor q = rand(g, N, Hq * D), k = rand(g, N, Hkv * D), v = rand(g, N, Hkv * D), dO = rand(g, N, Hq * D);
        Tensor o = g.empty(DType.BF16, N, Hq * D), lse = g.empty(DType.F32, B, Hq, T), ks = g.zeros(DType.I32, B);
        Tensor dq = g.empty(DType.BF16, N, Hq * D), dk = g.empty(DType.BF16, N, Hkv * D), dv = g.empty(DType.BF16, N, Hkv * D);
        for (Variant var : variants()) {
            if (var.kernel != DevKernels.Attention.FLASH_PIPELINED) continue;
            for (int i = 0; i < 2; i++) {
                var.forward(g, o, lse, q, k, v, ks, B, T, Hq, Hkv, D, 0.088f);
                var.backward(g, dq, dk, dv, dO, o, lse, q, k, v, ks, B, T, Hq, Hkv, D, 0.088f);
            }
        }
        g.synchronize();
    }

    static void memcheck(GpuBackend g) {
        int[][] shapes = {{2, 200, 8, 2, 128}, {3, 130, 4, 4, 64}, {2, 33, 4, 2, 32}, {1, 257, 2, 1, 128}};
        for (int[] s : shapes) {
            int B = s[0], T = s[1], Hq = s[2], Hkv = s[3], D = s[4], N = B * T;
            Tensor q = rand(g, N, Hq * D), k = rand(g, N, Hkv * D), v = rand(g, N, Hkv * D), dO = rand(g, N, Hq * D);
            Tensor o = g.empty(DType.BF16, N, Hq * D), lse = g.empty(DType.F32, B, Hq, T), ks = g.zeros(DType.I32, B);
            Tensor dq = g.empty(DType.BF16, N, Hq * D), dk = g.empty(DType.BF16, N, Hkv * D), dv = g.empty(DType.BF16, N, Hkv * D);
            int[] kst = new int[B];
            for (int b = 0; b < B; b++) kst[b] = b == 0 ? 0 : (b * 37) % (T + 1);
            g.copyFromHost(ks, kst);
            for (Variant var : variants()) {
                if (var.kernel == DevKernels.Attention.GEMM) continue;
                var.forward(g, o, lse, q, k, v, ks, B, T, Hq, Hkv, D, 0.1f);
                var.backward(g, dq, dk, dv, dO, o, lse, q, k, v, ks, B, T, Hq, Hkv, D, 0.1f);
            }
            g.synchronize();
            System.out.println("memcheck shape B" + B + " T" + T + " " + Hq + "/" + Hkv + "x" + D + " done");
        }
    }

    private static double mean(GpuBackend g, Runnable op) { return BenchSupport.eagerUs(g, op, 5, 30); }

    private static Tensor rand(GpuBackend g, int... shape) { return BenchSupport.rand(g, RNG, DType.BF16, shape); }
}
