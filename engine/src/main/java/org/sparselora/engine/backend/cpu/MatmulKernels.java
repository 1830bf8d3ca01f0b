package org.sparselora.engine.backend.cpu;

/**
 * The two GEMM micro-kernels the CPU backend is built on, on row-major float arrays:
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

    static float finish(float acc, float old, float alpha, float beta) {
        return beta == 0f ? alpha * acc : alpha * acc + beta * old;
    }

    /** Plain loops, for JVMs started without {@code jdk.incubator.vector}. */
    final class Scalar implements MatmulKernels {
        @Override public int lanes() { return 1; }

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
