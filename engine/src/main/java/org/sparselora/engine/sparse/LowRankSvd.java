package org.sparselora.engine.sparse;

import java.util.SplittableRandom;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import org.ejml.dense.row.CommonOps_MT_DDRM;
import org.ejml.dense.row.SingularOps_DDRM;
import org.ejml.dense.row.factory.DecompositionFactory_DDRM;
import org.ejml.interfaces.decomposition.QRDecomposition;
import org.ejml.interfaces.decomposition.SingularValueDecomposition_F64;

/**
 * Rank-r factorisation of a frozen projection for the SVD predictor (docs/METHOD.md#predictor): for an HF weight W
 * (out×in) it factors Wᵀ (in×out) = U·S·Vᵀ and returns {@code P = U[:, :r]·√S} (in×r) and
 * {@code Q = √S·Vᵀ[:r]} (r×out), so that {@code x·P·Q ≈ x·Wᵀ}. Two methods: EJML's exact thin SVD
 * (double precision) and a randomized SVD (Halko–Martinsson–Tropp range finder with power
 * iterations and re-orthonormalisation), the default for large matrices, where the exact SVD of a
 * 4096×14336 matrix would take minutes and all but r singular vectors would be thrown away. The
 * products with the full weight use EJML's multi-threaded kernels (they are the whole cost).
 */
public final class LowRankSvd {

    public enum Method { EXACT, RANDOMIZED, AUTO }

    /** Matrices whose smaller side exceeds this use the randomized SVD under {@link Method#AUTO}. */
    public static final int AUTO_RANDOMIZED_ABOVE = 512;
    static final int OVERSAMPLE = 10;
    static final int POWER_ITERATIONS = 3;

    /** Rank-r factors of Wᵀ. p (in, r) and q (r, out), row-major; s holds the r singular values. */
    public record Factors(int in, int out, int rank, float[] p, float[] q, double[] s) {}

    private LowRankSvd() {}

    /**
     * @param w    HF weight (out, in), row-major
     * @param rank r; must not exceed min(in, out)
     * @param seed for the randomized method's test matrix (the result is deterministic per seed)
     */
    public static Factors factor(float[] w, int out, int in, int rank, Method method, long seed) {
        if (w.length != (long) out * in)
            throw new IllegalArgumentException("weight has " + w.length + " elements, expected " + out + "x" + in);
        int minDim = Math.min(in, out);
        if (rank <= 0 || rank > minDim)
            throw new IllegalArgumentException("rank " + rank + " is outside [1, " + minDim + "] for a " + out + "x" + in + " weight");
        DMatrixRMaj wm = new DMatrixRMaj(out, in);
        for (int i = 0; i < w.length; i++) wm.data[i] = w[i];
        if (method == Method.AUTO) method = minDim > AUTO_RANDOMIZED_ABOVE ? Method.RANDOMIZED : Method.EXACT;
        Svd svd = method == Method.EXACT ? exact(wm) : randomized(wm, rank, seed);
        return toFactors(svd, in, out, rank);
    }

    /** U (in, l), s (l) descending, V (out, l): Wᵀ ≈ U·diag(s)·Vᵀ. */
    record Svd(DMatrixRMaj u, double[] s, DMatrixRMaj v) {}

    /** Exact thin SVD of Wᵀ. SVD(W) = V·S·Uᵀ gives it without materialising the transpose. */
    static Svd exact(DMatrixRMaj w /* (out, in) */) {
        int out = w.numRows, in = w.numCols;
        SingularValueDecomposition_F64<DMatrixRMaj> dec = DecompositionFactory_DDRM.svd(out, in, true, true, true);
        if (!dec.decompose(w.copy())) throw new IllegalStateException("SVD did not converge for a " + out + "x" + in + " weight");
        DMatrixRMaj uw = dec.getU(null, false);   // (out, m): left vectors of W = right vectors of Wᵀ
        DMatrixRMaj vw = dec.getV(null, false);   // (in, m)
        DMatrixRMaj sw = dec.getW(null);
        SingularOps_DDRM.descendingOrder(uw, false, sw, vw, false);
        int m = Math.min(out, in);
        double[] s = new double[m];
        for (int i = 0; i < m; i++) s[i] = sw.get(i, i);
        return new Svd(vw, s, uw);
    }

