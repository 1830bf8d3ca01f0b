package org.sparselora.engine.backend.cpu;

/**
 * The two GEMM micro-kernels the CPU backend is built on (plus its exp-bound element-wise loops), on row-major float arrays:
 * {@code nt} (C = α·A·Bᵀ + β·C, dot products along K) and {@code nn} (C = α·A·B + β·C, broadcast
 * A and stream rows of B). Each call fills the C tile {@code [i0,i1) × [j0,j1)}.
 *
 * <p>Determinism contract (what makes sparse-with-every-channel bit-identical to dense and results
 * independent of thread count): the value of C[i,j] depends only on row i of A, column j of B, K,
 * α and β — never on the tile it was computed in, on M, or on N. Both the vector and the edge code
 * paths accumulate in the same order (lanes by fused multiply-add, lanes summed left to right, then
 * the K tail), and the final {@code α·acc + β·C} uses the same two roundings everywhere.
 */
interface MatmulKernels {

    void nt(float[] a, int aOff, int lda, float[] b, int bOff, int ldb, float[] c, int cOff, int ldc,
            int k, int i0, int i1, int j0, int j1, float alpha, float beta);

    /** As {@link #nt} but B is (K,N) row-major; with {@code aTrans} A is stored (K,M) (element (i,p) at p·lda + i),
     *  which costs nothing here since A is only ever broadcast one element at a time. */
    void nn(float[] a, int aOff, int lda, boolean aTrans, float[] b, int bOff, int ldb, float[] c, int cOff, int ldc,
            int k, int i0, int i1, int j0, int j1, float alpha, float beta);

    /** Preferred vector width in floats (1 for the scalar kernels): narrow dimensions below it pick the other kernel. */
    int lanes();

    /** x[i] = exp(x[i] − shift) for i in [off, off+n), by {@link #exp(float)}'s arithmetic. */
    void expShift(float[] x, int off, int n, float shift);

    /** out = silu(g)·u over n elements. */
    void swiglu(float[] out, int oo, float[] g, int go, float[] u, int uo, int n);

    /** dg, du of {@link #swiglu} given dout. */
    void swigluBackward(float[] dg, int dgo, float[] du, int duo, float[] dout, int doo, float[] g, int go, float[] u, int uo, int n);

    // exp(x) = 2ⁿ·eʳ, n = round(x·log2 e), r = x − n·ln 2 (two-part ln 2), eʳ by a degree-7 polynomial
    // (Cephes expf's coefficients); within 2 ulp of Math.exp on [−87, 88], clamped outside. Built
    // only from +, ×, fma and bit moves, which round identically in the vector and scalar forms, so
    // both give the same bits whatever the JIT state (Vector API transcendentals do not promise that).
    float LOG2E = 1.44269504088896341f, MAGIC = 12582912f, LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f, P3 = 4.1665795894e-2f,
            P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;

    /** The scalar form of the vector exp; bit-identical to each vector lane. */
    static float exp(float x) {
        x = Math.min(Math.max(x, -87f), 88f);
        float t = (x * LOG2E + MAGIC) - MAGIC;
        float r = Math.fma(t, -LN2_HI, x);
        r = Math.fma(t, -LN2_LO, r);
        float p = P0;
        p = Math.fma(p, r, P1);
        p = Math.fma(p, r, P2);
        p = Math.fma(p, r, P3);
        p = Math.fma(p, r, P4);
        p = Math.fma(p, r, P5);
        float y = Math.fma(p, r * r, r) + 1f;
        return y * Float.intBitsToFloat(((int) t + 127) << 23);
    }

    static float sigmoid(float g) { return 1f / (1f + exp(-g)); }

    /** One element of the SwiGLU backward (shared by both forms so the tails match the lanes). */
    static void swigluGrad(float[] dg, int i, float[] du, int j, float d, float g, float u) {
        float sg = sigmoid(g);
        dg[i] = d * u * (sg * (1f + g * (1f - sg)));
        du[j] = d * (g * sg);
    }

    static float finish(float acc, float old, float alpha, float beta) {
        return beta == 0f ? alpha * acc : alpha * acc + beta * old;
    }

    /** Plain loops, for JVMs started without {@code jdk.incubator.vector}. */
    final class Scalar implements MatmulKernels {
        @Override public int lanes() { return 1; }

        @Override
        public void expShift(float[] x, int off, int n, float shift) {
            for (int i = off; i < off + n; i++) x[i] = exp(x[i] - shift);
        }

        @Override
        public void swiglu(float[] out, int oo, float[] g, int go, float[] u, int uo, int n) {
            for (int i = 0; i < n; i++) { float gi = g[go + i]; out[oo + i] = gi * sigmoid(gi) * u[uo + i]; }
        }

        @Override
        public void swigluBackward(float[] dg, int dgo, float[] du, int duo, float[] dout, int doo, float[] g, int go, float[] u, int uo, int n) {
            for (int i = 0; i < n; i++) swigluGrad(dg, dgo + i, du, duo + i, dout[doo + i], g[go + i], u[uo + i]);
        }

        @Override
        public void nt(float[] a, int aOff, int lda, float[] b, int bOff, int ldb, float[] c, int cOff, int ldc,
                       int k, int i0, int i1, int j0, int j1, float alpha, float beta) {
            for (int i = i0; i < i1; i++) {
                int ar = aOff + i * lda;
                for (int j = j0; j < j1; j++) {
                    int br = bOff + j * ldb;
                    float s = 0f;
                    for (int p = 0; p < k; p++) s = Math.fma(a[ar + p], b[br + p], s);
                    int ci = cOff + i * ldc + j;
                    c[ci] = finish(s, c[ci], alpha, beta);
                }
            }
        }

        @Override
        public void nn(float[] a, int aOff, int lda, boolean aTrans, float[] b, int bOff, int ldb, float[] c, int cOff, int ldc,
                       int k, int i0, int i1, int j0, int j1, float alpha, float beta) {
            float[] acc = new float[j1 - j0];
            int ars = aTrans ? 1 : lda, acs = aTrans ? lda : 1;
            for (int i = i0; i < i1; i++) {
                java.util.Arrays.fill(acc, 0f);
                int ar = aOff + i * ars;
                for (int p = 0; p < k; p++) {
                    float av = a[ar + p * acs];
                    int br = bOff + p * ldb;
                    for (int j = j0; j < j1; j++) acc[j - j0] = Math.fma(av, b[br + j], acc[j - j0]);
                }
                int cr = cOff + i * ldc;
                for (int j = j0; j < j1; j++) c[cr + j] = finish(acc[j - j0], c[cr + j], alpha, beta);
            }
        }
    }
}
