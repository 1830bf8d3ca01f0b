package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.AdamwGroup;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.Dtypes;

/**
 * Every GpuBackend op against CpuBackend (fp32, the truth) on fresh random inputs. Inputs are drawn,
 * rounded to bf16 where the GPU stores bf16, and given to both backends identically; every GPU
 * output is poisoned with NaN first, so an element a kernel forgot to write fails the comparison.
 * Error is ‖gpu − cpu‖ / ‖cpu‖ over the whole output. Tolerances (documented per op):
 * <ul>
 *   <li>bf16 outputs: 1e-2 (one bf16 rounding is 2⁻⁹ ≈ 2e-3 relative);
 *   <li>fp32 outputs from fp32 inputs (AdamW, fp32 GEMM, fp32 elementwise): 1e-5;
 *   <li>attention forward/backward: 2e-2 (bf16 operands in both GEMMs, bf16 probabilities and dS);
 *   <li>exact: conversions, copies, gathers/scatters, embedding, topK, dropout masks.
 * </ul>
 * Needs a CUDA GPU: tagged {@code gpu}, run by {@code benchmarks/gpu/device-check.sh}; without a
 * usable GPU it fails with the reason (never skips).
 */
@Tag("gpu")
class GpuBackendTest {
    static GpuBackend gpu;
    static CpuBackend cpu;
    static final SplittableRandom RNG = new SplittableRandom(System.nanoTime());
    static final float BF16_TOL = 1e-2f, F32_TOL = 1e-5f, ATT_TOL = 2e-2f;

    @BeforeAll
    static void setUp() {
        if (!Gpu.available()) fail("GPU tests need a CUDA GPU: " + Gpu.reason());
        gpu = GpuBackend.create(0);
        cpu = new CpuBackend(2);
        System.out.println("GpuBackendTest on " + gpu.deviceName() + " (cc " + gpu.computeCapability() + ", PTX " + gpu.ptxArch() + ")");
    }

    @AfterAll
    static void tearDown() {
        if (gpu != null) gpu.close();
        if (cpu != null) cpu.close();
    }

    // ------------------------------------------------------------------ helpers

