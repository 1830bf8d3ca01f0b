package org.sparselora.engine.sparse;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import org.ejml.dense.row.SingularOps_DDRM;
import org.junit.jupiter.api.Test;

class LowRankSvdTest {

    /** x·P·Q as a dense (in, out) matrix P·Q. */
    static double[] product(LowRankSvd.Factors f) {
        double[] m = new double[f.in() * f.out()];
        for (int i = 0; i < f.in(); i++)
            for (int j = 0; j < f.rank(); j++) {
                double p = f.p()[i * f.rank() + j];
                for (int c = 0; c < f.out(); c++) m[i * f.out() + c] += p * f.q()[j * f.out() + c];
            }
        return m;
    }

    @Test
    void fullRankReconstructsTransposeExactly() {
        int out = 12, in = 7;
        float[] w = TestWeights.structured(out, in, new Random(1));
        LowRankSvd.Factors f = LowRankSvd.factor(w, out, in, 7, LowRankSvd.Method.EXACT, 0);
        double[] pq = product(f);
        for (int i = 0; i < in; i++)
            for (int c = 0; c < out; c++) assertEquals(w[c * in + i], pq[i * out + c], 1e-5, "Wᵀ[" + i + "," + c + "]");
        for (int j = 1; j < f.rank(); j++) assertTrue(f.s()[j - 1] >= f.s()[j], "descending singular values");
    }

    @Test
    void truncatedIsBestRankRApproximation() {
        // Eckart–Young: ‖Wᵀ − P·Q‖_F² = Σ_{j ≥ r} s_j²
        int out = 40, in = 30, r = 5;
        float[] w = TestWeights.structured(out, in, new Random(2));
        LowRankSvd.Factors full = LowRankSvd.factor(w, out, in, 30, LowRankSvd.Method.EXACT, 0);
        LowRankSvd.Factors f = LowRankSvd.factor(w, out, in, r, LowRankSvd.Method.EXACT, 0);
        double[] pq = product(f);
        double err = 0, tail = 0;
        for (int i = 0; i < in; i++)
            for (int c = 0; c < out; c++) { double d = w[c * in + i] - pq[i * out + c]; err += d * d; }
        for (int j = r; j < 30; j++) tail += full.s()[j] * full.s()[j];
        assertEquals(tail, err, 1e-4 * (tail + 1e-9));
    }

    /** Cosines of the principal angles between the column spaces of two (n, r) factor matrices. */
    static double minCosine(float[] a, float[] b, int n, int r) {
        DMatrixRMaj qa = orth(a, n, r), qb = orth(b, n, r);
        DMatrixRMaj m = new DMatrixRMaj(r, r);
        CommonOps_DDRM.multTransA(qa, qb, m);
        double[] sv = SingularOps_DDRM.singularValues(m);
        double min = 1;
        for (double s : sv) min = Math.min(min, s);
        return min;
    }

    static DMatrixRMaj orth(float[] a, int n, int r) {
        DMatrixRMaj m = new DMatrixRMaj(n, r);
        for (int i = 0; i < a.length; i++) m.data[i] = a[i];
        var qr = org.ejml.dense.row.factory.DecompositionFactory_DDRM.qr(n, r);
        qr.decompose(m);
        return qr.getQ(null, true);
    }

    @Test
    void randomizedMatchesExactTopRSubspace() {
        int out = 700, in = 300, r = 8;
        float[] w = TestWeights.structured(out, in, new Random(3));
        LowRankSvd.Factors ex = LowRankSvd.factor(w, out, in, r, LowRankSvd.Method.EXACT, 0);
        LowRankSvd.Factors rnd = LowRankSvd.factor(w, out, in, r, LowRankSvd.Method.RANDOMIZED, 42);
        // left (input-side) and right (output-side) subspaces agree
        assertTrue(minCosine(ex.p(), rnd.p(), in, r) > 1 - 1e-6, "P subspace");
        float[] qtEx = transpose(ex.q(), r, out), qtRnd = transpose(rnd.q(), r, out);
        assertTrue(minCosine(qtEx, qtRnd, out, r) > 1 - 1e-6, "Q subspace");
        for (int j = 0; j < r; j++) assertEquals(ex.s()[j], rnd.s()[j], 1e-6 * ex.s()[0], "singular value " + j);
        double[] a = product(ex), b = product(rnd);
        double diff = 0, norm = 0;
        for (int i = 0; i < a.length; i++) { diff += (a[i] - b[i]) * (a[i] - b[i]); norm += a[i] * a[i]; }
        assertTrue(Math.sqrt(diff / norm) < 1e-4, "P·Q relative difference " + Math.sqrt(diff / norm));
    }

    @Test
    void autoPicksRandomizedForLargeMatrices() {
        // behaviourally: AUTO on a large matrix equals RANDOMIZED with the same seed bit for bit
        int out = 600, in = 520, r = 4;
        float[] w = TestWeights.structured(out, in, new Random(4));
        LowRankSvd.Factors auto = LowRankSvd.factor(w, out, in, r, LowRankSvd.Method.AUTO, 7);
        LowRankSvd.Factors rnd = LowRankSvd.factor(w, out, in, r, LowRankSvd.Method.RANDOMIZED, 7);
        assertEquals(java.util.Arrays.toString(rnd.p()), java.util.Arrays.toString(auto.p()));
    }

    @Test
    void badRank() {
        float[] w = new float[12];
        assertThrows(IllegalArgumentException.class, () -> LowRankSvd.factor(w, 3, 4, 4, LowRankSvd.Method.EXACT, 0));
        assertThrows(IllegalArgumentException.class, () -> LowRankSvd.factor(w, 3, 4, 0, LowRankSvd.Method.EXACT, 0));
        assertThrows(IllegalArgumentException.class, () -> LowRankSvd.factor(w, 3, 5, 1, LowRankSvd.Method.EXACT, 0));
    }

    static float[] transpose(float[] a, int rows, int cols) {
        float[] t = new float[a.length];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
        return t;
    }
}
