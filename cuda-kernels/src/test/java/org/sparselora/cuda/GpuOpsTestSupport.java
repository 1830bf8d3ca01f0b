package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.Dtypes;

/**
 * What the GPU op tests share ({@link GpuMemoryTest}, {@link GpuBlasTest}, {@link GpuLayersTest},
 * {@link GpuAttentionTest}, {@link GpuOptimizerTest}, {@link GpuSparseTest}, {@link GpuPredictorTest}:
 * one per capability of the backend): every GpuBackend op against CpuBackend (fp32, the truth) on
 * fresh random inputs. Inputs are drawn, rounded to bf16 where the GPU stores bf16, and given to
 * both backends identically; every GPU output is poisoned with NaN first, so an element a kernel forgot to write fails the comparison.
 * Error is ‖gpu − cpu‖ / ‖cpu‖ over the whole output. Tolerances (documented per op):
 * <ul>
 *   <li>bf16 outputs: 1e-2 (one bf16 rounding is 2⁻⁹ ≈ 2e-3 relative);
 *   <li>fp32 outputs from fp32 inputs (AdamW, fp32 GEMM, fp32 elementwise): 1e-5;
 *   <li>attention forward/backward: 2e-2 (bf16 operands in both GEMMs, bf16 probabilities and dS);
 *   <li>exact: conversions, copies, gathers/scatters, embedding, topK, dropout masks.
 * </ul>
 * Needs a CUDA GPU: each test class is tagged {@code gpu}, run by {@code benchmarks/gpu/device-check.sh};
 * without a usable GPU it fails with the reason (never skips). Each class opens its own backend.
 */
abstract class GpuOpsTestSupport {
    static GpuBackend gpu;
    static CpuBackend cpu;
    static final SplittableRandom RNG = new SplittableRandom(System.nanoTime());
    static final float BF16_TOL = 1e-2f, F32_TOL = 1e-5f, ATT_TOL = 2e-2f;

    @BeforeAll
    static void setUp() {
        if (!Gpu.available()) fail("GPU tests need a CUDA GPU: " + Gpu.reason());
        gpu = GpuBackend.create(0);
        cpu = new CpuBackend(2);
        System.out.println("GPU op tests on " + gpu.deviceName() + " (cc " + gpu.computeCapability() + ", PTX " + gpu.ptxArch() + ")");
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

    /**
     * Host values as a GPU tensor of dtype (rounded to bf16 if BF16) and the same values on the CPU.
     * A class, not a record, so the test classes can read the fields directly ({@code p.g}).
     */
    static final class Pair {
        final Tensor g, c;

        Pair(Tensor g, Tensor c) {
            this.g = g;
            this.c = c;
        }

        Tensor g() { return g; }

        Tensor c() { return c; }
    }

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

    static int[] distinct(int k, int n) {
        int[] all = new int[n];
        for (int i = 0; i < n; i++) all[i] = i;
        for (int i = 0; i < k; i++) { int j = i + RNG.nextInt(n - i); int s = all[i]; all[i] = all[j]; all[j] = s; }
        int[] r = Arrays.copyOf(all, k);
        Arrays.sort(r);
        return r;
    }
}
