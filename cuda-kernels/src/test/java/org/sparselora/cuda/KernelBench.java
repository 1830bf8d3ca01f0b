package org.sparselora.cuda;

import java.util.Locale;
import java.util.SplittableRandom;
import org.sparselora.engine.backend.AdamwGroup;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * Per-kernel device times at Llama-3-8B layer shapes (batch 8 × 512 tokens), for the device-check
 * log: each op is warmed up, then timed over 20 back-to-back runs with CUDA events; the table gives
 * the median-free mean per run, bytes moved (minimum: each input read once, each output written
 * once) and the achieved bandwidth or TFLOP/s. Not a test (speed claims live in benchmarks); run by
 * {@code benchmarks/gpu/device-check.sh} as a plain main.
 */
public final class KernelBench {
    private static final SplittableRandom RNG = new SplittableRandom(42);

    public static void main(String[] args) {
        try (GpuBackend g = BenchSupport.open("KernelBench")) {
            int B = 8, T = 512, N = B * T, C = 4096, I = 14336, Hq = 32, Hkv = 8, D = 128, V = 128256;
            System.out.println("KernelBench on " + g.deviceName() + ", N=" + N + " tokens");
            System.out.printf(Locale.ROOT, "%-34s %10s %12s %12s%n", "op", "us/run", "GB/s", "TFLOP/s");
            Tensor x = rand(g, DType.BF16, N, C), w = rand(g, DType.BF16, C), out = g.empty(DType.BF16, N, C), rstd = g.empty(DType.F32, N);
            Tensor res = rand(g, DType.BF16, N, C), delta = rand(g, DType.BF16, N, C);
            row(g, "rmsNorm bf16 (N,4096)", () -> g.rmsNorm(out, rstd, x, w, 1e-5f), 2.0 * N * C * 2, 0);
            row(g, "addRmsNorm bf16 (N,4096)", () -> g.addRmsNorm(res, out, rstd, delta, w, 1e-5f), 4.0 * N * C * 2, 0);
            row(g, "rmsNormBackward bf16", () -> g.rmsNormBackward(out, delta, x, w, rstd, false), 3.0 * N * C * 2, 0);
            row(g, "axpy bf16 (N,4096)", () -> g.axpy(res, 1f, delta), 3.0 * N * C * 2, 0);
            Tensor gate = rand(g, DType.BF16, N, I), up = rand(g, DType.BF16, N, I), h = g.empty(DType.BF16, N, I), dg = g.empty(DType.BF16, N, I), du = g.empty(DType.BF16, N, I);
            row(g, "swiglu bf16 (N,14336)", () -> g.swiglu(h, gate, up), 3.0 * N * I * 2, 0);
            row(g, "swigluBackward bf16", () -> g.swigluBackward(dg, du, h, gate, up), 5.0 * N * I * 2, 0);
            Tensor wq = rand(g, DType.BF16, C, C), q = g.empty(DType.BF16, N, C);
            row(g, "matmul x·Wqᵀ (N,4096)x(4096,4096)", () -> g.matmul(q, x, false, wq, true, 1f, 0f), 0, 2.0 * N * C * C);
            Tensor wg = rand(g, DType.BF16, I, C);
            row(g, "matmul x·Wgᵀ (N,4096)x(14336,4096)", () -> g.matmul(gate, x, false, wg, true, 1f, 0f), 0, 2.0 * N * C * I);
            Tensor qa = rand(g, DType.BF16, N, Hq * D), ka = rand(g, DType.BF16, N, Hkv * D), va = rand(g, DType.BF16, N, Hkv * D);
            Tensor ao = g.empty(DType.BF16, N, Hq * D), lse = g.empty(DType.F32, B, Hq, T), ks = g.zeros(DType.I32, B);
            Tensor dq = g.empty(DType.BF16, N, Hq * D), dk = g.empty(DType.BF16, N, Hkv * D), dv = g.empty(DType.BF16, N, Hkv * D);
            Tensor pos = g.empty(DType.I32, N);
            int[] p = new int[N];
            for (int i = 0; i < N; i++) p[i] = i % T;
            g.copyFromHost(pos, p);
            Tensor cos = rand(g, DType.F32, T, D / 2), sin = rand(g, DType.F32, T, D / 2);
            // QKᵀ and PV over the causal (visible) half of the score square: the work a causal kernel must do
            double attFlops = 4.0 * B * Hq * D * (T * (T + 1) / 2.0);
            for (DevKernels.Attention k : DevKernels.Attention.values()) {
                row(g, "attention fwd " + k + " B8 T512 32/8x128", () -> k.forward(g, ao, lse, qa, ka, va, ks, B, T, Hq, Hkv, D, 0.088f), 0, attFlops);
                row(g, "attention bwd " + k, () -> k.backward(g, dq, dk, dv, ao, ao, lse, qa, ka, va, ks, B, T, Hq, Hkv, D, 0.088f), 0, 2.5 * attFlops);
            }
            // FLASH_PIPELINED against the GEMM path at this full shape (left padding on two sequences)
            int[] kst = {0, 100, 0, 0, 0, 0, 511, 0};
            g.copyFromHost(ks, kst);
            Tensor dO = rand(g, DType.BF16, N, Hq * D);
            float[][] ref = null;
            for (DevKernels.Attention k : DevKernels.Attention.values()) {  // GEMM first: the reference
                k.forward(g, ao, lse, qa, ka, va, ks, B, T, Hq, Hkv, D, 0.088f);
                k.backward(g, dq, dk, dv, dO, ao, lse, qa, ka, va, ks, B, T, Hq, Hkv, D, 0.088f);
                float[][] got = {g.toFloats(ao), g.toFloats(lse), g.toFloats(dq), g.toFloats(dk), g.toFloats(dv)};
                if (ref == null) { ref = got; continue; }
                String[] names = {"out", "lse", "dq", "dk", "dv"};
                StringBuilder sb = new StringBuilder("attention " + k + " vs GEMM at B8 T512:");
                for (int i = 0; i < names.length; i++) sb.append(String.format(Locale.ROOT, " %s %.2e", names[i], relErr(got[i], ref[i])));
                System.out.println(sb);
            }
            row(g, "rope q (N,32x128)", () -> g.rope(qa, pos, cos, sin, Hq, D, false), 2.0 * N * Hq * D * 2, 0);
            row(g, "rope q then rope k (2 launches)", () -> { g.rope(qa, pos, cos, sin, Hq, D, false); g.rope(ka, pos, cos, sin, Hkv, D, false); },
                    2.0 * N * (Hq + Hkv) * D * 2, 0);
            row(g, "ropeQK q+k (1 launch)", () -> g.ropeQK(qa, ka, pos, cos, sin, Hq, Hkv, D, false), 2.0 * N * (Hq + Hkv) * D * 2, 0);
            int chunk = 1024;
            Tensor logits = rand(g, DType.BF16, chunk, V), tg = g.empty(DType.I32, chunk), losses = g.empty(DType.F32, chunk);
            int[] t = new int[chunk];
            for (int i = 0; i < chunk; i++) t[i] = RNG.nextInt(V);
            g.copyFromHost(tg, t);
            row(g, "crossEntropy bf16 (1024,128256) in place", () -> g.crossEntropy(losses, logits, logits, tg, 1f), 2.0 * chunk * V * 2, 0);
            Tensor sc = rand(g, DType.F32, I), idx = g.empty(DType.I32, I / 10);
            row(g, "topK 1434 of 14336", () -> g.topK(idx, sc, I / 10), 0, 0);
            Tensor norms = g.empty(DType.F32, Hkv * D), kk = rand(g, DType.BF16, N, Hkv * D);
            row(g, "columnNorms (N,1024)", () -> g.columnNorms(norms, kk), 1.0 * N * Hkv * D * 2, 0);
            Tensor idxR = g.empty(DType.I32, 1434);
            int[] ir = new int[1434];
            for (int i = 0; i < ir.length; i++) ir[i] = i * 10;
            g.copyFromHost(idxR, ir);
            Tensor slice = g.empty(DType.BF16, 1434, C);
            row(g, "gatherRows 1434 of Wg (14336,4096)", () -> g.gatherRows(slice, wg, idxR), 2.0 * 1434 * C * 2, 0);
            Tensor pm = rand(g, DType.F32, 32 * (C + C)), gm = rand(g, DType.F32, 32 * (C + C)), mm = g.zeros(DType.F32, 32 * 2 * C), vm = g.zeros(DType.F32, 32 * 2 * C);
            row(g, "adamw 262k params", () -> g.adamw(pm, gm, mm, vm, 1e-4f, 0.9f, 0.999f, 1e-8f, 0f, 1, 1f), 7.0 * 4 * 32 * 2 * C, 0);
            optimizerPhase(g, C, Hkv * D);
            System.out.printf(Locale.ROOT, "peak device memory held by the backend: %.2f GiB%n", g.peakMemory() / (double) (1L << 30));
        }
    }