    /**
     * Randomized SVD of A = Wᵀ (in×out): Y = A·Ω with Ω Gaussian (out×l), l = r + oversampling;
     * power iterations alternate orth(Aᵀ·Q), orth(A·Z) so the captured subspace is dominated by the
     * top singular directions (error shrinks like (s_{l+1}/s_r)^(2q+1)); then the small SVD of
     * Qᵀ·A recovers the factors.
     */
    static Svd randomized(DMatrixRMaj w /* (out, in) */, int rank, long seed) {
        int out = w.numRows, in = w.numCols;
        int l = Math.min(Math.min(in, out), rank + OVERSAMPLE);
        SplittableRandom rng = new SplittableRandom(seed);
        DMatrixRMaj omega = new DMatrixRMaj(out, l);
        for (int i = 0; i < omega.data.length; i++) omega.data[i] = gaussian(rng);
        DMatrixRMaj y = new DMatrixRMaj(in, l);
        CommonOps_MT_DDRM.multTransA(w, omega, y);              // A·Ω = Wᵀ·Ω (in, l)
        DMatrixRMaj q = orthonormal(y);
        DMatrixRMaj z = new DMatrixRMaj(out, l);
        for (int it = 0; it < POWER_ITERATIONS; it++) {
            CommonOps_MT_DDRM.mult(w, q, z);                    // Aᵀ·Q = W·Q (out, l)
            DMatrixRMaj zq = orthonormal(z);
            CommonOps_MT_DDRM.multTransA(w, zq, y);             // A·Z (in, l)
            q = orthonormal(y);
        }
        // B = Qᵀ·A (l, out) = (W·Q)ᵀ; factor C = W·Q = Uc·S·Vcᵀ, so B = Vc·S·Ucᵀ
        DMatrixRMaj c = new DMatrixRMaj(out, l);
        CommonOps_MT_DDRM.mult(w, q, c);
        SingularValueDecomposition_F64<DMatrixRMaj> dec = DecompositionFactory_DDRM.svd(out, l, true, true, true);
        if (!dec.decompose(c)) throw new IllegalStateException("SVD did not converge (randomized, " + out + "x" + in + ")");
        DMatrixRMaj uc = dec.getU(null, false);   // (out, l) = right vectors of A
        DMatrixRMaj vc = dec.getV(null, false);   // (l, l)   = left vectors of B
        DMatrixRMaj sc = dec.getW(null);
        SingularOps_DDRM.descendingOrder(uc, false, sc, vc, false);
        DMatrixRMaj u = new DMatrixRMaj(in, l);
        CommonOps_DDRM.mult(q, vc, u);                       // left vectors of A = Q·Vc
        double[] s = new double[l];
        for (int i = 0; i < l; i++) s[i] = sc.get(i, i);
        return new Svd(u, s, uc);
    }

    private static DMatrixRMaj orthonormal(DMatrixRMaj y) {
        QRDecomposition<DMatrixRMaj> qr = DecompositionFactory_DDRM.qr(y.numRows, y.numCols);
        if (!qr.decompose(y.copy())) throw new IllegalStateException("QR failed");
        return qr.getQ(null, true);
    }

    private static double gaussian(SplittableRandom rng) {
        // Box–Muller; SplittableRandom has no nextGaussian of its own on every JDK
        double u1 = rng.nextDouble(), u2 = rng.nextDouble();
        return Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2);
    }

    private static Factors toFactors(Svd svd, int in, int out, int rank) {
        float[] p = new float[in * rank];
        float[] q = new float[rank * out];
        double[] s = new double[rank];
        for (int j = 0; j < rank; j++) {
            s[j] = svd.s[j];
            double root = Math.sqrt(svd.s[j]);
            for (int i = 0; i < in; i++) p[i * rank + j] = (float) (svd.u.get(i, j) * root);
            for (int c = 0; c < out; c++) q[j * out + c] = (float) (root * svd.v.get(c, j));
        }
        return new Factors(in, out, rank, p, q, s);
    }
}
