package org.sparselora.engine.backend.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

/** The element-wise kernels: the exp's accuracy, and vector lanes bit-identical to the scalar form. */
class KernelsTest {

    @Test
    void expIsWithinTwoUlpAndVectorEqualsScalarBitForBit() {
        Random r = new Random(1);
        int n = 100_003; // not a multiple of any vector width: the scalar tail runs too
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) (r.nextDouble() * 170 - 85);
        x[0] = 0f; x[1] = -87f; x[2] = 88f; x[3] = 1e-8f; x[4] = -1e-8f;
        float[] v = x.clone();
        new VectorMatmulKernels().expShift(v, 0, n, 0f);
        float[] sc = x.clone();
        new MatmulKernels.Scalar().expShift(sc, 0, n, 0f);
        double worst = 0;
        for (int i = 0; i < n; i++) {
            assertEquals(Float.floatToIntBits(sc[i]), Float.floatToIntBits(v[i]), "lane vs scalar at x=" + x[i]);
            double want = Math.exp(x[i]);
            worst = Math.max(worst, Math.abs(v[i] - want) / Math.ulp((float) want));
        }
        assertTrue(worst <= 2.0, "max error " + worst + " ulp");
        assertEquals(1f, MatmulKernels.exp(0f));
        assertTrue(MatmulKernels.exp(-1000f) >= 0f && MatmulKernels.exp(-1000f) < 1e-37f);
    }

    @Test
    void swigluVectorEqualsScalarBitForBit() {
        Random r = new Random(2);
        int n = 1037;
        float[] g = new float[n], u = new float[n], d = new float[n];
        for (int i = 0; i < n; i++) { g[i] = (float) (r.nextGaussian() * 4); u[i] = (float) r.nextGaussian(); d[i] = (float) r.nextGaussian(); }
        MatmulKernels vk = new VectorMatmulKernels(), sk = new MatmulKernels.Scalar();
        float[] o1 = new float[n], o2 = new float[n], dg1 = new float[n], dg2 = new float[n], du1 = new float[n], du2 = new float[n];
        vk.swiglu(o1, 0, g, 0, u, 0, n);
        sk.swiglu(o2, 0, g, 0, u, 0, n);
        vk.swigluBackward(dg1, 0, du1, 0, d, 0, g, 0, u, 0, n);
        sk.swigluBackward(dg2, 0, du2, 0, d, 0, g, 0, u, 0, n);
        for (int i = 0; i < n; i++) {
            assertEquals(Float.floatToIntBits(o2[i]), Float.floatToIntBits(o1[i]), "swiglu " + i);
            assertEquals(Float.floatToIntBits(dg2[i]), Float.floatToIntBits(dg1[i]), "dgate " + i);
            assertEquals(Float.floatToIntBits(du2[i]), Float.floatToIntBits(du1[i]), "dup " + i);
        }
    }

    @Test
    void scalarFallbackGemmsAgreeWithTheVectorKernels() {
        // the scalar kernels serve JVMs without jdk.incubator.vector: same contract, same results up to rounding
        Random r = new Random(3);
        int m = 13, k = 70, n = 41;
        float[] a = new float[m * k], at = new float[m * k], bt = new float[n * k], b = new float[k * n];
        for (int i = 0; i < m; i++) for (int p = 0; p < k; p++) { a[i * k + p] = (float) r.nextGaussian(); at[p * m + i] = a[i * k + p]; }
        for (int j = 0; j < n; j++) for (int p = 0; p < k; p++) { bt[j * k + p] = (float) r.nextGaussian(); b[p * n + j] = bt[j * k + p]; }
        MatmulKernels[] ks = {new VectorMatmulKernels(), new MatmulKernels.Scalar()};
        float[][] out = new float[4][];
        int o = 0;
        for (MatmulKernels kk : ks) {
            float[] c1 = new float[m * n], c2 = new float[m * n];
            kk.nt(a, 0, k, bt, 0, k, c1, 0, n, k, 0, m, 0, n, 1f, 0f);
            kk.nn(at, 0, m, true, b, 0, n, c2, 0, n, k, 0, m, 0, n, 1f, 0f);
            out[o++] = c1;
            out[o++] = c2;
        }
        for (int i = 0; i < m * n; i++) {
            double want = 0;
            for (int p = 0; p < k; p++) want += (double) a[(i / n) * k + p] * bt[(i % n) * k + p];
            for (float[] c : out) assertEquals(want, c[i], 1e-4 * (1 + Math.abs(want)), "element " + i);
        }
    }
}