    /**
     * The optimizer phase of an 8B LoRA step, r=32 on q,k,v,o (32 layers × 8 = 256 tensors, 27M
     * params): the per-tensor loop the trainer used to run (sumOfSquares, adamw, fill per tensor)
     * against the fused group (one sum-of-squares launch + read, one AdamW launch that zeroes the
     * gradients, optionally refreshing bf16 compute copies). Bytes: p, g, m, v read and written.
     */
    private static void optimizerPhase(GpuBackend g, int C, int kvDim) {
        int r = 32;
        java.util.List<Tensor[]> slots = new java.util.ArrayList<>(), withCopies = new java.util.ArrayList<>();
        java.util.List<Tensor> grads = new java.util.ArrayList<>();
        long params = 0;
        for (int l = 0; l < 32; l++)
            for (int out : new int[] {C, kvDim, kvDim, C})
                for (int[] shape : new int[][] {{r, C}, {out, r}}) {
                    Tensor p = rand(g, DType.F32, shape), gr = rand(g, DType.F32, shape);
                    Tensor m = g.zeros(DType.F32, shape), v = g.zeros(DType.F32, shape), c = g.empty(DType.BF16, shape);
                    slots.add(new Tensor[] {p, gr, m, v});
                    withCopies.add(new Tensor[] {p, gr, m, v, c});
                    grads.add(gr);
                    params += p.numel();
                }
        String what = "8B qkvo r32 (" + slots.size() + " t, " + params / 1_000_000 + "M)";
        row(g, "opt loop: sumsq+adamw+fill " + what, () -> {
            g.sumOfSquares(grads);
            for (Tensor[] s : slots) g.adamw(s[0], s[1], s[2], s[3], 1e-4f, 0.9f, 0.999f, 1e-8f, 0f, 1, 1f);
            for (Tensor gr : grads) g.fill(gr, 0f);
        }, 36.0 * params, 0);
        try (AdamwGroup group = g.adamwGroup(slots); AdamwGroup copies = g.adamwGroup(withCopies)) {
            row(g, "group gradSumOfSquares (+read)", group::gradSumOfSquares, 4.0 * params, 0);
            row(g, "group step, zeroing grads", () -> group.step(1e-4f, 0.9f, 0.999f, 1e-8f, 0f, 1, 1f, true), 32.0 * params, 0);
            row(g, "group step + bf16 copies", () -> copies.step(1e-4f, 0.9f, 0.999f, 1e-8f, 0f, 1, 1f, true), 34.0 * params, 0);
            row(g, "group sumsq + step (the phase)", () -> {
                group.gradSumOfSquares();
                group.step(1e-4f, 0.9f, 0.999f, 1e-8f, 0f, 1, 1f, true);
            }, 36.0 * params, 0);
        }
        for (Tensor[] s : withCopies) for (Tensor t : s) t.close();
    }

    /** ‖a − b‖/‖b‖ over finite reference entries; a non-finite value where the reference is finite counts as ∞. */
    static double relErr(float[] a, float[] b) {
        double num = 0, den = 0;
        for (int i = 0; i < b.length; i++) {
            if (!Float.isFinite(b[i])) { if (a[i] != b[i]) return Double.POSITIVE_INFINITY; continue; }
            if (!Float.isFinite(a[i])) return Double.POSITIVE_INFINITY;
            double d = a[i] - b[i];
            num += d * d;
            den += (double) b[i] * b[i];
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }

    private static Tensor rand(GpuBackend g, DType t, int... shape) { return BenchSupport.rand(g, RNG, t, shape); }

    private static void row(GpuBackend g, String name, Runnable op, double bytes, double flops) {
        double s = BenchSupport.eagerUs(g, op, 3, 20) / 1e6;
        System.out.printf(Locale.ROOT, "%-34s %10.1f %12s %12s%n", name, s * 1e6,
                bytes > 0 ? String.format(Locale.ROOT, "%.0f", bytes / s / 1e9) : "-",
                flops > 0 ? String.format(Locale.ROOT, "%.0f", flops / s / 1e12) : "-");
    }
}
