package org.sparselora.engine.sparse;

import java.util.Arrays;
import java.util.List;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.SparseOps;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * A deliberately plain fp32 backend with just the ops the selection code uses, so the sparse
 * package is testable on its own (the project's CpuBackend is written in parallel). Everything else
 * throws; a test that needs it fails loudly rather than passing vacuously.
 */
final class RefBackend implements Backend, SparseOps {

    static final class T implements Tensor {
        final float[] f;
        final int[] i;
        final int off;
        final int[] shape;
        final DType dtype;

        T(DType dtype, float[] f, int[] i, int off, int[] shape) {
            this.dtype = dtype; this.f = f; this.i = i; this.off = off; this.shape = shape;
        }

        @Override public Backend backend() { return INSTANCE; }
        @Override public DType dtype() { return dtype; }
        @Override public int[] shape() { return shape; }
        @Override public Tensor view(long offsetElems, int... s) {
            T v = new T(dtype, f, i, off + (int) offsetElems, s.clone());
            if (off + offsetElems + v.numel() > (f != null ? f.length : i.length)) throw new IllegalArgumentException("view out of range");
            return v;
        }
        @Override public void close() {}
        float get(int k) { return f[off + k]; }
        void set(int k, float v) { f[off + k] = v; }
        int geti(int k) { return i[off + k]; }
    }

    static final RefBackend INSTANCE = new RefBackend();

    private static T t(Tensor x) { return (T) x; }

    @Override public String name() { return "ref"; }
    @Override public DType computeType() { return DType.F32; }
    @Override public Backend backend() { return this; }

    @Override public Tensor empty(DType dtype, int... shape) {
        long n = 1;
        for (int d : shape) n *= d;
        return dtype == DType.I32 ? new T(dtype, null, new int[(int) n], 0, shape.clone())
                : new T(dtype, new float[(int) n], null, 0, shape.clone());
    }

    @Override public void copyFromHost(Tensor dst, float[] src) {
        if (src.length != dst.numel()) throw new IllegalArgumentException("size");
        System.arraycopy(src, 0, t(dst).f, t(dst).off, src.length);
    }

    @Override public void copyFromHost(Tensor dst, int[] src) {
        if (src.length != dst.numel()) throw new IllegalArgumentException("size");
        System.arraycopy(src, 0, t(dst).i, t(dst).off, src.length);
    }

    @Override public float[] toFloats(Tensor x) { return Arrays.copyOfRange(t(x).f, t(x).off, t(x).off + (int) x.numel()); }
    @Override public int[] toInts(Tensor x) { return Arrays.copyOfRange(t(x).i, t(x).off, t(x).off + (int) x.numel()); }
    @Override public void copy(Tensor dst, Tensor src) { copyFromHost(dst, toFloats(src)); }
    @Override public void fill(Tensor x, float v) { Arrays.fill(t(x).f, t(x).off, t(x).off + (int) x.numel(), v); }
    @Override public void synchronize() {}

    @Override public void matmul(Tensor c, Tensor a, boolean ta, Tensor b, boolean tb, float alpha, float beta) {
        int m = ta ? a.dim(1) : a.dim(0), k = ta ? a.dim(0) : a.dim(1);
        int n = tb ? b.dim(0) : b.dim(1);
        if ((tb ? b.dim(1) : b.dim(0)) != k || c.dim(0) != m || c.dim(1) != n)
            throw new IllegalArgumentException("matmul shapes " + Tensor.describe(c) + " " + Tensor.describe(a) + " " + Tensor.describe(b));
        int ac = a.dim(1), bc = b.dim(1);
        for (int r = 0; r < m; r++)
            for (int col = 0; col < n; col++) {
                double s = 0;
                for (int p = 0; p < k; p++)
                    s += (double) t(a).get(ta ? p * ac + r : r * ac + p) * t(b).get(tb ? col * bc + p : p * bc + col);
                float old = beta == 0 ? 0 : beta * t(c).get(r * n + col);
                t(c).set(r * n + col, (float) (alpha * s) + old);
            }
    }

    @Override public void axpy(Tensor y, float alpha, Tensor x) { for (int k = 0; k < y.numel(); k++) t(y).set(k, t(y).get(k) + alpha * t(x).get(k)); }
    @Override public void scale(Tensor x, float s) { for (int k = 0; k < x.numel(); k++) t(x).set(k, t(x).get(k) * s); }
    @Override public void mul(Tensor o, Tensor a, Tensor b) { for (int k = 0; k < o.numel(); k++) t(o).set(k, t(a).get(k) * t(b).get(k)); }

    @Override public double sumOfSquares(List<Tensor> ts) {
        double s = 0;
        for (Tensor x : ts) for (int k = 0; k < x.numel(); k++) s += (double) t(x).get(k) * t(x).get(k);
        return s;
    }

    @Override public void swiglu(Tensor out, Tensor gate, Tensor up) {
        for (int k = 0; k < out.numel(); k++) {
            float g = t(gate).get(k);
            t(out).set(k, (float) (g / (1 + Math.exp(-g))) * t(up).get(k));
        }
    }

    @Override public void gatherRows(Tensor out, Tensor src, Tensor idx) {
        int c = src.dim(1);
        for (int r = 0; r < idx.numel(); r++)
            for (int j = 0; j < c; j++) t(out).set(r * c + j, t(src).get(t(idx).geti(r) * c + j));
    }

    @Override public void scatterRows(Tensor out, Tensor src, Tensor idx, boolean acc) {
        int c = src.dim(1);
        for (int r = 0; r < idx.numel(); r++)
            for (int j = 0; j < c; j++) {
                int o = t(idx).geti(r) * c + j;
                t(out).set(o, (acc ? t(out).get(o) : 0) + t(src).get(r * c + j));
            }
    }

    @Override public void gatherCols(Tensor out, Tensor src, Tensor idx) {
        int rows = src.dim(0), c = src.dim(1), k = (int) idx.numel();
        for (int r = 0; r < rows; r++) for (int j = 0; j < k; j++) t(out).set(r * k + j, t(src).get(r * c + t(idx).geti(j)));
    }

    @Override public void scatterCols(Tensor out, Tensor src, Tensor idx, boolean acc) {
        int rows = out.dim(0), c = out.dim(1), k = (int) idx.numel();
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < k; j++) {
                int o = r * c + t(idx).geti(j);
                t(out).set(o, (acc ? t(out).get(o) : 0) + t(src).get(r * k + j));
            }
    }

    @Override public void columnNorms(Tensor out, Tensor x) {
        int rows = x.dim(0), c = x.dim(1);
        for (int j = 0; j < c; j++) {
            double s = 0;
            for (int r = 0; r < rows; r++) s += (double) t(x).get(r * c + j) * t(x).get(r * c + j);
            t(out).set(j, (float) Math.sqrt(s));
        }
    }

    @Override public void sequenceMean(Tensor out, Tensor x, Tensor keyStart, int batch, int seqLen) {
        int c = x.dim(1);
        for (int b = 0; b < batch; b++) {
            int ks = t(keyStart).geti(b);
            for (int j = 0; j < c; j++) {
                double s = 0;
                for (int tt = ks; tt < seqLen; tt++) s += t(x).get((b * seqLen + tt) * c + j);
                t(out).set(b * c + j, (float) (s / Math.max(1, seqLen - ks)));
            }
        }
    }

    @Override public void topK(Tensor idx, Tensor scores, int k) {
        int n = (int) scores.numel();
        Integer[] order = new Integer[n];
        for (int j = 0; j < n; j++) order[j] = j;
        Arrays.sort(order, (p, q) -> {
            int c = Float.compare(t(scores).get(q), t(scores).get(p));
            return c != 0 ? c : Integer.compare(p, q);
        });
        int[] kept = new int[k];
        for (int j = 0; j < k; j++) kept[j] = order[j];
        Arrays.sort(kept);
        copyFromHost(idx, kept);
    }

    private static UnsupportedOperationException no(String op) { return new UnsupportedOperationException("RefBackend has no " + op); }

    @Override public void embedding(Tensor out, Tensor ids, Tensor table) { throw no("embedding"); }
    @Override public void rmsNorm(Tensor out, Tensor rstd, Tensor x, Tensor w, float eps) { throw no("rmsNorm"); }
    @Override public void rmsNormBackward(Tensor dx, Tensor dout, Tensor x, Tensor w, Tensor rstd, boolean acc) { throw no("rmsNormBackward"); }
    @Override public void rope(Tensor x, Tensor pos, Tensor cos, Tensor sin, int h, int d, boolean inv) { throw no("rope"); }
    @Override public void attention(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor ks, int b, int t, int h, int kvh, int d, float s) { throw no("attention"); }
    @Override public void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v,
                                            Tensor ks, int b, int t, int h, int kvh, int d, float s) { throw no("attentionBackward"); }
    @Override public void attentionCached(Tensor out, Tensor q, Tensor kc, Tensor vc, int p0, int h, int kvh, int d, float s) { throw no("attentionCached"); }
    @Override public void swigluBackward(Tensor dg, Tensor du, Tensor dout, Tensor g, Tensor u) { throw no("swigluBackward"); }
    @Override public void crossEntropy(Tensor l, Tensor dl, Tensor lo, Tensor tg, float gs) { throw no("crossEntropy"); }
    @Override public void dropout(Tensor out, Tensor x, float p, long seed) { throw no("dropout"); }
    @Override public void adamw(Tensor p, Tensor g, Tensor m, Tensor v, float lr, float b1, float b2, float eps, float wd, int step, float gs) { throw no("adamw"); }
}