    static float[] rand(int n, float scale) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) (RNG.nextDouble(-1, 1) * scale);
        return a;
    }

    static float[] bf(float[] a) {
        float[] r = new float[a.length];
        for (int i = 0; i < a.length; i++) r[i] = Dtypes.bf16ToFloat(Dtypes.floatToBf16(a[i]));
        return r;
    }

    /** Host values as a GPU tensor of dtype (rounded to bf16 if BF16) and the same values on the CPU. */
    record Pair(Tensor g, Tensor c) {}

    static Pair pair(float[] v, DType gpuType, int... shape) {
        float[] vv = gpuType == DType.BF16 ? bf(v) : v;
        return new Pair(gpu.fromFloats(vv, gpuType, shape), cpu.fromFloats(vv, DType.F32, shape));
    }

    static Pair ints(int[] v, int... shape) { return new Pair(gpu.fromInts(v, shape), cpu.fromInts(v, shape)); }

    /** An output pair: the GPU one poisoned with NaN, the CPU one zero. */
    static Pair out(DType gpuType, int... shape) {
        Tensor g = gpu.empty(gpuType, shape);
        gpu.fill(g, Float.NaN);
        return new Pair(g, cpu.zeros(DType.F32, shape));
    }

    /** An in/out pair holding the same starting values (for accumulating ops), GPU side as dtype. */
    static Pair inout(float[] v, DType gpuType, int... shape) { return pair(v, gpuType, shape); }

    static double relErr(float[] got, float[] want) {
        double num = 0, den = 0;
        for (int i = 0; i < want.length; i++) {
            if (!Float.isFinite(got[i]) && Float.isFinite(want[i])) return Double.POSITIVE_INFINITY;
            double d = got[i] - want[i];
            num += d * d;
            den += (double) want[i] * want[i];
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }

    static void close(String what, Pair p, double tol) {
        float[] g = gpu.toFloats(p.g), c = cpu.toFloats(p.c);
        assertEquals(c.length, g.length, what + ": length");
        double e = relErr(g, c);
        System.out.printf("  %-36s rel err %.2e (tol %.0e)%n", what, e, tol);
        assertTrue(e <= tol, what + ": relative error " + e + " > " + tol + firstBad(g, c));
    }

    static void exact(String what, Pair p) {
        float[] g = gpu.toFloats(p.g), c = cpu.toFloats(p.c);
        assertArrayEquals(c, g, what + " must match exactly" + firstBad(g, c));
    }

    static String firstBad(float[] g, float[] c) {
        for (int i = 0; i < c.length; i++)
            if (!(Math.abs(g[i] - c[i]) <= 1e-3 * Math.max(1, Math.abs(c[i]))))
                return " (first difference at " + i + ": gpu " + g[i] + ", cpu " + c[i] + ")";
        return "";
    }

    static final DType[] FLOATS = {DType.BF16, DType.F32};

    static double tolFor(DType t) { return t == DType.BF16 ? BF16_TOL : F32_TOL; }

    // ------------------------------------------------------------------ memory and elementwise

    @Test
    void uploadDownloadAndConversions() {
        float[] v = rand(1001, 3f);
        Tensor f = gpu.fromFloats(v, DType.F32, 1001);
        assertArrayEquals(v, gpu.toFloats(f));
        Tensor b = gpu.empty(DType.BF16, 1001);
        gpu.fill(b, Float.NaN);
        gpu.copy(b, f);  // f32 -> bf16 kernel: round to nearest even, like Dtypes.floatToBf16
        assertArrayEquals(bf(v), gpu.toFloats(b));
        Tensor f2 = gpu.empty(DType.F32, 1001);
        gpu.fill(f2, Float.NaN);
        gpu.copy(f2, b);
        assertArrayEquals(bf(v), gpu.toFloats(f2));
        // aligned, vectorised path (n % 8 == 0) and a misaligned view (scalar path)
        float[] w = rand(4096, 2f);
        Tensor fw = gpu.fromFloats(w, DType.F32, 4096), bw = gpu.empty(DType.BF16, 4096);
        gpu.copy(bw, fw);
        assertArrayEquals(bf(w), gpu.toFloats(bw));
        Tensor view = bw.view(3, 1000), fv = gpu.empty(DType.F32, 1000);
        gpu.copy(fv, view);
        assertArrayEquals(Arrays.copyOfRange(bf(w), 3, 1003), gpu.toFloats(fv));
        int[] ids = {5, -7, 1 << 20, 0};
        assertArrayEquals(ids, gpu.toInts(gpu.fromInts(ids, 4)));
        Tensor i32 = gpu.empty(DType.I32, 6);
        gpu.fill(i32, 7f);
        assertArrayEquals(new int[] {7, 7, 7, 7, 7, 7}, gpu.toInts(i32));
        Tensor b16 = gpu.empty(DType.BF16, 9);
        gpu.fill(b16, 1.5f);
        float[] filled = gpu.toFloats(b16);
        for (float x : filled) assertEquals(1.5f, x);
        for (Tensor t : List.of(f, b, f2, fw, bw, fv, i32, b16)) t.close();
    }

    @Test
    void largeTransfersCrossChunkBoundaries() {
        int n = (17 << 20) + 3;  // 68 MB of f32: two 64 MiB chunks, the last one partial
        float[] v = new float[n];
        for (int i = 0; i < n; i++) v[i] = i * 0.5f - 7f;
        try (Tensor t = gpu.fromFloats(v, DType.F32, n)) {
            assertArrayEquals(v, gpu.toFloats(t));
        }
        int[] iv = new int[n];
        for (int i = 0; i < n; i++) iv[i] = i ^ 0x5a5a5;
        try (Tensor t = gpu.fromInts(iv, n)) {
            assertArrayEquals(iv, gpu.toInts(t));
        }
        // raw bf16 bytes straight from a native segment (a memory-mapped checkpoint looks like this)
        int m = (40 << 20) + 5;
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            java.lang.foreign.MemorySegment seg = arena.allocate(2L * m, 2);
            float[] want = new float[m];
            for (int i = 0; i < m; i++) {
                short b = Dtypes.floatToBf16((i % 1000) * 0.25f - 100f);
                seg.setAtIndex(java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED, i, b);
                want[i] = Dtypes.bf16ToFloat(b);
            }
            try (Tensor t = gpu.upload(new org.sparselora.engine.io.HostTensor("w", DType.BF16, new int[] {m}, seg), DType.BF16)) {
                assertArrayEquals(want, gpu.toFloats(t));
            }
        }
    }

    @Test
    void axpyScaleMul() {
        for (DType t : FLOATS) {
            for (int n : new int[] {4096, 1003}) {
                float[] y = rand(n, 1f), x = rand(n, 1f), z = rand(n, 1f);
                Pair Y = inout(y, t, n), X = pair(x, t, n), Z = pair(z, t, n);
                gpu.axpy(Y.g, -0.75f, X.g);
                cpu.axpy(Y.c, -0.75f, X.c);
                close("axpy " + t + " n=" + n, Y, tolFor(t));
                gpu.scale(Y.g, 1.25f);
                cpu.scale(Y.c, 1.25f);
                close("scale " + t + " n=" + n, Y, tolFor(t));
                Pair O = out(t, n);
                gpu.mul(O.g, X.g, Z.g);
                cpu.mul(O.c, X.c, Z.c);
                close("mul " + t + " n=" + n, O, tolFor(t));
            }
        }
        // mixed: an f32 accumulator += bf16 increments (gradient accumulation)
        float[] y = rand(2048, 1f), x = rand(2048, 1f);
        Pair Y = inout(y, DType.F32, 2048), X = pair(x, DType.BF16, 2048);
        gpu.axpy(Y.g, 0.5f, X.g);
        cpu.axpy(Y.c, 0.5f, X.c);
        close("axpy f32 += bf16", Y, F32_TOL);
    }

    @Test
    void sumOfSquares() {
        float[] a = rand(10_000, 1f), b = rand(777, 2f);
        Pair A = pair(a, DType.F32, 10_000), B = pair(b, DType.BF16, 777);
        double g = gpu.sumOfSquares(List.of(A.g, B.g)), c = cpu.sumOfSquares(List.of(A.c, B.c));
        assertEquals(c, g, 1e-5 * c);
    }

    @Test
    void dropoutMatchesCpuMask() {
        int n = 5000;
        float[] x = rand(n, 1f);
        for (DType t : FLOATS) {
            Pair X = pair(x, t, n), O = out(t, n);
            gpu.dropout(O.g, X.g, 0.3f, 1234567L);
            cpu.dropout(O.c, X.c, 0.3f, 1234567L);
            float[] g = gpu.toFloats(O.g), c = cpu.toFloats(O.c);
            int dropped = 0;
            for (int i = 0; i < n; i++) {
                assertEquals(c[i] == 0f, g[i] == 0f, "dropout mask differs at " + i);
                if (g[i] == 0f) dropped++;
                assertEquals(GpuBackend.dropoutUniform(1234567L, i) >= 0.3f, g[i] != 0f || x[i] == 0f);
            }
            assertTrue(dropped > n * 0.25 && dropped < n * 0.35, "dropped " + dropped + " of " + n + " at p=0.3");
            close("dropout " + t, O, tolFor(t));
        }
    }

    @Test
    void randomNormalMatchesHostDraw() {
        long seed = new java.util.Random().nextLong();   // fresh stream each run
        int n = 100_003;
        for (DType t : FLOATS) {
            Pair O = out(t, n);
            gpu.randomNormal(O.g, seed, 0.25f, 0.5f);
            cpu.randomNormal(O.c, seed, 0.25f, 0.5f);
            close("randomNormal " + t + " seed " + seed, O, tolFor(t));
            float[] g = gpu.toFloats(O.g);
            double m = 0, v = 0;
            for (float x : g) m += x;
            m /= n;
            for (float x : g) v += (x - m) * (x - m);
            double sd = Math.sqrt(v / n);
            assertEquals(0.25, m, 0.01, "mean");
            assertEquals(0.5, sd, 0.01, "std");
        }
    }

    // ------------------------------------------------------------------ GEMM

    @Test
    void matmulAllTransposesAndDtypes() {
        int M = 96, N = 80, K = 136;
        for (boolean ta : new boolean[] {false, true}) {
            for (boolean tb : new boolean[] {false, true}) {
                float[] a = rand(M * K, 1f), b = rand(K * N, 1f), c0 = rand(M * N, 1f);
                int[] as = ta ? new int[] {K, M} : new int[] {M, K}, bs = tb ? new int[] {N, K} : new int[] {K, N};
                // bf16 x bf16 -> f32, fresh and accumulating (beta = 1: the LoRA scale-add form)
                Pair A = pair(a, DType.BF16, as), B = pair(b, DType.BF16, bs);
                Pair C = out(DType.F32, M, N);
                gpu.matmul(C.g, A.g, ta, B.g, tb, 1f, 0f);
                cpu.matmul(C.c, A.c, ta, B.c, tb, 1f, 0f);
                close("matmul bf16->f32 " + ta + "," + tb, C, 1e-5);
                Pair Cacc = inout(c0, DType.F32, M, N);
                gpu.matmul(Cacc.g, A.g, ta, B.g, tb, 2f, 1f);
                cpu.matmul(Cacc.c, A.c, ta, B.c, tb, 2f, 1f);
                close("matmul bf16 acc alpha=2 " + ta + "," + tb, Cacc, 1e-5);
                Pair Cb = out(DType.BF16, M, N);
                gpu.matmul(Cb.g, A.g, ta, B.g, tb, 1f, 0f);
                cpu.matmul(Cb.c, A.c, ta, B.c, tb, 1f, 0f);
                close("matmul bf16->bf16 " + ta + "," + tb, Cb, BF16_TOL);
                // f32 x f32 -> f32: exact fp32 GEMM
                Pair Af = pair(a, DType.F32, as), Bf = pair(b, DType.F32, bs), Cf = out(DType.F32, M, N);
                gpu.matmul(Cf.g, Af.g, ta, Bf.g, tb, 1f, 0f);
                cpu.matmul(Cf.c, Af.c, ta, Bf.c, tb, 1f, 0f);
                close("matmul f32 " + ta + "," + tb, Cf, F32_TOL);
            }
        }
        // mixed: bf16 activations x f32 LoRA master (rounded to bf16 by policy)
        float[] x = rand(64 * 128, 1f), w = bf(rand(16 * 128, 1f));
        Pair X = pair(x, DType.BF16, 64, 128), W = pair(w, DType.F32, 16, 128), Y = out(DType.BF16, 64, 16);
        gpu.matmul(Y.g, X.g, false, W.g, true, 1f, 0f);
        cpu.matmul(Y.c, X.c, false, W.c, true, 1f, 0f);
        close("matmul bf16 x f32(master) -> bf16", Y, BF16_TOL);
        assertThrows(IllegalArgumentException.class, () -> gpu.matmul(Y.g, X.g, false, W.g, false, 1f, 0f));
    }

    /**
     * matmulRowBlocks (one strided-batched GEMM, B broadcast) against the CPU's per-block matmuls:
     * blocks of full activations in place, compact operands (stride = rows), a stride-0 operand
     * (bias rows), beta 0 and 1, W transposed or not, bf16 and f32, and an F32-master B with bf16 A
     * (the per-block default with operand conversion). Rows outside the blocks must keep their values;
     * rows inside are NaN-poisoned on the GPU before a beta-0 call.
     */
    @Test
    void matmulRowBlocksInPlaceAndCompact() {
        int B = 3, T = 40, off = 29, m = 11, K = 72, N = 48;
        for (DType t : FLOATS) {
            for (boolean tb : new boolean[] {false, true}) {
                for (float beta : new float[] {0f, 1f}) {
                    float[] w = rand(K * N, 1f), base = rand(B * T * N, 1f);
                    Pair W = pair(w, t, tb ? new int[] {N, K} : new int[] {K, N});
                    Pair X = pair(rand(B * T * K, 1f), t, B * T, K), XC = pair(rand(B * m * K, 1f), t, B * m, K);
                    String what = t + " transB=" + tb + " beta=" + beta;
                    // full -> full, in place
                    Pair Y = inout(base, t, B * T, N);
                    if (beta == 0f) for (int j = 0; j < B; j++) gpu.fill(Y.g.rows(off + j * T, m), Float.NaN);
                    gpu.matmulRowBlocks(Y.g, off, T, X.g, off, T, W.g, tb, B, m, 1f, beta);
                    cpu.matmulRowBlocks(Y.c, off, T, X.c, off, T, W.c, tb, B, m, 1f, beta);
                    close("matmulRowBlocks full->full " + what, Y, tolFor(t));
                    // full -> compact, and compact -> full
                    Pair YC = out(t, B * m, N);
                    gpu.matmulRowBlocks(YC.g, 0, m, X.g, off, T, W.g, tb, B, m, 1f, 0f);
                    cpu.matmulRowBlocks(YC.c, 0, m, X.c, off, T, W.c, tb, B, m, 1f, 0f);
                    close("matmulRowBlocks full->compact " + what, YC, tolFor(t));
                    Pair Y2 = inout(base, t, B * T, N);
                    gpu.matmulRowBlocks(Y2.g, 3, T, XC.g, 0, m, W.g, tb, B, m, 2f, beta);
                    cpu.matmulRowBlocks(Y2.c, 3, T, XC.c, 0, m, W.c, tb, B, m, 2f, beta);
                    close("matmulRowBlocks compact->full alpha=2 " + what, Y2, tolFor(t));
                    // stride-0 A: the same rows for every block (the bias add through a column of ones)
                    Pair Y3 = inout(base, t, B * T, N);
                    gpu.matmulRowBlocks(Y3.g, off, T, XC.g, 0, 0, W.g, tb, B, m, 1f, 1f);
                    cpu.matmulRowBlocks(Y3.c, off, T, XC.c, 0, 0, W.c, tb, B, m, 1f, 1f);
                    close("matmulRowBlocks stride-0 A " + what, Y3, tolFor(t));
                }
            }
        }
        // bf16 activations × an F32 master weight: the per-block default, which converts the operand
        float[] x = rand(2 * 10 * 64, 1f), w = bf(rand(16 * 64, 1f));
        Pair X = pair(x, DType.BF16, 20, 64), W = pair(w, DType.F32, 16, 64), Y = inout(rand(20 * 16, 1f), DType.BF16, 20, 16);
        gpu.matmulRowBlocks(Y.g, 2, 10, X.g, 2, 10, W.g, true, 2, 6, 1f, 0f);
        cpu.matmulRowBlocks(Y.c, 2, 10, X.c, 2, 10, W.c, true, 2, 6, 1f, 0f);
        close("matmulRowBlocks bf16 x f32(master)", Y, BF16_TOL);
        assertThrows(IllegalArgumentException.class, () -> gpu.matmulRowBlocks(Y.g, 2, 10, X.g, 2, 10, W.g, true, 3, 6, 1f, 0f));
    }

    /**
     * matmulSharedA against the CPU: right operands and outputs stacked as equally spaced views of one
     * tensor each (one strided-batched GEMM, A broadcast) and as separate tensors (the per-product
     * default), bf16 and f32, 2 and 3 products (the predictor's gate/up and q/k/v first factors). Every
     * output NaN-poisoned first.
     */
    @Test
    void matmulSharedAStackedAndSeparate() {
        int M = 300, K = 96, N = 8;
        for (DType t : FLOATS) {
            for (int count : new int[] {2, 3}) {
                Pair A = pair(rand(M * K, 1f), t, M, K);
                float[] bs = rand(count * K * N, 1f);
                Pair stackB = pair(bs, t, count * K, N);
                Pair stackO = out(t, count * M, N);
                matmulSharedAStacked(stackO, A, stackB, count, M, K, N);
                close("matmulSharedA stacked " + t + " x" + count, stackO, tolFor(t));
                Pair[] sep = new Pair[count], outs = new Pair[count];
                Tensor[] bg = new Tensor[count], bc = new Tensor[count], og = new Tensor[count], oc = new Tensor[count];
                for (int i = 0; i < count; i++) {
                    sep[i] = pair(Arrays.copyOfRange(bs, i * K * N, (i + 1) * K * N), t, K, N);
                    outs[i] = out(t, M, N);
                    bg[i] = sep[i].g; bc[i] = sep[i].c; og[i] = outs[i].g; oc[i] = outs[i].c;
                }
                gpu.matmulSharedA(og, A.g, bg);
                cpu.matmulSharedA(oc, A.c, bc);
                for (int i = 0; i < count; i++) close("matmulSharedA separate " + t + " x" + count + " #" + i, outs[i], tolFor(t));
            }
        }
    }

    /**
     * matmulSharedA on the GPU and the CPU with the count right operands (K, N) and outputs (M, N)
     * equally spaced views of stackB and stackO: one strided-batched product with A broadcast.
     */
    private static void matmulSharedAStacked(Pair stackO, Pair A, Pair stackB, int count, int M, int K, int N) {
        matmulSharedAStacked(stackO, A, stackB, count, M, K, N, true);
    }

    /** As above; {@code backend} false: the GPU side through {@link DevKernels#matmulSharedACublas}. */
    private static void matmulSharedAStacked(Pair stackO, Pair A, Pair stackB, int count, int M, int K, int N, boolean backend) {
        Tensor[] bg = new Tensor[count], bc = new Tensor[count], og = new Tensor[count], oc = new Tensor[count];
        for (int i = 0; i < count; i++) {
            bg[i] = stackB.g.view((long) i * K * N, K, N); bc[i] = stackB.c.view((long) i * K * N, K, N);
            og[i] = stackO.g.view((long) i * M * N, M, N); oc[i] = stackO.c.view((long) i * M * N, M, N);
        }
        if (backend) gpu.matmulSharedA(og, A.g, bg);
        else DevKernels.matmulSharedACublas(gpu, og, A.g, bg);
        cpu.matmulSharedA(oc, A.c, bc);
    }

    /**
     * matmulSharedA with a small left operand (the MLP predictor's x̄ (B, C) times its stacked P): the
     * skinny_shared_a kernel (the backend's) and cuBLAS's batched GEMM ({@link DevKernels}) against the CPU, at the 8B shape (8 ×
     * 4096 · 2 × (4096, 8)), K not a multiple of the block (1000), one row, 32 rows, N = 16 and 24,
     * bf16 → bf16, bf16 → f32 and f32 → f32; N = 12 (not in groups of 8) and M = 33 take cuBLAS.
     */
    @Test
    void matmulSharedASmallLeftOperand() {
        int[][] mkn = {{8, 4096, 8}, {8, 1000, 8}, {1, 4096, 8}, {32, 512, 16}, {5, 300, 24}, {8, 96, 12}, {33, 96, 8}};
        DType[][] types = {{DType.BF16, DType.BF16}, {DType.BF16, DType.F32}, {DType.F32, DType.F32}};
        for (boolean skinny : new boolean[] {true, false}) {
            for (int[] s : mkn) {
                int M = s[0], K = s[1], N = s[2];
                for (DType[] tt : types) {
                    int count = 2;
                    Pair A = pair(rand(M * K, 1f), tt[0], M, K);
                    Pair stackB = pair(rand(count * K * N, 1f), tt[0], count * K, N);
                    Pair stackO = out(tt[1], count * M, N);
                    matmulSharedAStacked(stackO, A, stackB, count, M, K, N, skinny);
                    close("matmulSharedA " + (skinny ? "skinny " : "cuBLAS ") + M + "x" + K + "x" + N + " " + tt[0] + "->" + tt[1],
                            stackO, tt[1] == DType.BF16 ? BF16_TOL : (tt[0] == DType.F32 ? F32_TOL : 1e-4));
                }
            }
        }
    }

    // ------------------------------------------------------------------ layers

    @Test
    void embedding() {
        int V = 50, C = 64, N = 37;
        int[] ids = new int[N];
        for (int i = 0; i < N; i++) ids[i] = RNG.nextInt(V);
        for (DType t : FLOATS) {
            Pair W = pair(rand(V * C, 1f), t, V, C), I = ints(ids, N), O = out(t, N, C);
            gpu.embedding(O.g, I.g, W.g);
            cpu.embedding(O.c, I.c, W.c);
            exact("embedding " + t, O);
        }
    }

    @Test
    void rmsNormForwardFusedAndBackward() {
        for (DType t : FLOATS) {
            for (int C : new int[] {256, 100, 12288}) {  // register-cached row, scalar path, long row
                int N = C > 4096 ? 3 : 19;
                float eps = 1e-5f;
                float[] x = rand(N * C, 2f), w = rand(C, 1f), d = rand(N * C, 1f), dout = rand(N * C, 1f);
                Pair X = pair(x, t, N, C), W = pair(w, t, C), O = out(t, N, C), R = out(DType.F32, N);
                gpu.rmsNorm(O.g, R.g, X.g, W.g, eps);
                cpu.rmsNorm(O.c, R.c, X.c, W.c, eps);
                close("rmsNorm out " + t + " C=" + C, O, tolFor(t) * 2);
                close("rmsNorm rstd " + t + " C=" + C, R, 1e-5);
                // fused residual add + norm
                Pair Res = inout(x, t, N, C), D = pair(d, t, N, C), O2 = out(t, N, C), R2 = out(DType.F32, N);
                gpu.addRmsNorm(Res.g, O2.g, R2.g, D.g, W.g, eps);
                cpu.addRmsNorm(Res.c, O2.c, R2.c, D.c, W.c, eps);
                close("addRmsNorm residual " + t, Res, tolFor(t));
                close("addRmsNorm out " + t, O2, tolFor(t) * 2);
                close("addRmsNorm rstd " + t, R2, t == DType.BF16 ? 1e-3 : 1e-5);
                // out of place: the input residual stays as it was
                Pair In = pair(x, t, N, C), Res3 = out(t, N, C), O3 = out(t, N, C), R3 = out(DType.F32, N);
                gpu.addRmsNormTo(Res3.g, In.g, O3.g, R3.g, D.g, W.g, eps);
                cpu.addRmsNormTo(Res3.c, In.c, O3.c, R3.c, D.c, W.c, eps);
                close("addRmsNormTo residual " + t, Res3, tolFor(t));
                close("addRmsNormTo out " + t, O3, tolFor(t) * 2);
                close("addRmsNormTo rstd " + t, R3, t == DType.BF16 ? 1e-3 : 1e-5);
                exact("addRmsNormTo leaves its input " + t, In);
                assertArrayEquals(gpu.toFloats(Res.g), gpu.toFloats(Res3.g), "addRmsNormTo residual = in-place addRmsNorm's, bit for bit");
                assertArrayEquals(gpu.toFloats(O2.g), gpu.toFloats(O3.g), "addRmsNormTo out = in-place addRmsNorm's, bit for bit");
                // backward, overwrite and accumulate
                Pair DO = pair(dout, t, N, C), DX = out(t, N, C);
                gpu.rmsNormBackward(DX.g, DO.g, X.g, W.g, R.g, false);
                cpu.rmsNormBackward(DX.c, DO.c, X.c, W.c, R.c, false);
                close("rmsNormBackward " + t + " C=" + C, DX, tolFor(t) * 2);
                float[] acc0 = rand(N * C, 1f);
                Pair DXa = inout(acc0, t, N, C);
                gpu.rmsNormBackward(DXa.g, DO.g, X.g, W.g, R.g, true);
                cpu.rmsNormBackward(DXa.c, DO.c, X.c, W.c, R.c, true);
                close("rmsNormBackward acc " + t, DXa, tolFor(t) * 2);
            }
        }
    }

    static float[][] ropeTables(int maxPos, int D) {
        float[] cos = new float[maxPos * D / 2], sin = new float[maxPos * D / 2];
        for (int p = 0; p < maxPos; p++)
            for (int i = 0; i < D / 2; i++) {
                double th = p * Math.pow(500000.0, -2.0 * i / D);
                cos[p * D / 2 + i] = (float) Math.cos(th);
                sin[p * D / 2 + i] = (float) Math.sin(th);
            }
        return new float[][] {cos, sin};
    }

    /**
     * ropeQK (one launch for q and k) against CpuBackend's two rope calls: GQA head counts, the
     * vector path (D = 128, 64), the scalar path (D = 12; and D = 128 with q an unaligned view),
     * forward then inverse, both dtypes (tolerances as rope).
     */
    @Test
    void ropeQkMatchesCpu() {
        int N = 37, Hq = 4, Hkv = 2, maxPos = 600;
        int[] pos = new int[N];
        for (int i = 0; i < N; i++) pos[i] = RNG.nextInt(maxPos);
        Pair P = ints(pos, N);
        for (int[] c : new int[][] {{128, 0}, {64, 0}, {12, 0}, {128, 1}}) {
            int D = c[0];
            boolean unaligned = c[1] == 1;
            float[][] tb = ropeTables(maxPos, D);
            Pair COS = pair(tb[0], DType.F32, maxPos, D / 2), SIN = pair(tb[1], DType.F32, maxPos, D / 2);
            for (DType t : FLOATS) {
                float[] q = rand(N * Hq * D, 1f), k = rand(N * Hkv * D, 1f);
                Pair Q = inout(q, t, N, Hq * D), K = inout(k, t, N, Hkv * D);
                Tensor parent = null;
                if (unaligned) {  // q one element into a larger buffer: the scalar path
                    parent = gpu.empty(t, N * Hq * D + 1);
                    gpu.fill(parent, Float.NaN);
                    Tensor view = parent.view(1, N, Hq * D);
                    gpu.copy(view, Q.g());
                    Q.g().close();
                    Q = new Pair(view, Q.c());
                }
                String what = "ropeQK " + t + " D=" + D + (unaligned ? " unaligned q" : "");
                gpu.ropeQK(Q.g(), K.g(), P.g(), COS.g(), SIN.g(), Hq, Hkv, D, false);
                cpu.ropeQK(Q.c(), K.c(), P.c(), COS.c(), SIN.c(), Hq, Hkv, D, false);
                close(what + " q", Q, tolFor(t));
                close(what + " k", K, tolFor(t));
                gpu.ropeQK(Q.g(), K.g(), P.g(), COS.g(), SIN.g(), Hq, Hkv, D, true);
                cpu.ropeQK(Q.c(), K.c(), P.c(), COS.c(), SIN.c(), Hq, Hkv, D, true);
                close(what + " inverse q", Q, tolFor(t));
                close(what + " inverse k", K, tolFor(t));
                if (parent != null) {
                    assertTrue(Float.isNaN(gpu.toFloats(parent)[0]), what + ": the element before q is untouched");
                    parent.close();
                } else Q.g().close();
                K.g().close();
            }
        }
        assertThrows(IllegalArgumentException.class, () -> gpu.ropeQK(gpu.empty(DType.BF16, N, Hq * 16), gpu.empty(DType.BF16, N, Hq * 16),
                P.g(), gpu.empty(DType.F32, 8, 8), gpu.empty(DType.F32, 8, 8), Hq, Hkv, 16, false), "k has Hq heads, not Hkv");
    }

    @Test
    void ropeForwardAndInverse() {
        int N = 24, H = 3, D = 16, maxPos = 64;
        float[][] tb = ropeTables(maxPos, D);
        int[] pos = new int[N];
        for (int i = 0; i < N; i++) pos[i] = RNG.nextInt(maxPos);
        for (DType t : FLOATS) {
            float[] x = rand(N * H * D, 1f);
            Pair X = inout(x, t, N, H * D), P = ints(pos, N);
            Pair COS = pair(tb[0], DType.F32, maxPos, D / 2), SIN = pair(tb[1], DType.F32, maxPos, D / 2);
            gpu.rope(X.g, P.g, COS.g, SIN.g, H, D, false);
            cpu.rope(X.c, P.c, COS.c, SIN.c, H, D, false);
            close("rope " + t, X, tolFor(t));
            gpu.rope(X.g, P.g, COS.g, SIN.g, H, D, true);
            cpu.rope(X.c, P.c, COS.c, SIN.c, H, D, true);
            close("rope inverse " + t, X, tolFor(t));
        }
    }

    @Test
    void attentionForwardBackwardGqaWithPadding() {
        // small odd shape (both dtypes; every kernel: GEMM and FLASH_PIPELINED) and Llama-like head sizes
        // (D 128 with GQA 8/2, D 64) whose T is not a tile multiple, with left padding, forward and backward
        DevKernels.Attention[] all = DevKernels.Attention.values();
        checkAttention(2, 33, 4, 2, 32, new int[] {0, 7}, DType.F32, DevKernels.Attention.GEMM);
        for (DevKernels.Attention k : all) {
            checkAttention(2, 33, 4, 2, 32, new int[] {0, 7}, DType.BF16, k);
            checkAttention(2, 200, 8, 2, 128, new int[] {0, 37}, DType.BF16, k);
            checkAttention(3, 130, 4, 4, 64, new int[] {65, 0, 129}, DType.BF16, k);
        }
    }

    @Test
    void attentionFusedKernelsAcrossTileEdges() {
        // several 128-query / 64-key tiles with keyStart inside a tile (300 = 4·64 + 44 = 9·32 + 12),
        // 4 query heads per kv head; a sequence that is all padding (keyStart = T) next to one that
        // barely is; T one past two forward tiles with padding ending just past the first
        for (DevKernels.Attention k : DevKernels.Attention.values()) {
            checkAttention(2, 512, 8, 2, 128, new int[] {0, 300}, DType.BF16, k);
            checkAttention(2, 70, 4, 1, 64, new int[] {70, 3}, DType.BF16, k);
            checkAttention(1, 257, 2, 2, 32, new int[] {129}, DType.BF16, k);
        }
    }

    static void checkAttention(int B, int T, int Hq, int Hkv, int D, int[] ks, DType t, DevKernels.Attention kernel) {
        float scale = (float) (1 / Math.sqrt(D));
        int N = B * T;
        String tag = t + " B" + B + " T" + T + " " + Hq + "/" + Hkv + "x" + D + " " + kernel;
        Pair Q = pair(rand(N * Hq * D, 1f), t, N, Hq * D), K = pair(rand(N * Hkv * D, 1f), t, N, Hkv * D);
        Pair V = pair(rand(N * Hkv * D, 1f), t, N, Hkv * D), KS = ints(ks, B);
        Pair O = out(t, N, Hq * D), L = out(DType.F32, B, Hq, T);
        kernel.forward(gpu, O.g, L.g, Q.g, K.g, V.g, KS.g, B, T, Hq, Hkv, D, scale);
        cpu.attention(O.c, L.c, Q.c, K.c, V.c, KS.c, B, T, Hq, Hkv, D, scale);
        close("attention out " + tag, O, ATT_TOL);
        // lse: compare rows with a visible key (padding rows hold -inf on both)
        float[] lg = gpu.toFloats(L.g), lc = cpu.toFloats(L.c);
        for (int i = 0; i < lc.length; i++) {
            if (Float.isInfinite(lc[i])) assertEquals(lc[i], lg[i], "lse padding row " + i + " " + tag);
            else assertEquals(lc[i], lg[i], 2e-2 * Math.max(1, Math.abs(lc[i])), "lse row " + i + " " + tag);
        }
        // padded query rows output exactly 0
        float[] og = gpu.toFloats(O.g);
        for (int b = 0; b < B; b++)
            for (int tt = 0; tt < Math.min(ks[b], T); tt++)
                for (int j = 0; j < Hq * D; j++) assertEquals(0f, og[(b * T + tt) * Hq * D + j], "padded query row output " + tag);
        Pair DO = pair(rand(N * Hq * D, 1f), t, N, Hq * D);
        Pair DQ = out(t, N, Hq * D), DK = out(t, N, Hkv * D), DV = out(t, N, Hkv * D);
        // the backward reads the forward's out and lse: each side gets its own forward results
        kernel.backward(gpu, DQ.g, DK.g, DV.g, DO.g, O.g, L.g, Q.g, K.g, V.g, KS.g, B, T, Hq, Hkv, D, scale);
        cpu.attentionBackward(DQ.c, DK.c, DV.c, DO.c, O.c, L.c, Q.c, K.c, V.c, KS.c, B, T, Hq, Hkv, D, scale);
        close("attention dq " + tag, DQ, ATT_TOL);
        close("attention dk " + tag, DK, ATT_TOL);
        close("attention dv " + tag, DV, ATT_TOL);
        // again into re-poisoned outputs: nothing may carry over between calls (FLASH_PIPELINED
        // accumulates dQ in a kept fp32 scratch buffer that must be cleared every call)
        for (Pair p : new Pair[] {DQ, DK, DV}) gpu.fill(p.g, Float.NaN);
        kernel.backward(gpu, DQ.g, DK.g, DV.g, DO.g, O.g, L.g, Q.g, K.g, V.g, KS.g, B, T, Hq, Hkv, D, scale);
        close("attention dq (second call) " + tag, DQ, ATT_TOL);
        close("attention dk (second call) " + tag, DK, ATT_TOL);
        close("attention dv (second call) " + tag, DV, ATT_TOL);
    }

    @Test
    void attentionCachedMatchesCpu() {
        int Hq = 4, Hkv = 2, D = 16, maxT = 40, pos0 = 20, n = 5;
        float scale = 0.25f;
        for (DType t : FLOATS) {
            Pair Q = pair(rand(n * Hq * D, 1f), t, n, Hq * D);
            Pair KC = pair(rand(maxT * Hkv * D, 1f), t, maxT, Hkv * D), VC = pair(rand(maxT * Hkv * D, 1f), t, maxT, Hkv * D);
            Pair O = out(t, n, Hq * D);
            gpu.attentionCached(O.g, Q.g, KC.g, VC.g, pos0, Hq, Hkv, D, scale);
            cpu.attentionCached(O.c, Q.c, KC.c, VC.c, pos0, Hq, Hkv, D, scale);
            close("attentionCached " + t, O, tolFor(t) * 2);
        }
    }

    @Test
    void swigluForwardBackward() {
        for (DType t : FLOATS) {
            for (int n : new int[] {4096, 999}) {
                Pair G = pair(rand(n, 4f), t, n), U = pair(rand(n, 2f), t, n), DO = pair(rand(n, 1f), t, n);
                Pair O = out(t, n), DG = out(t, n), DU = out(t, n);
                gpu.swiglu(O.g, G.g, U.g);
                cpu.swiglu(O.c, G.c, U.c);
                close("swiglu " + t + " n=" + n, O, tolFor(t) * 2);
                gpu.swigluBackward(DG.g, DU.g, DO.g, G.g, U.g);
                cpu.swigluBackward(DG.c, DU.c, DO.c, G.c, U.c);
                close("swiglu dgate " + t, DG, tolFor(t) * 2);
                close("swiglu dup " + t, DU, tolFor(t) * 2);
            }
        }
    }

    @Test
    void crossEntropyWithIgnoredRowsAndInPlace() {
        for (int V : new int[] {1000, 777}) crossEntropyCase(9, V);
    }

    static void crossEntropyCase(int n, int V) {
        int[] tg = new int[n];
        for (int i = 0; i < n; i++) tg[i] = i % 3 == 1 ? -100 : RNG.nextInt(V);
        float[] logits = rand(n * V, 6f);
        for (DType t : FLOATS) {
            Pair LG = pair(logits, t, n, V), TG = ints(tg, n), LS = out(DType.F32, n), DL = out(t, n, V);
            gpu.crossEntropy(LS.g, DL.g, LG.g, TG.g, 0.125f);
            cpu.crossEntropy(LS.c, DL.c, LG.c, TG.c, 0.125f);
            close("crossEntropy loss " + t + " V=" + V, LS, 1e-4);
            close("crossEntropy dlogits " + t + " V=" + V, DL, tolFor(t) * 2);
            // in place: dlogits is the logits buffer
            Pair LG2 = pair(logits, t, n, V), LS2 = out(DType.F32, n);
            gpu.crossEntropy(LS2.g, LG2.g, LG2.g, TG.g, 0.125f);
            cpu.crossEntropy(LS2.c, LG2.c, LG2.c, TG.c, 0.125f);
            close("crossEntropy in place loss " + t, LS2, 1e-4);
            close("crossEntropy in place dlogits " + t, LG2, tolFor(t) * 2);
        }
    }

    // ------------------------------------------------------------------ optimizer

    @Test
    void adamwSingle() {
        int n = 3000;
        float[] p = rand(n, 1f), gr = rand(n, 1f), m = rand(n, 0.1f), v = new float[n];
        for (int i = 0; i < n; i++) v[i] = Math.abs(rand(1, 0.01f)[0]);
        Pair P = inout(p, DType.F32, n), G = pair(gr, DType.F32, n), M = inout(m, DType.F32, n), Vv = inout(v, DType.F32, n);
        for (int step = 1; step <= 3; step++) {
            gpu.adamw(P.g, G.g, M.g, Vv.g, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step, 0.5f);
            cpu.adamw(P.c, G.c, M.c, Vv.c, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step, 0.5f);
        }
        close("adamw param", P, F32_TOL);
        close("adamw m", M, F32_TOL);
        close("adamw v", Vv, F32_TOL);
    }

    /**
     * The fused multi-tensor group (sumsq_multi, adamw_multi) against CpuBackend's per-tensor ops,
     * over 320 tensors of mixed sizes: LoRA-like shapes from 1 element to several tiles, sizes that
     * are not a multiple of 4 and a tensor seen through an unaligned view (the scalar path), empty
     * tensors, bf16 / f32 compute copies and a copy that is the parameter itself. Three steps with
     * fresh gradients; after each: the sum of squares (1e-6 relative: the GPU sums ≤ 16
     * squares per thread in fp32 before going to double, the CPU every square in double) and bit
     * for bit the same when asked twice, params, moments and copies (adamw tolerances; copies bf16),
     * gradients exactly zero (or untouched when not asked to zero).
     */
    @Test
    void adamwGroupMatchesCpuOverManyTensors() {
        List<Pair[]> pairs = new ArrayList<>();
        List<Tensor[]> gs = new ArrayList<>(), cs = new ArrayList<>();
        List<Tensor> parents = new ArrayList<>();
        int[][] lora = {{8, 64}, {64, 8}, {8, 48}, {16, 8}};
        for (int i = 0; i < 320; i++) {
            int[] shape = switch (i % 10) {
                case 0, 1, 2, 3 -> lora[i % 4];
                case 4 -> new int[] {1 + RNG.nextInt(7)};                  // tiny, often not a multiple of 4
                case 5 -> new int[] {3, 4097 + RNG.nextInt(50)};            // several tiles, ragged tail
                case 6 -> new int[] {0, 8};                                 // empty
                case 7 -> new int[] {4, 1024};                              // exactly one tile
                case 8 -> new int[] {2 + RNG.nextInt(30), 33};
                default -> new int[] {32, 256};                             // two tiles
            };
            int n = 1;
            for (int d : shape) n *= d;
            float[] v = rand(n, 0.01f);
            for (int j = 0; j < n; j++) v[j] = Math.abs(v[j]);
            Pair P = inout(rand(n, 1f), DType.F32, shape), G = pair(rand(n, 1f), DType.F32, shape);
            Pair M = inout(rand(n, 0.1f), DType.F32, shape), V = inout(v, DType.F32, shape);
            if (i == 17) {  // an fp32 param inside a larger buffer at an odd offset: unaligned, scalar path
                Tensor big = gpu.empty(DType.F32, n + 1);
                gpu.copyFromHost(big, concat(new float[] {Float.NaN}, cpu.toFloats(P.c())));
                parents.add(big);
                P.g().close();
                P = new Pair(big.view(1, shape), P.c());
            }
            Pair C = null;
            Tensor gc = null, cc = null;
            switch (i % 3) {
                case 0 -> { C = out(DType.BF16, shape); gc = C.g(); cc = C.c(); }
                case 1 -> { if (i % 2 == 0) { C = out(DType.F32, shape); gc = C.g(); cc = C.c(); } }
                default -> { gc = P.g(); cc = P.c(); }  // the param is its own compute copy
            }
            pairs.add(new Pair[] {P, G, M, V, C});
            gs.add(gc == null ? new Tensor[] {P.g(), G.g(), M.g(), V.g()} : new Tensor[] {P.g(), G.g(), M.g(), V.g(), gc});
            cs.add(cc == null ? new Tensor[] {P.c(), G.c(), M.c(), V.c()} : new Tensor[] {P.c(), G.c(), M.c(), V.c(), cc});
        }
        try (AdamwGroup group = gpu.adamwGroup(gs); AdamwGroup ref = cpu.adamwGroup(cs)) {
            assertEquals(320, group.size());
            for (int step = 1; step <= 3; step++) {
                double want = ref.gradSumOfSquares(), got = group.gradSumOfSquares();
                System.out.printf("  adamw group step %d: sum of squares gpu %.12e cpu %.12e%n", step, got, want);
                assertEquals(want, got, 1e-6 * want, "sum of squares, step " + step);
                assertEquals(got, group.gradSumOfSquares(), "the same gradients give the same bits");
                boolean zero = step != 2;
                group.step(2e-3f * step, 0.9f, 0.95f, 1e-6f, 0.01f, step, 0.7f / step, zero);
                ref.step(2e-3f * step, 0.9f, 0.95f, 1e-6f, 0.01f, step, 0.7f / step, zero);
                String[] role = {"param", "grad", "m", "v", "copy"};
                double[] worst = new double[5];
                for (int i = 0; i < pairs.size(); i++) {
                    Pair[] sl = pairs.get(i);
                    if (sl[0].g().numel() == 0) continue;
                    for (int j : new int[] {0, 2, 3, 4}) {
                        if (sl[j] == null) continue;
                        float[] gv = gpu.toFloats(sl[j].g()), cv = cpu.toFloats(sl[j].c());
                        double e = relErr(gv, cv), tol = sl[j].g().dtype() == DType.BF16 ? BF16_TOL : F32_TOL;
                        worst[j] = Math.max(worst[j], e);
                        assertTrue(e <= tol, "step " + step + " slot " + i + " " + role[j] + ": relative error " + e + " > " + tol + firstBad(gv, cv));
                    }
                    if (sl[4] != null && sl[4].g().dtype() == DType.BF16) {  // exactly the bf16 rounding of the GPU's param
                        float[] pv = gpu.toFloats(sl[0].g()), cv = gpu.toFloats(sl[4].g());
                        for (int e = 0; e < pv.length; e++)
                            assertEquals(Dtypes.bf16ToFloat(Dtypes.floatToBf16(pv[e])), cv[e], "slot " + i + " copy[" + e + "]");
                    }
                    float[] gg = gpu.toFloats(sl[1].g()), cg = cpu.toFloats(sl[1].c());
                    assertArrayEquals(cg, gg, "step " + step + " slot " + i + " grad " + (zero ? "zeroed" : "kept"));
                    if (zero) for (float x : gg) assertEquals(0f, x, "slot " + i + " grad zeroed");
                }
                System.out.printf("  adamw group step %d: worst rel err param %.2e m %.2e v %.2e copy %.2e%n", step, worst[0], worst[2], worst[3], worst[4]);
                // fresh gradients for the next step, the same on both sides
                for (Pair[] s : pairs) {
                    float[] ng = rand((int) s[1].g().numel(), 1f);
                    gpu.copyFromHost(s[1].g(), ng);
                    cpu.copyFromHost(s[1].c(), ng);
                }
            }
            // the unaligned view's neighbour is untouched
            assertTrue(Float.isNaN(gpu.toFloats(parents.get(0))[0]), "the element before the view stays as it was");
        } finally {
            for (Pair[] s : pairs) for (Pair p : s) if (p != null) { p.g().close(); p.c().close(); }
            for (Tensor t : parents) t.close();
        }
    }

    @Test
    void adamwGroupRejectsBadSlotsNamingTheSlot() {
        Tensor p = gpu.zeros(DType.F32, 4, 8), g = gpu.zeros(DType.F32, 4, 8), m = gpu.zeros(DType.F32, 4, 8), v = gpu.zeros(DType.F32, 4, 8);
        List<Tensor[]> slots = new ArrayList<>();
        slots.add(new Tensor[] {p, g, m, v});
        slots.add(new Tensor[] {p, g, gpu.zeros(DType.BF16, 4, 8), v});
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> gpu.adamwGroup(slots));
        assertTrue(e.getMessage().contains("slot 1") && e.getMessage().contains("m must be F32"), e.getMessage());
        slots.set(1, new Tensor[] {p, g, m, cpu.zeros(DType.F32, 4, 8)});
        e = assertThrows(IllegalArgumentException.class, () -> gpu.adamwGroup(slots));
        assertTrue(e.getMessage().contains("slot 1") && e.getMessage().contains("belongs to backend cpu"), e.getMessage());
        try (AdamwGroup empty = gpu.adamwGroup(List.of())) {
            assertEquals(0.0, empty.gradSumOfSquares());
            empty.step(1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1, 1f, true);
        }
    }

    /** The group's step needs no host value, so it can sit in a CUDA graph; its sum of squares (a read) refuses to. */
    @Test
    void adamwGroupStepReplaysFromAGraph() {
        List<Tensor[]> gs = new ArrayList<>(), cs = new ArrayList<>();
        List<Pair> ps = new ArrayList<>();
        for (int n : new int[] {4096 * 3, 10, 520}) {
            Pair P = inout(rand(n, 1f), DType.F32, n), G = pair(rand(n, 1f), DType.F32, n);
            Pair M = inout(new float[n], DType.F32, n), V = inout(new float[n], DType.F32, n), C = out(DType.BF16, n);
            gs.add(new Tensor[] {P.g, G.g, M.g, V.g, C.g});
            cs.add(new Tensor[] {P.c, G.c, M.c, V.c, C.c});
            ps.add(P);
            ps.add(C);
        }
        try (AdamwGroup group = gpu.adamwGroup(gs); AdamwGroup ref = cpu.adamwGroup(cs)) {
            gpu.synchronize();
            gpu.beginCapture();
            group.step(1e-2f, 0.9f, 0.99f, 1e-8f, 0f, 1, 0.5f, false);
            assertThrows(IllegalStateException.class, group::gradSumOfSquares, "the sum of squares reads to the host: not in a capture");
            GpuBackend.Graph graph = gpu.endCapture();
            for (int r = 0; r < 2; r++) {
                graph.replay();
                ref.step(1e-2f, 0.9f, 0.99f, 1e-8f, 0f, 1, 0.5f, false);
            }
            graph.close();
            for (int i = 0; i < ps.size(); i++) close("graph-replayed group step, " + (i % 2 == 0 ? "param" : "bf16 copy") + " " + i / 2, ps.get(i), i % 2 == 0 ? F32_TOL : BF16_TOL);
        }
    }

    /**
     * The recordable update (clippedStep: Σg², clipping and AdamW with the step's scalars read from a
     * device tensor) recorded once and replayed over three steps with new gradients, lr and bias
     * corrections, clipping on and off, against the host path on an identical group
     * (gradSumOfSquares, the trainer's clip arithmetic, step): the same bits.
     */
    @Test
    void adamwGroupClippedStepOnTheDeviceEqualsTheHostClipBitForBit() {
        for (float maxNorm : new float[] {0f, 0.5f, 1e9f}) {
            List<Tensor[]> a = new ArrayList<>(), b = new ArrayList<>();
            List<Tensor> ga = new ArrayList<>(), gb = new ArrayList<>(), pa = new ArrayList<>(), pb = new ArrayList<>();
            for (int n : new int[] {4096 * 3, 10, 520}) {
                float[] p0 = rand(n, 1f);
                Tensor[] sa = {gpu.fromFloats(p0, DType.F32, n), gpu.zeros(DType.F32, n), gpu.zeros(DType.F32, n), gpu.zeros(DType.F32, n), gpu.empty(DType.BF16, n)};
                Tensor[] sb = {gpu.fromFloats(p0, DType.F32, n), gpu.zeros(DType.F32, n), gpu.zeros(DType.F32, n), gpu.zeros(DType.F32, n), gpu.empty(DType.BF16, n)};
                a.add(sa); b.add(sb); ga.add(sa[1]); gb.add(sb[1]); pa.add(sa[0]); pb.add(sb[0]);
            }
            Tensor hyper = gpu.empty(DType.F32, 5);
            try (AdamwGroup recorded = gpu.adamwGroup(a); AdamwGroup host = gpu.adamwGroup(b)) {
                assertTrue(recorded.canClipOnDevice());
                GpuBackend.Graph graph = null;
                for (int step = 1; step <= 3; step++) {
                    for (int i = 0; i < ga.size(); i++) {
                        float[] g = rand((int) ga.get(i).numel(), 3f);
                        gpu.copyFromHost(ga.get(i), g);
                        gpu.copyFromHost(gb.get(i), g);
                    }
                    float inv = 1f / (100 + step), lr = 1e-2f / step;
                    float bc1 = (float) (1 - Math.pow(0.9f, step)), bc2 = (float) (1 - Math.pow(0.99f, step));   // as the trainer: float betas
                    gpu.copyFromHost(hyper, new float[] {lr, bc1, bc2, inv, maxNorm});
                    if (graph == null) {
                        gpu.beginCapture();
                        recorded.clippedStep(hyper, 0.9f, 0.99f, 1e-8f, 0.01f, true);
                        graph = gpu.endCapture();
                    }
                    graph.replay();
                    double ss = host.gradSumOfSquares(), norm = Math.sqrt(ss) * inv;
                    float scale = inv;
                    if (maxNorm > 0 && norm > maxNorm) scale *= (float) (maxNorm / (norm + 1e-6));
                    host.step(lr, 0.9f, 0.99f, 1e-8f, 0.01f, step, scale, true);
                    assertEquals(ss, recorded.lastSumOfSquares(), "step " + step + ": the same Σg²");
                }
                graph.close();
                for (int i = 0; i < pa.size(); i++) {
                    assertArrayEquals(gpu.toFloats(pb.get(i)), gpu.toFloats(pa.get(i)), "max norm " + maxNorm + ", tensor " + i + ": same bits");
                    assertArrayEquals(gpu.toFloats(a.get(i)[4]), gpu.toFloats(b.get(i)[4]), "bf16 copy " + i);
                    assertArrayEquals(new float[(int) ga.get(i).numel()], gpu.toFloats(ga.get(i)), "gradients zeroed");
                }
            }
            hyper.close();
            for (List<Tensor[]> l : List.of(a, b)) for (Tensor[] s5 : l) for (Tensor t : s5) t.close();
        }
    }

    @Test
    void maskPaddingRowsMatchesCpu() {
        int B = 4, T = 37, Cc = 72;
        int[] ks = {0, 5, 37, 36};
        for (DType t : new DType[] {DType.F32, DType.BF16}) {
            Pair X = inout(rand(B * T * Cc, 1f), t, B * T, Cc), KS = ints(ks, B);
            gpu.maskPaddingRows(X.g, KS.g, B, T);
            cpu.maskPaddingRows(X.c, KS.c, B, T);
            exact("maskPaddingRows " + t, X);
        }
    }

    static float[] concat(float[] a, float[] b) {
        float[] r = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }

    // ------------------------------------------------------------------ SparseLoRA ops

    static int[] distinct(int k, int n) {
        int[] all = new int[n];
        for (int i = 0; i < n; i++) all[i] = i;
        for (int i = 0; i < k; i++) { int j = i + RNG.nextInt(n - i); int s = all[i]; all[i] = all[j]; all[j] = s; }
        int[] r = Arrays.copyOf(all, k);
        Arrays.sort(r);
        return r;
    }

    @Test
    void gatherScatterRowsAndCols() {
        int R = 50, C = 64, k = 17;
        int[] idx = distinct(k, R), cidx = distinct(k, C);
        for (DType t : FLOATS) {
            Pair S = pair(rand(R * C, 1f), t, R, C), I = ints(idx, k), CI = ints(cidx, k);
            Pair O = out(t, k, C);
            gpu.gatherRows(O.g, S.g, I.g);
            cpu.gatherRows(O.c, S.c, I.c);
            exact("gatherRows " + t, O);
            float[] base = rand(R * C, 1f);
            for (boolean acc : new boolean[] {false, true}) {
                Pair D = inout(base, t, R, C);
                gpu.scatterRows(D.g, O.g, I.g, acc);
                cpu.scatterRows(D.c, O.c, I.c, acc);
                close("scatterRows acc=" + acc + " " + t, D, t == DType.BF16 ? BF16_TOL : 0);
            }
            Pair OC = out(t, R, k);
            gpu.gatherCols(OC.g, S.g, CI.g);
            cpu.gatherCols(OC.c, S.c, CI.c);
            exact("gatherCols " + t, OC);
            for (boolean acc : new boolean[] {false, true}) {
                Pair D = inout(base, t, R, C);
                gpu.scatterCols(D.g, OC.g, CI.g, acc);
                cpu.scatterCols(D.c, OC.c, CI.c, acc);
                close("scatterCols acc=" + acc + " " + t, D, t == DType.BF16 ? BF16_TOL : 0);
            }
        }
    }

    /**
     * Whole-row gathers and scatters (and column ones over many rows) at the sizes the kernels branch on: the vectorized grid-stride
     * path with a partial last pass, several passes (k·C/8 above the grid's 2112·256·4 units per pass),
     * the token split of the 8B timing shape's context rows (3072 of 4096 rows × 4096), and the scalar
     * per-row path (C not a multiple of 8, and a source 1 element off alignment). Exact.
     */
    @Test
    void gatherScatterRowsVectorizedAndScalarPaths() {
        int[][] cases = {{300, 64, 123}, {4096, 4096, 3072}, {2300, 8000, 2200}, {40, 70, 13}};
        for (int[] cs : cases) {
            int R = cs[0], C = cs[1], k = cs[2];
            int[] idx = shuffled(distinct(k, R));
            for (DType t : FLOATS) {
                if (t == DType.F32 && (long) R * C > 4_000_000) continue;   // the large shapes in bf16 only (the GPU's storage type)
                String what = t + " R=" + R + " C=" + C + " k=" + k;
                Pair S = pair(rand(R * C, 1f), t, R, C), I = ints(idx, k), O = out(t, k, C);
                gpu.gatherRows(O.g, S.g, I.g);
                cpu.gatherRows(O.c, S.c, I.c);
                exact("gatherRows " + what, O);
                float[] base = rand(R * C, 1f);
                for (boolean acc : new boolean[] {false, true}) {
                    Pair D = inout(base, t, R, C);
                    gpu.scatterRows(D.g, O.g, I.g, acc);
                    cpu.scatterRows(D.c, O.c, I.c, acc);
                    close("scatterRows acc=" + acc + " " + what, D, t == DType.BF16 && acc ? BF16_TOL : 0);
                }
            }
        }
        // column gathers/scatters with more rows than blocks (blocks stride over rows), bf16, exact
        {
            int R = 5000, C = 300, k = 37;
            int[] cidx = shuffled(distinct(k, C));
            Pair S = pair(rand(R * C, 1f), DType.BF16, R, C), CI = ints(cidx, k), O = out(DType.BF16, R, k);
            gpu.gatherCols(O.g, S.g, CI.g);
            cpu.gatherCols(O.c, S.c, CI.c);
            exact("gatherCols R=5000", O);
            Pair D = inout(rand(R * C, 1f), DType.BF16, R, C);
            gpu.scatterCols(D.g, O.g, CI.g, false);
            cpu.scatterCols(D.c, O.c, CI.c, false);
            exact("scatterCols R=5000", D);
        }
        // a source view 1 element off 16-byte alignment: the scalar path
        int R = 20, C = 64, k = 7;
        float[] src = rand(R * C + 1, 1f);
        Tensor big = gpu.fromFloats(bf(src), DType.BF16, R * C + 1);
        Tensor cs = cpu.fromFloats(Arrays.copyOfRange(bf(src), 1, R * C + 1), DType.F32, R, C);
        int[] idx = shuffled(distinct(k, R));
        Pair I = ints(idx, k), O = out(DType.BF16, k, C);
        gpu.gatherRows(O.g, big.view(1, R, C), I.g);
        cpu.gatherRows(O.c, cs, I.c);
        exact("gatherRows unaligned source", O);
        big.close();
    }

    /** A duplicate-free random index set in random order (the fused row/column ops must not rely on ascending sets). */
    static int[] shuffled(int[] a) {
        int[] r = a.clone();
        for (int i = r.length - 1; i > 0; i--) { int j = RNG.nextInt(i + 1); int s = r[i]; r[i] = r[j]; r[j] = s; }
        return r;
    }

    /**
     * padIndexSet and fillCols (the sparse MLP's kept-channel padding) against CpuBackend, exact: the
     * 8B shape (143 of 14336 kept), a set holding the lowest channels (the pads come after it), a range
     * not a multiple of 32, shuffled sets, no padding; fillCols on a NaN-poisoned slice leaves the
     * kept columns and writes the padding ones, bf16 and f32, including a 1-element-off view.
     */
    @Test
    void padIndexSetAndFillCols() {
        int[][] cases = {{14336, 143, 144}, {14336, 143, 150}, {100, 30, 37}, {70, 65, 70}, {64, 8, 8}, {33, 32, 33}};
        for (int[] cs : cases) {
            int n = cs[0], k = cs[1], kp = cs[2];
            for (int variant = 0; variant < 3; variant++) {
                int[] kept = variant == 0 ? distinct(k, n) : variant == 1 ? java.util.stream.IntStream.range(0, k).toArray() : shuffled(distinct(k, n));
                Pair I = ints(kept, k);
                Tensor og = gpu.empty(DType.I32, kp), oc = cpu.empty(DType.I32, kp);
                gpu.fill(og, -7f);
                gpu.padIndexSet(og, I.g, n);
                cpu.padIndexSet(oc, I.c, n);
                int[] want = cpu.toInts(oc), got = gpu.toInts(og);
                assertArrayEquals(want, got, "padIndexSet n=" + n + " k=" + k + " kp=" + kp + " variant " + variant);
                java.util.Set<Integer> seen = new java.util.HashSet<>();
                for (int v : got) assertTrue(v >= 0 && v < n && seen.add(v), "padIndexSet must give distinct indices in range: " + Arrays.toString(got));
                og.close();
                oc.close();
            }
        }
        for (DType t : FLOATS)
            for (int[] rc : new int[][] {{4096, 144, 143}, {7, 13, 5}, {3, 16, 16}, {5, 9, 0}}) {
                int R = rc[0], C = rc[1], c0 = rc[2];
                float[] v = rand(R * C, 1f);
                Pair T = inout(v, t, R, C);
                gpu.fillCols(T.g, c0, 0f);
                cpu.fillCols(T.c, c0, 0f);
                exact("fillCols " + t + " " + R + "x" + C + " from " + c0, T);
                Tensor big = gpu.empty(t, R * C + 1);
                gpu.fill(big, Float.NaN);
                Tensor V = big.view(1, R, C);
                gpu.copyFromHost(V, t == DType.BF16 ? bf(v) : v);
                gpu.fillCols(V, c0, 0f);
                exact("fillCols unaligned " + t + " " + R + "x" + C, new Pair(V, T.c));
                big.close();
            }
    }

    /** Poisons the named rows of a GPU tensor (R,C) with NaN (an element a kernel leaves unwritten then fails). */
    static void poisonRows(Tensor t, Tensor rows, int C) {
        if (rows == null || rows.numel() == 0) return;
        Tensor nan = gpu.empty(t.dtype(), (int) rows.numel(), C);
        gpu.fill(nan, Float.NaN);
        gpu.scatterRows(t, nan, rows, false);
        nan.close();
    }

    /**
     * The full-width sparse MLP's joined kernels against CpuBackend (the Backend defaults):
     * swigluJoin (hAdd in addG's place, the plain rows' kept columns added and gathered) and
     * swigluBackwardJoin (kept dh added and dg/du gathered; gathered only; neither) — 8-wide rows
     * (C % 8 == 0, rows of the 8B width with 144 kept) and the scalar path (odd C, a 1-element-off h),
     * no add rows, no plain rows, no kept columns, a row named by neither set (left alone); named rows
     * and gathered outputs NaN-poisoned first. Then scatterAddRowsCols (exact in f32).
     */
    @Test
    void joinedSwigluAndScatterAddRowsCols() {
        int[][] cases = { // R, C, nAdd, nPlain, k
                {64, 96, 16, 48, 13}, {37, 13, 9, 20, 4}, {32, 14336, 8, 24, 144}, {20, 40, 0, 20, 8}, {12, 24, 12, 0, 0}, {16, 32, 4, 12, 0}};
        for (int[] cs : cases) {
            int R = cs[0], C = cs[1], na = cs[2], np = cs[3], k = cs[4];
            int[] perm = shuffled(java.util.stream.IntStream.range(0, R).toArray());
            int[] add = Arrays.copyOf(perm, na), plain = Arrays.copyOfRange(perm, na, na + np);
            Pair AR = na == 0 ? null : ints(add, na), PR = np == 0 ? null : ints(plain, np), KC = k == 0 ? null : ints(shuffled(distinct(k, C)), k);
            int na1 = Math.max(1, na), np1 = Math.max(1, np), k1 = Math.max(1, k);
            for (DType t : FLOATS)
                for (int variant = 0; variant < 3; variant++) {
                    if (variant > 0 && (C % 8 != 0 || k == 0)) continue;
                    // variant 0: h aligned, backward adds and gathers kept; 1: h one element off (scalar
                    // path), backward only gathers kept; 2: backward neither adds nor gathers kept
                    String what = t + " R=" + R + " C=" + C + " add=" + na + " plain=" + np + " k=" + k + " variant " + variant;
                    Pair G = inout(rand(R * C, 2f), t, R, C), U = inout(rand(R * C, 2f), t, R, C), H = inout(rand(R * C, 1f), t, R, C);
                    Pair AG = pair(rand(na1 * C, 1f), t, na1, C), AU = pair(rand(na1 * C, 1f), t, na1, C);
                    Pair KG = pair(rand(np1 * k1, 1f), t, np1, k1), KU = pair(rand(np1 * k1, 1f), t, np1, k1), HK = out(t, np1, k1);
                    Tensor hg = H.g, big = null;
                    if (variant == 1) {
                        big = gpu.empty(t, R * C + 1);
                        hg = big.view(1, R, C);
                        gpu.copy(hg, H.g);
                    }
                    poisonRows(hg, AR == null ? null : AR.g, C);
                    poisonRows(hg, PR == null ? null : PR.g, C);
                    gpu.swigluJoin(hg, G.g, U.g, AG.g, AU.g, AR == null ? null : AR.g, AG.g, PR == null ? null : PR.g,
                            KG.g, KU.g, KC == null ? null : KC.g, HK.g);
                    cpu.swigluJoin(H.c, G.c, U.c, AG.c, AU.c, AR == null ? null : AR.c, AG.c, PR == null ? null : PR.c,
                            KG.c, KU.c, KC == null ? null : KC.c, HK.c);
                    close("swigluJoin h " + what, new Pair(hg, H.c), tolFor(t));
                    close("swigluJoin g " + what, G, tolFor(t));
                    close("swigluJoin u " + what, U, tolFor(t));
                    if (na > 0) close("swigluJoin hAdd " + what, AG, tolFor(t));
                    if (np > 0 && k > 0) close("swigluJoin hKept " + what, HK, tolFor(t));
                    if (big != null) big.close();
                    // backward over the joined g, u
                    Pair DH = pair(rand(R * C, 1f), t, R, C), AD = pair(rand(na1 * C, 1f), t, na1, C), KD = pair(rand(np1 * k1, 1f), t, np1, k1);
                    Pair DG = inout(rand(R * C, 1f), t, R, C), DU = inout(rand(R * C, 1f), t, R, C);
                    Pair DGA = out(t, na1, C), DUA = out(t, na1, C), DGK = out(t, np1, k1), DUK = out(t, np1, k1);
                    for (Pair p : new Pair[] {DG, DU}) {
                        poisonRows(p.g, AR == null ? null : AR.g, C);
                        poisonRows(p.g, PR == null ? null : PR.g, C);
                    }
                    boolean addKept = variant == 0, gatherKept = variant < 2;
                    gpu.swigluBackwardJoin(DG.g, DU.g, DH.g, G.g, U.g, AD.g, AR == null ? null : AR.g, DGA.g, DUA.g, PR == null ? null : PR.g,
                            addKept ? KD.g : null, KC == null ? null : KC.g, gatherKept ? DGK.g : null, gatherKept ? DUK.g : null);
                    cpu.swigluBackwardJoin(DG.c, DU.c, DH.c, G.c, U.c, AD.c, AR == null ? null : AR.c, DGA.c, DUA.c, PR == null ? null : PR.c,
                            addKept ? KD.c : null, KC == null ? null : KC.c, gatherKept ? DGK.c : null, gatherKept ? DUK.c : null);
                    close("swigluBackwardJoin dg " + what, DG, tolFor(t));
                    close("swigluBackwardJoin du " + what, DU, tolFor(t));
                    if (na > 0) {
                        close("swigluBackwardJoin dgAdd " + what, DGA, tolFor(t));
                        close("swigluBackwardJoin duAdd " + what, DUA, tolFor(t));
                    }
                    if (np > 0 && k > 0 && gatherKept) {
                        close("swigluBackwardJoin dgKept " + what, DGK, tolFor(t));
                        close("swigluBackwardJoin duKept " + what, DUK, tolFor(t));
                    }
                }
        }
        for (int[] cs : new int[][] {{50, 64, 17, 16}, {3072 / 8, 14336, 384, 144}, {9, 13, 4, 5}}) {
            int R = cs[0], C = cs[1], n = cs[2], k = cs[3];
            for (boolean shuffle : new boolean[] {false, true}) {
                Pair[] ix = rowColIndexSets(R, C, n, k, shuffle);
                Pair RI = ix[0], CI = ix[1];
                for (DType t : FLOATS) {
                    Pair O = inout(rand(R * C, 1f), t, R, C), S = pair(rand(n * k, 1f), t, n, k);
                    gpu.scatterAddRowsCols(O.g, S.g, RI.g, CI.g);
                    cpu.scatterAddRowsCols(O.c, S.c, RI.c, CI.c);
                    String what = "scatterAddRowsCols " + t + " R=" + R + " C=" + C + " n=" + n + " k=" + k + (shuffle ? " shuffled" : "");
                    if (t == DType.F32) exact(what, O); else close(what, O, BF16_TOL);
                }
            }
        }
    }

    /** n distinct rows of R and k distinct columns of C as I32 pairs {rows, cols}: ascending, or shuffled. */
    private static Pair[] rowColIndexSets(int R, int C, int n, int k, boolean shuffle) {
        int[] rows = distinct(n, R), cols = distinct(k, C);
        if (shuffle) { rows = shuffled(rows); cols = shuffled(cols); }
        return new Pair[] {ints(rows, n), ints(cols, k)};
    }

    /**
     * The fused block ops (one kernel each) against CpuBackend, exact: every shape class the kernels
     * branch on — 8-wide and scalar column paths (k or C not a multiple of 8, and an output that is a
     * view 1 element off 16-byte alignment), the shared-memory column map and the wide-row fallback
     * (C over {@link GpuSparse#SCATTER_MAP_MAX_COLS}), one row/one column, every row and every column,
     * ascending and shuffled index sets, many rows per block (n over the block count).
     */
    @Test
    void gatherRowsColsAndScatterRowsColsFused() {
        int[][] cases = { // R, C, n, k
                {50, 64, 17, 16}, {37, 70, 10, 13}, {40, 64, 40, 64}, {9, 8, 1, 1}, {33, 24, 33, 1},
                {3000, 512, 2300, 104}, {5, GpuSparse.SCATTER_MAP_MAX_COLS + 40, 3, 200}, {12, 1029, 7, 1029}};
        for (int[] cs : cases) {
            int R = cs[0], C = cs[1], n = cs[2], k = cs[3];
            for (boolean shuffle : new boolean[] {false, true}) {
                Pair[] ix = rowColIndexSets(R, C, n, k, shuffle);
                Pair RI = ix[0], CI = ix[1];
                for (DType t : FLOATS) {
                    String what = t + " R=" + R + " C=" + C + " n=" + n + " k=" + k + (shuffle ? " shuffled" : "");
                    Pair S = pair(rand(R * C, 1f), t, R, C);
                    // gather into an aligned output and into one 1 element off 16-byte alignment (scalar path)
                    Pair G = out(t, n, k);
                    gpu.gatherRowsCols(G.g, S.g, RI.g, CI.g);
                    cpu.gatherRowsCols(G.c, S.c, RI.c, CI.c);
                    exact("gatherRowsCols " + what, G);
                    Tensor big = gpu.empty(t, n * k + 1);
                    gpu.fill(big, Float.NaN);
                    Pair G1 = new Pair(big.view(1, n, k), cpu.zeros(DType.F32, n, k));
                    gpu.gatherRowsCols(G1.g, S.g, RI.g, CI.g);
                    cpu.gatherRowsCols(G1.c, S.c, RI.c, CI.c);
                    exact("gatherRowsCols unaligned " + what, G1);
                    big.close();
                    // scatter: named rows become the values at their columns and 0 elsewhere (NaN-poisoned
                    // first, so an element left unwritten fails); other rows keep their values
                    Pair src = pair(rand(n * k, 1f), t, n, k);
                    float[] base = rand(R * C, 1f);
                    Pair D = inout(base, t, R, C);
                    Tensor poison = gpu.empty(t, n, C);
                    gpu.fill(poison, Float.NaN);
                    gpu.scatterRows(D.g, poison, RI.g, false);
                    gpu.scatterRowsCols(D.g, src.g, RI.g, CI.g);
                    cpu.scatterRowsCols(D.c, src.c, RI.c, CI.c);
                    exact("scatterRowsCols " + what, D);
                    poison.close();
                    Tensor big2 = gpu.empty(t, R * C + 1);
                    Tensor D1 = big2.view(1, R, C);
                    gpu.copyFromHost(D1, t == DType.BF16 ? bf(base) : base);
                    gpu.scatterRowsCols(D1, src.g, RI.g, CI.g);
                    exact("scatterRowsCols unaligned " + what, new Pair(D1, D.c));
                    big2.close();
                }
            }
        }
    }

    @Test
    void columnNormsAndSequenceMean() {
        for (DType t : FLOATS) {
            int R = 300, C = 70;
            Pair X = pair(rand(R * C, 1f), t, R, C), O = out(DType.F32, C);
            gpu.columnNorms(O.g, X.g);
            cpu.columnNorms(O.c, X.c);
            close("columnNorms " + t, O, 1e-5);
            // C = 70: scalar lanes; C = 64 and 4104: 8-wide lanes, several column tiles; T = 300: many
            // tokens per token stride; keyStart = T: an all-padding sequence gives 0
            for (int[] bt : new int[][] {{3, 20, 70}, {3, 20, 64}, {4, 300, 4104}}) {
                int B = bt[0], T = bt[1], CC = bt[2];
                int[] ks = B == 3 ? new int[] {0, 5, 19} : new int[] {0, 17, T, 299};
                Pair XS = pair(rand(B * T * CC, 1f), t, B * T, CC), KS = ints(ks, B), M = out(t, B, CC);
                gpu.sequenceMean(M.g, XS.g, KS.g, B, T);
                cpu.sequenceMean(M.c, XS.c, KS.c, B, T);
                close("sequenceMean " + t + " B=" + B + " T=" + T + " C=" + CC, M, tolFor(t));
            }
        }
    }

    /** topKRows: each row of a (m, n) score matrix selected in one launch, equal to topK per row on the CPU. */
    @Test
    void topKRowsSelectsEveryRow() {
        for (int[] mnk : new int[][] {{2, 1024, 256}, {3, 37, 37}, {5, 14336, 143}, {1, 9, 1}}) {
            int m = mnk[0], n = mnk[1], k = mnk[2];
            float[] s = new float[m * n];
            for (int i = 0; i < s.length; i++) s[i] = i % 3 == 0 ? RNG.nextInt(5) : (float) RNG.nextDouble(-3, 3);
            Pair S = pair(s, DType.F32, m, n);
            Tensor ig = gpu.empty(DType.I32, m, k), ic = cpu.empty(DType.I32, m, k);
            gpu.fill(ig, -1f);
            gpu.topKRows(ig, S.g, k);
            cpu.topKRows(ic, S.c, k);
            assertArrayEquals(cpu.toInts(ic), gpu.toInts(ig), "topKRows m=" + m + " n=" + n + " k=" + k);
        }
    }

    /**
     * The predictor's fused low-rank norms (no (n, M) estimate written) against the CPU's estimate +
     * columnNorms: one to three segments, one row chunk (n ≤ 64, the MLP's B sequence means: the
     * square root is written directly) and many (n = 1000, q̂/k̂/v̂ over the tokens), ranks 8 and 32,
     * and rank 33 (over the kernel's register budget: the composed default runs). Fused: fp32 sums of
     * the same bf16 inputs on both sides, in different orders: 1e-4. The default writes the estimate in
     * the GPU's bf16 compute type before the norms: 3e-3.
     */
    @Test
    void lowRankColumnNormsAndSwigluScores() {
        for (DType t : FLOATS) {
            for (int[] nr : new int[][] {{8, 8}, {1000, 8}, {130, 32}, {70, 33}}) {
                int n = nr[0], r = nr[1];
                double tol = r <= GpuPredictor.LOW_RANK_MAX ? 1e-4 : 3e-3;
                int[] widths = {300, 64, 64};
                for (int segs = 1; segs <= 3; segs++) {
                    Tensor[] tg = new Tensor[segs], qg = new Tensor[segs], og = new Tensor[segs];
                    Tensor[] tc = new Tensor[segs], qc = new Tensor[segs], oc = new Tensor[segs];
                    Pair[] outs = new Pair[segs];
                    for (int i = 0; i < segs; i++) {
                        Pair T = pair(rand(n * r, 1f), t, n, r), Q = pair(rand(r * widths[i], 1f), t, r, widths[i]);
                        outs[i] = out(DType.F32, widths[i]);
                        tg[i] = T.g; tc[i] = T.c; qg[i] = Q.g; qc[i] = Q.c; og[i] = outs[i].g; oc[i] = outs[i].c;
                    }
                    cpu.lowRankColumnNorms(oc, tc, qc);
                    // both GPU forms: Σ_rows (t·q)² and the Gram form qᵀ(tᵀt)q (the default; its rounding
                    // follows the conditioning of tᵀt, so it gets 1e-3 where the row sum gets 1e-4)
                    for (boolean gram : new boolean[] {false, true}) {
                        for (Tensor o : og) gpu.fill(o, Float.NaN);
                        if (gram) gpu.lowRankColumnNorms(og, tg, qg);
                        else DevKernels.lowRankColumnNormsRowSums(gpu, og, tg, qg);
                        for (int i = 0; i < segs; i++)
                            close("lowRankColumnNorms " + (gram ? "gram " : "rows ") + t + " n=" + n + " r=" + r + " segment " + i + "/" + segs,
                                    outs[i], gram && r <= GpuPredictor.LOW_RANK_MAX ? 1e-3 : tol);
                    }
                }
                int m = 1029;
                Pair TG = pair(rand(n * r, 1f), t, n, r), TU = pair(rand(n * r, 1f), t, n, r);
                Pair QG = pair(rand(r * m, 0.5f), t, r, m), QU = pair(rand(r * m, 0.5f), t, r, m), O = out(DType.F32, m);
                gpu.lowRankSwigluColumnNorms(O.g, TG.g, QG.g, TU.g, QU.g);
                cpu.lowRankSwigluColumnNorms(O.c, TG.c, QG.c, TU.c, QU.c);
                close("lowRankSwigluColumnNorms " + t + " n=" + n + " r=" + r, O, tol);
            }
        }
    }

    @Test
    void topKDeterministicWithTies() {
        for (int n : new int[] {14336, 1024, 37}) {
            for (int k : new int[] {1, n / 3, n - 1, n}) {
                float[] s = new float[n];
                // few distinct values: many ties, so the lower-index rule decides
                for (int i = 0; i < n; i++) s[i] = RNG.nextInt(7) * 0.5f - 1f;
                if (n > 10) { s[3] = Float.NaN; s[5] = -0f; s[6] = 0f; }
                Pair S = pair(s, DType.F32, n);
                Tensor ig = gpu.empty(DType.I32, k), ic = cpu.empty(DType.I32, k);
                gpu.fill(ig, -1f);
                gpu.topK(ig, S.g, k);
                cpu.topK(ic, S.c, k);
                assertArrayEquals(cpu.toInts(ic), gpu.toInts(ig), "topK n=" + n + " k=" + k);
                int[] again = gpu.toInts(ig);
                gpu.topK(ig, S.g, k);
                assertArrayEquals(again, gpu.toInts(ig), "topK must be deterministic");
            }
        }
        // random continuous scores, large n
        int n = 100_000, k = 12_345;
        Pair S = pair(rand(n, 10f), DType.F32, n);
        Tensor ig = gpu.empty(DType.I32, k), ic = cpu.empty(DType.I32, k);
        gpu.topK(ig, S.g, k);
        cpu.topK(ic, S.c, k);
        assertArrayEquals(cpu.toInts(ic), gpu.toInts(ig), "topK n=100000");
    }

    /** Score vectors of one kind: few distinct values (ties decide), continuous, all equal, or IEEE specials. */
    static float[] topKScores(int n, int kind) {
        float[] s = new float[n];
        float[] specials = {Float.NaN, -0f, 0f, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, 1e-30f, -1e30f, 2f};
        for (int i = 0; i < n; i++)
            s[i] = switch (kind) {
                case 0 -> RNG.nextInt(7) * 0.5f - 1f;
                case 1 -> (float) RNG.nextDouble(-3, 3);
                case 2 -> (float) Math.abs(1 + 0.05 * RNG.nextGaussian());   // a layer's narrow range of norms
                case 3 -> 0.75f;
                default -> specials[RNG.nextInt(specials.length)];
            };
        if (n > 10 && kind != 3) { s[3] = Float.NaN; s[5] = -0f; s[6] = 0f; }
        return s;
    }

    /**
     * The register-resident top-k (the backend's) and the first single-block kernel ({@link DevKernels})
     * against CpuBackend.topK:
     * n on and off the block's item grid (1029, 4097: not a multiple of 4, so no vector loads), at its
     * limits (4096 and 16384 keys) and past it (16385: the first kernel serves), the 8B MLP width 14336
     * with the kept counts of the published configs (143 at 0.99, 1433 at 0.9, 12902 at 0.1), k = 0, 1,
     * n − 1 and n; ties, specials (NaN, ±0, ±∞) and all-equal rows; a misaligned score view; outputs
     * poisoned first and every call repeated (deterministic).
     */
    @Test
    void topKRegisterKernelMatchesCpu() {
        for (boolean reg : new boolean[] {true, false}) {
            for (int n : new int[] {1, 2, 37, 1024, 1029, 4096, 4097, 14336, 16384, 16385}) {
                java.util.TreeSet<Integer> ks = new java.util.TreeSet<>(List.of(0, 1, n / 3, Math.max(0, n - 1), n, n / 10));
                if (n == 14336) ks.addAll(List.of(143, 1433, 12902));
                for (int kind = 0; kind < 5; kind++) {
                    float[] s = topKScores(n, kind);
                    Pair S = pair(s, DType.F32, n);
                    for (int k : ks) {
                        Tensor ig = gpu.empty(DType.I32, k), ic = cpu.empty(DType.I32, k);
                        if (k > 0) gpu.fill(ig, -1f);
                        topK(reg, ig, S.g, k);
                        cpu.topK(ic, S.c, k);
                        String what = (reg ? "register" : "first") + " topK n=" + n + " k=" + k + " kind=" + kind;
                        int[] want = cpu.toInts(ic), got = gpu.toInts(ig);
                        assertArrayEquals(want, got, what);
                        topK(reg, ig, S.g, k);
                        assertArrayEquals(got, gpu.toInts(ig), what + ": must be deterministic");
                        ig.close();
                    }
                    S.g.close();
                }
            }
            // scores at an odd float offset: not 16-byte aligned, so the scalar loads
            int n = 14336, k = 1433;
            float[] s = topKScores(n + 1, 2);
            Pair S = pair(s, DType.F32, n + 1);
            Tensor view = S.g.view(1, n);
            Tensor ig = gpu.empty(DType.I32, k), ic = cpu.empty(DType.I32, k);
            gpu.fill(ig, -1f);
            topK(reg, ig, view, k);
            cpu.topK(ic, S.c.view(1, n), k);
            assertArrayEquals(cpu.toInts(ic), gpu.toInts(ig), (reg ? "register" : "first") + " topK on a misaligned view");
            // several rows in one launch: the attention selection's (2, Hkv·D) K scores and V norms,
            // rows of the MLP width, and rows whose length is not a multiple of 4 (misaligned rows)
            for (int[] mnk : new int[][] {{2, 1024, 256}, {3, 14336, 143}, {2, 1029, 300}, {2, 1024, 1024}}) {
                int m = mnk[0], nn = mnk[1], kk = mnk[2];
                float[] rs = new float[m * nn];
                for (int i = 0; i < m; i++) System.arraycopy(topKScores(nn, i % 3), 0, rs, i * nn, nn);
                Pair R = pair(rs, DType.F32, m, nn);
                Tensor rg = gpu.empty(DType.I32, m, kk), rc = cpu.empty(DType.I32, m, kk);
                gpu.fill(rg, -1f);
                if (reg) gpu.topKRows(rg, R.g, kk);
                else DevKernels.topKRows(gpu, rg, R.g, kk);
                cpu.topKRows(rc, R.c, kk);
                assertArrayEquals(cpu.toInts(rc), gpu.toInts(rg), (reg ? "register" : "first") + " topKRows m=" + m + " n=" + nn + " k=" + kk);
            }
        }
    }

    /** topK through the backend's op ({@code reg}: the register-resident kernel) or topk_f32 ({@link DevKernels}). */
    private static void topK(boolean reg, Tensor idx, Tensor scores, int k) {
        if (reg) gpu.topK(idx, scores, k);
        else DevKernels.topK(gpu, idx, scores, k);
    }

    /**
     * Every way lowRankColumnNorms' Gram form gets tᵀt (one cuBLAS GEMM per segment, one batched GEMM,
     * the chunked kernels) against the CPU's estimate + columnNorms, at the 8B attention predictor's
     * shape (4096 tokens, r = 8, q̂/k̂/v̂ widths 4096/1024/1024, the t stacked as ChannelSelection
     * stacks them) and at token counts that leave a short last chunk; separate t tensors too (the
     * batched mode takes one GEMM each unless the pool happened to space them equally); rank 20 with three segments
     * (3·20² > 1024 Gram entries: the kernel mode falls back to cuBLAS). Tolerance as the Gram form's: 1e-3.
     */
    @Test
    void lowRankGramModesMatchCpu() {
        for (DType t : FLOATS) {
            for (int[] nr : new int[][] {{4096, 8}, {4001, 8}, {65, 8}, {1, 8}, {300, 20}}) {
                int n = nr[0], r = nr[1];
                int[] widths = {4096, 1024, 1024};
                float[] tv = rand(3 * n * r, 1f);
                Pair T = pair(tv, t, 3 * n, r);
                Tensor[] tg = new Tensor[3], tc = new Tensor[3], qg = new Tensor[3], qc = new Tensor[3], og = new Tensor[3], oc = new Tensor[3];
                Pair[] outs = new Pair[3];
                for (int i = 0; i < 3; i++) {
                    tg[i] = T.g.view((long) i * n * r, n, r);
                    tc[i] = T.c.view((long) i * n * r, n, r);
                    Pair Q = pair(rand(r * widths[i], 1f), t, r, widths[i]);
                    qg[i] = Q.g; qc[i] = Q.c;
                    outs[i] = out(DType.F32, widths[i]);
                    og[i] = outs[i].g; oc[i] = outs[i].c;
                }
                cpu.lowRankColumnNorms(oc, tc, qc);
                // the same t as three separate tensors: not equally spaced
                Tensor[] sep = new Tensor[3];
                for (int i = 0; i < 3; i++) {
                    sep[i] = gpu.empty(t, n, r);
                    gpu.copy(sep[i], tg[i]);
                }
                for (DevKernels.GramMode mode : DevKernels.GramMode.values()) {
                    for (Tensor[] ts : new Tensor[][] {tg, sep}) {
                        for (Tensor o : og) gpu.fill(o, Float.NaN);
                        mode.lowRankColumnNorms(gpu, og, ts, qg);
                        for (int i = 0; i < 3; i++)
                            close("gram " + mode + (ts == sep ? " separate t " : " stacked t ") + t + " n=" + n + " r=" + r + " segment " + i,
                                    outs[i], 1e-3);
                    }
                }
                for (Tensor x : sep) x.close();
            }
        }
    }

    /**
     * The MLP predictor's scores over a few rows (the B sequence means): the flat-parameter kernel
     * (the backend's; rank bound 8 or 32) and the segment-struct kernel ({@link DevKernels}) against the CPU's estimates + swiglu +
     * columnNorms, at 1, 8 and 64 rows (the most one pass takes), ranks 5, 8, 16 and 32, the 8B MLP
     * width 14336 and an odd width. Both sum fp32 products of the same inputs: 1e-4.
     */
    @Test
    void lowRankSwigluScoresOverFewRows() {
        for (boolean small : new boolean[] {true, false}) {
            for (DType t : FLOATS)
                for (int[] nrm : new int[][] {{8, 8, 14336}, {1, 8, 1029}, {64, 5, 1029}, {8, 16, 300}, {3, 32, 1029}}) {
                    int n = nrm[0], r = nrm[1], m = nrm[2];
                    Pair TG = pair(rand(n * r, 1f), t, n, r), TU = pair(rand(n * r, 1f), t, n, r);
                    Pair QG = pair(rand(r * m, 0.5f), t, r, m), QU = pair(rand(r * m, 0.5f), t, r, m), O = out(DType.F32, m);
                    if (small) gpu.lowRankSwigluColumnNorms(O.g, TG.g, QG.g, TU.g, QU.g);
                    else DevKernels.lowRankSwigluSegments(gpu, O.g, TG.g, QG.g, TU.g, QU.g);
                    cpu.lowRankSwigluColumnNorms(O.c, TG.c, QG.c, TU.c, QU.c);
                    close("lowRankSwigluColumnNorms " + (small ? "small " : "struct ") + t + " n=" + n + " r=" + r + " m=" + m, O, 1e-4);
                }
        }
    }

    /** expandGroupChannelsRows (K's and V's kept channels expanded in one launch) against the CPU's per-row default. */
    @Test
    void expandGroupChannelsRowsMatchesCpu() {
        for (int[] hgdk : new int[][] {{8, 4, 128, 256}, {4, 3, 16, 13}, {2, 1, 8, 16}, {8, 4, 128, 1}}) {
            int hkv = hgdk[0], g = hgdk[1], d = hgdk[2], k = hgdk[3];
            int[] kv = new int[2 * k];
            System.arraycopy(distinct(k, hkv * d), 0, kv, 0, k);
            System.arraycopy(distinct(k, hkv * d), 0, kv, k, k);
            Pair I = ints(kv, 2, k);
            Tensor og = gpu.empty(DType.I32, 2, k * g), oc = cpu.empty(DType.I32, 2, k * g);
            gpu.fill(og, -1f);
            gpu.expandGroupChannelsRows(og, I.g, g, d);
            cpu.expandGroupChannelsRows(oc, I.c, g, d);
            assertArrayEquals(cpu.toInts(oc), gpu.toInts(og), "expandGroupChannelsRows Hkv=" + hkv + " G=" + g + " D=" + d + " k=" + k);
        }
    }

    @Test
    void gqaChannelScoresAndExpansionOnTheDevice() {
        int Hkv = 4, G = 3, D = 16;
        Pair QN = pair(rand(Hkv * G * D, 1f), DType.F32, Hkv * G * D), KN = pair(rand(Hkv * D, 1f), DType.F32, Hkv * D);
        Pair S = out(DType.F32, Hkv * D);
        gpu.kvChannelScores(S.g, QN.g, KN.g, Hkv, G, D);
        cpu.kvChannelScores(S.c, QN.c, KN.c, Hkv, G, D);
        close("kvChannelScores", S, 1e-6);
        for (int k : new int[] {1, 13, Hkv * D}) {
            int[] kv = distinct(k, Hkv * D);
            Pair I = ints(kv, k);
            Tensor og = gpu.empty(DType.I32, k * G), oc = cpu.empty(DType.I32, k * G);
            gpu.fill(og, -1f);
            gpu.expandGroupChannels(og, I.g, G, D);
            cpu.expandGroupChannels(oc, I.c, G, D);
            assertArrayEquals(cpu.toInts(oc), gpu.toInts(og), "expandGroupChannels k=" + k);
        }
    }

    @Test
    void tensorsReuseFreedBlocksAndGraphsKeepTheirs() {
        Tensor a = gpu.empty(DType.BF16, 1000);
        long held = gpu.allocatedMemory();
        a.close();
        Tensor b = gpu.empty(DType.BF16, 1000);  // served from the cache: no new device memory
        assertEquals(held, gpu.allocatedMemory());
        b.close();
        // a tensor closed inside a capture stays reserved for the graph's replays
        Pair X = pair(rand(4096, 1f), DType.F32, 4096), Y = out(DType.F32, 4096);
        gpu.beginCapture();
        Tensor tmp = gpu.empty(DType.F32, 4096);
        gpu.copy(tmp, X.g);
        gpu.scale(tmp, 2f);
        gpu.copy(Y.g, tmp);
        tmp.close();
        GpuBackend.Graph graph = gpu.endCapture();
        Tensor other = gpu.zeros(DType.F32, 4096);  // must not get tmp's block
        graph.replay();
        cpu.copy(Y.c, X.c);
        cpu.scale(Y.c, 2f);
        close("graph with a captured temporary", Y, 0);
        assertArrayEquals(new float[4096], gpu.toFloats(other), "a tensor made after the capture must not share the graph's scratch");
        graph.close();
        other.close();
    }

    // ------------------------------------------------------------------ graphs and errors

    @Test
    void graphCaptureAndReplay() {
        int M = 64, K = 128, N = 32;
        Pair X = pair(rand(M * K, 1f), DType.BF16, M, K), W = pair(rand(N * K, 1f), DType.BF16, N, K);
        Pair Y = inout(new float[M * N], DType.F32, M, N), Z = pair(rand(M * N, 1f), DType.F32, M, N);
        Pair S = out(DType.F32, N), I = new Pair(gpu.empty(DType.I32, 5), cpu.empty(DType.I32, 5));
        Runnable gpuStep = () -> {
            gpu.matmul(Y.g, X.g, false, W.g, true, 0.5f, 1f);   // Y += 0.5·X·Wᵀ
            gpu.axpy(Y.g, -1f, Z.g);                             // Y -= Z
            gpu.scale(Y.g, 0.9f);
            gpu.columnNorms(S.g, Y.g);
            gpu.topK(I.g, S.g, 5);
        };
        gpu.synchronize();
        gpu.beginCapture();
        gpuStep.run();
        assertThrows(IllegalStateException.class, () -> gpu.toFloats(Y.g), "downloads must refuse during capture");
        GpuBackend.Graph graph = gpu.endCapture();
        // capture recorded, did not run: Y is still zero
        assertArrayEquals(new float[M * N], gpu.toFloats(Y.g));
        for (int r = 0; r < 3; r++) {
            graph.replay();
            cpu.matmul(Y.c, X.c, false, W.c, true, 0.5f, 1f);
            cpu.axpy(Y.c, -1f, Z.c);
            cpu.scale(Y.c, 0.9f);
        }
        cpu.columnNorms(S.c, Y.c);
        cpu.topK(I.c, S.c, 5);
        close("graph replay x3: Y", Y, 1e-5);
        close("graph replay x3: column norms", S, 1e-5);
        assertArrayEquals(cpu.toInts(I.c), gpu.toInts(I.g), "graph replay: topK");
        float ms = gpu.timeMs(() -> { for (int r = 0; r < 100; r++) graph.replay(); });
        System.out.printf("  graph of 7 ops: %.1f us per replay%n", ms * 10);
        graph.close();
    }

    @Test
    void badInputsSayWhatIsWrong() {
        Tensor a = gpu.empty(DType.BF16, 4, 8), b = gpu.empty(DType.BF16, 5, 8), c = gpu.empty(DType.F32, 4, 5);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> gpu.matmul(c, a, false, b, false, 1, 0));
        assertTrue(e.getMessage().contains("shapes disagree"), e.getMessage());
        Tensor f16 = gpu.empty(DType.F16, 8);
        e = assertThrows(IllegalArgumentException.class, () -> gpu.scale(f16, 2f));
        assertTrue(e.getMessage().contains("F16"), e.getMessage());
        Tensor s = gpu.empty(DType.F32, 10), idx = gpu.empty(DType.I32, 3);
        assertThrows(IllegalArgumentException.class, () -> gpu.topK(idx, s, 11));
        assertThrows(IllegalArgumentException.class, () -> gpu.axpy(a, 1f, b));
        Backend other = cpu;
        assertThrows(IllegalArgumentException.class, () -> gpu.copy(a, other.empty(DType.F32, 4, 8)));
        assertTrue(gpu.peakMemory() >= gpu.allocatedMemory() && gpu.allocatedMemory() > 0);
        gpu.resetPeakMemory();
        assertEquals(gpu.allocatedMemory(), gpu.peakMemory());
        assertTrue(gpu.peakMemoryInUse() <= gpu.peakMemory());
    }
}
