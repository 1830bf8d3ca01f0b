package org.sparselora.engine.backend.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API GEMM micro-kernels ({@link FloatVector#SPECIES_PREFERRED}: 128/256/512-bit alike).
 * Loaded only when {@code jdk.incubator.vector} is in the boot layer. {@code nt} keeps a 4×4 block
 * of dot-product accumulators in registers; {@code nn} a 6-row (then 4-row) × 2-vector block of C.
 * Also the element-wise kernels whose cost is an exp (softmax rows, SwiGLU), with a polynomial exp
 * that rounds exactly like its scalar twin in {@link MatmulKernels}. Edges use
 * the same accumulation order as the blocks (see {@link MatmulKernels}' determinism contract), so
 * lane sums are done left to right through a small array rather than {@code reduceLanes}, whose
 * order is unspecified.
 */
final class VectorMatmulKernels implements MatmulKernels {
    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();

    @Override public int lanes() { return L; }

    /** exp by the same operations as {@link MatmulKernels#exp(float)}, lane by lane. */
    static FloatVector exp(FloatVector x) {
        x = x.max(-87f).min(88f);
        FloatVector t = x.mul(LOG2E).add(MAGIC).sub(MAGIC);
        FloatVector r = t.fma(FloatVector.broadcast(S, -LN2_HI), x);
        r = t.fma(FloatVector.broadcast(S, -LN2_LO), r);
        FloatVector p = FloatVector.broadcast(S, P0);
        p = p.fma(r, FloatVector.broadcast(S, P1));
        p = p.fma(r, FloatVector.broadcast(S, P2));
        p = p.fma(r, FloatVector.broadcast(S, P3));
        p = p.fma(r, FloatVector.broadcast(S, P4));
        p = p.fma(r, FloatVector.broadcast(S, P5));
        FloatVector y = p.fma(r.mul(r), r).add(1f);
        IntVector bits = ((IntVector) t.convert(VectorOperators.F2I, 0)).add(127).lanewise(VectorOperators.LSHL, 23);
        return y.mul(bits.reinterpretAsFloats());
    }

    static FloatVector sigmoid(FloatVector g) {
        return FloatVector.broadcast(S, 1f).div(exp(g.neg()).add(1f));
    }

    @Override
    public void expShift(float[] x, int off, int n, float shift) {
        int i = 0;
        for (; i + L <= n; i += L) exp(FloatVector.fromArray(S, x, off + i).sub(shift)).intoArray(x, off + i);
        for (; i < n; i++) x[off + i] = MatmulKernels.exp(x[off + i] - shift);
    }

    @Override
    public void swiglu(float[] out, int oo, float[] g, int go, float[] u, int uo, int n) {
        int i = 0;
        for (; i + L <= n; i += L) {
            FloatVector gv = FloatVector.fromArray(S, g, go + i);
            gv.mul(sigmoid(gv)).mul(FloatVector.fromArray(S, u, uo + i)).intoArray(out, oo + i);
        }
        for (; i < n; i++) { float gi = g[go + i]; out[oo + i] = gi * MatmulKernels.sigmoid(gi) * u[uo + i]; }
    }

    @Override
    public void swigluBackward(float[] dg, int dgo, float[] du, int duo, float[] dout, int doo, float[] g, int go, float[] u, int uo, int n) {
        int i = 0;
        for (; i + L <= n; i += L) {
            FloatVector gv = FloatVector.fromArray(S, g, go + i), uv = FloatVector.fromArray(S, u, uo + i);
            FloatVector d = FloatVector.fromArray(S, dout, doo + i), sg = sigmoid(gv);
            // same association as MatmulKernels.swigluGrad: d·u·(sg·(1 + g·(1 − sg))) and d·(g·sg)
            FloatVector one = FloatVector.broadcast(S, 1f);
            d.mul(uv).mul(sg.mul(one.add(gv.mul(one.sub(sg))))).intoArray(dg, dgo + i);
            d.mul(gv.mul(sg)).intoArray(du, duo + i);
        }
        for (; i < n; i++) MatmulKernels.swigluGrad(dg, dgo + i, du, duo + i, dout[doo + i], g[go + i], u[uo + i]);
    }

    private static float lanesThenTail(FloatVector acc, float[] tmp, float[] a, int ar, float[] b, int br, int kv, int k) {
        acc.intoArray(tmp, 0);
        float s = 0f;
        for (int l = 0; l < L; l++) s += tmp[l];
        for (int p = kv; p < k; p++) s = Math.fma(a[ar + p], b[br + p], s);
        return s;
    }

    @Override
    public void nt(float[] a, int aOff, int lda, float[] b, int bOff, int ldb, float[] c, int cOff, int ldc,
                   int k, int i0, int i1, int j0, int j1, float alpha, float beta) {
        final int kv = k - k % L;
        final float[] tmp = new float[L];
        int i = i0;
        for (; i + 4 <= i1; i += 4) {
            int a0 = aOff + i * lda, a1 = a0 + lda, a2 = a1 + lda, a3 = a2 + lda;
            int j = j0;
            for (; j + 4 <= j1; j += 4) {
                int b0 = bOff + j * ldb, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb;
                FloatVector c00 = FloatVector.zero(S), c01 = c00, c02 = c00, c03 = c00;
                FloatVector c10 = c00, c11 = c00, c12 = c00, c13 = c00;
                FloatVector c20 = c00, c21 = c00, c22 = c00, c23 = c00;
                FloatVector c30 = c00, c31 = c00, c32 = c00, c33 = c00;
                for (int p = 0; p < kv; p += L) {
                    FloatVector w0 = FloatVector.fromArray(S, b, b0 + p);
                    FloatVector w1 = FloatVector.fromArray(S, b, b1 + p);
                    FloatVector w2 = FloatVector.fromArray(S, b, b2 + p);
                    FloatVector w3 = FloatVector.fromArray(S, b, b3 + p);
                    FloatVector x = FloatVector.fromArray(S, a, a0 + p);
                    c00 = x.fma(w0, c00); c01 = x.fma(w1, c01); c02 = x.fma(w2, c02); c03 = x.fma(w3, c03);
                    x = FloatVector.fromArray(S, a, a1 + p);
                    c10 = x.fma(w0, c10); c11 = x.fma(w1, c11); c12 = x.fma(w2, c12); c13 = x.fma(w3, c13);
                    x = FloatVector.fromArray(S, a, a2 + p);
                    c20 = x.fma(w0, c20); c21 = x.fma(w1, c21); c22 = x.fma(w2, c22); c23 = x.fma(w3, c23);
                    x = FloatVector.fromArray(S, a, a3 + p);
                    c30 = x.fma(w0, c30); c31 = x.fma(w1, c31); c32 = x.fma(w2, c32); c33 = x.fma(w3, c33);
                }
                // reduce each accumulator where it is (an array of vectors would box them inside the loop)
                int c0 = cOff + i * ldc + j, c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
                int b1o = b0 + ldb, b2o = b1o + ldb, b3o = b2o + ldb;
                put(c, c0, lanesThenTail(c00, tmp, a, a0, b, b0, kv, k), alpha, beta);
                put(c, c0 + 1, lanesThenTail(c01, tmp, a, a0, b, b1o, kv, k), alpha, beta);
                put(c, c0 + 2, lanesThenTail(c02, tmp, a, a0, b, b2o, kv, k), alpha, beta);
                put(c, c0 + 3, lanesThenTail(c03, tmp, a, a0, b, b3o, kv, k), alpha, beta);
                put(c, c1, lanesThenTail(c10, tmp, a, a1, b, b0, kv, k), alpha, beta);
                put(c, c1 + 1, lanesThenTail(c11, tmp, a, a1, b, b1o, kv, k), alpha, beta);
                put(c, c1 + 2, lanesThenTail(c12, tmp, a, a1, b, b2o, kv, k), alpha, beta);
                put(c, c1 + 3, lanesThenTail(c13, tmp, a, a1, b, b3o, kv, k), alpha, beta);
                put(c, c2, lanesThenTail(c20, tmp, a, a2, b, b0, kv, k), alpha, beta);
                put(c, c2 + 1, lanesThenTail(c21, tmp, a, a2, b, b1o, kv, k), alpha, beta);
                put(c, c2 + 2, lanesThenTail(c22, tmp, a, a2, b, b2o, kv, k), alpha, beta);
                put(c, c2 + 3, lanesThenTail(c23, tmp, a, a2, b, b3o, kv, k), alpha, beta);
                put(c, c3, lanesThenTail(c30, tmp, a, a3, b, b0, kv, k), alpha, beta);
                put(c, c3 + 1, lanesThenTail(c31, tmp, a, a3, b, b1o, kv, k), alpha, beta);
                put(c, c3 + 2, lanesThenTail(c32, tmp, a, a3, b, b2o, kv, k), alpha, beta);
                put(c, c3 + 3, lanesThenTail(c33, tmp, a, a3, b, b3o, kv, k), alpha, beta);
            }
            for (; j < j1; j++) for (int r = 0; r < 4; r++) one(a, aOff + (i + r) * lda, b, bOff + j * ldb, c, cOff + (i + r) * ldc + j, k, kv, tmp, alpha, beta);
        }
        for (; i < i1; i++)
            for (int j = j0; j < j1; j++) one(a, aOff + i * lda, b, bOff + j * ldb, c, cOff + i * ldc + j, k, kv, tmp, alpha, beta);
    }

    private static void put(float[] c, int ci, float s, float alpha, float beta) {
        c[ci] = MatmulKernels.finish(s, c[ci], alpha, beta);
    }

    private static void one(float[] a, int ar, float[] b, int br, float[] c, int ci, int k, int kv, float[] tmp, float alpha, float beta) {
        FloatVector acc = FloatVector.zero(S);
        for (int p = 0; p < kv; p += L) acc = FloatVector.fromArray(S, a, ar + p).fma(FloatVector.fromArray(S, b, br + p), acc);
        float s = lanesThenTail(acc, tmp, a, ar, b, br, kv, k);
        c[ci] = MatmulKernels.finish(s, c[ci], alpha, beta);
    }

    @Override
    public void nn(float[] a, int aOff, int lda, boolean aTrans, float[] b, int bOff, int ldb, float[] c, int cOff, int ldc,
                   int k, int i0, int i1, int j0, int j1, float alpha, float beta) {
        final int ars = aTrans ? 1 : lda, acs = aTrans ? lda : 1; // element (i,p) of A at i·ars + p·acs
        int i = i0;
        // 6 rows × 2 vectors: 12 accumulators hide the FMA latency; 4-row blocks and single rows finish the tile
        for (; i + 6 <= i1; i += 6) {
            int a0 = aOff + i * ars, a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars, a4 = a3 + ars, a5 = a4 + ars;
            int j = j0;
            for (; j + 2 * L <= j1; j += 2 * L) {
                FloatVector c00 = FloatVector.zero(S), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
                FloatVector c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
                for (int p = 0; p < k; p++) {
                    int br = bOff + p * ldb + j, ap = p * acs;
                    FloatVector w0 = FloatVector.fromArray(S, b, br);
                    FloatVector w1 = FloatVector.fromArray(S, b, br + L);
                    FloatVector x = FloatVector.broadcast(S, a[a0 + ap]);
                    c00 = x.fma(w0, c00); c01 = x.fma(w1, c01);
                    x = FloatVector.broadcast(S, a[a1 + ap]);
                    c10 = x.fma(w0, c10); c11 = x.fma(w1, c11);
                    x = FloatVector.broadcast(S, a[a2 + ap]);
                    c20 = x.fma(w0, c20); c21 = x.fma(w1, c21);
                    x = FloatVector.broadcast(S, a[a3 + ap]);
                    c30 = x.fma(w0, c30); c31 = x.fma(w1, c31);
                    x = FloatVector.broadcast(S, a[a4 + ap]);
                    c40 = x.fma(w0, c40); c41 = x.fma(w1, c41);
                    x = FloatVector.broadcast(S, a[a5 + ap]);
                    c50 = x.fma(w0, c50); c51 = x.fma(w1, c51);
                }
                int cr = cOff + i * ldc + j;
                store(c, cr, c00, alpha, beta); store(c, cr + L, c01, alpha, beta); cr += ldc;
                store(c, cr, c10, alpha, beta); store(c, cr + L, c11, alpha, beta); cr += ldc;
                store(c, cr, c20, alpha, beta); store(c, cr + L, c21, alpha, beta); cr += ldc;
                store(c, cr, c30, alpha, beta); store(c, cr + L, c31, alpha, beta); cr += ldc;
                store(c, cr, c40, alpha, beta); store(c, cr + L, c41, alpha, beta); cr += ldc;
                store(c, cr, c50, alpha, beta); store(c, cr + L, c51, alpha, beta);
            }
            for (int r = 0; r < 6; r++) nnRow(a, aOff + (i + r) * ars, acs, b, bOff, ldb, c, cOff + (i + r) * ldc, k, j, j1, alpha, beta);
        }
        for (; i + 4 <= i1; i += 4) {
            int a0 = aOff + i * ars, a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars;
            int j = j0;
            for (; j + 2 * L <= j1; j += 2 * L) {
                FloatVector c00 = FloatVector.zero(S), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
                for (int p = 0; p < k; p++) {
                    int br = bOff + p * ldb + j, ap = p * acs;
                    FloatVector w0 = FloatVector.fromArray(S, b, br);
                    FloatVector w1 = FloatVector.fromArray(S, b, br + L);
                    FloatVector x = FloatVector.broadcast(S, a[a0 + ap]);
                    c00 = x.fma(w0, c00); c01 = x.fma(w1, c01);
                    x = FloatVector.broadcast(S, a[a1 + ap]);
                    c10 = x.fma(w0, c10); c11 = x.fma(w1, c11);
                    x = FloatVector.broadcast(S, a[a2 + ap]);
                    c20 = x.fma(w0, c20); c21 = x.fma(w1, c21);
                    x = FloatVector.broadcast(S, a[a3 + ap]);
                    c30 = x.fma(w0, c30); c31 = x.fma(w1, c31);
                }
                store(c, cOff + i * ldc + j, c00, alpha, beta); store(c, cOff + i * ldc + j + L, c01, alpha, beta);
                store(c, cOff + (i + 1) * ldc + j, c10, alpha, beta); store(c, cOff + (i + 1) * ldc + j + L, c11, alpha, beta);
                store(c, cOff + (i + 2) * ldc + j, c20, alpha, beta); store(c, cOff + (i + 2) * ldc + j + L, c21, alpha, beta);
                store(c, cOff + (i + 3) * ldc + j, c30, alpha, beta); store(c, cOff + (i + 3) * ldc + j + L, c31, alpha, beta);
            }
            for (int r = 0; r < 4; r++) nnRow(a, aOff + (i + r) * ars, acs, b, bOff, ldb, c, cOff + (i + r) * ldc, k, j, j1, alpha, beta);
        }
        for (; i < i1; i++) nnRow(a, aOff + i * ars, acs, b, bOff, ldb, c, cOff + i * ldc, k, j0, j1, alpha, beta);
    }

    /** One row of C over columns [j, j1): single vectors, then scalar columns (same per-element order). */
    private static void nnRow(float[] a, int ar, int acs, float[] b, int bOff, int ldb, float[] c, int cr, int k, int j, int j1, float alpha, float beta) {
        for (; j + L <= j1; j += L) {
            FloatVector acc = FloatVector.zero(S);
            for (int p = 0; p < k; p++)
                acc = FloatVector.broadcast(S, a[ar + p * acs]).fma(FloatVector.fromArray(S, b, bOff + p * ldb + j), acc);
            store(c, cr + j, acc, alpha, beta);
        }
        for (; j < j1; j++) {
            float s = 0f;
            for (int p = 0; p < k; p++) s = Math.fma(a[ar + p * acs], b[bOff + p * ldb + j], s);
            c[cr + j] = MatmulKernels.finish(s, c[cr + j], alpha, beta);
        }
    }

    private static void store(float[] c, int ci, FloatVector acc, float alpha, float beta) {
        FloatVector r = acc.mul(alpha);
        if (beta != 0f) r = r.add(FloatVector.fromArray(S, c, ci).mul(beta));
        r.intoArray(c, ci);
    }
}
