package org.sparselora.engine.backend.cpu;

import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.RecursiveAction;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Bf16;
import org.sparselora.engine.backend.SparseOps;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.TensorChecks;
import org.sparselora.engine.backend.WindowedAttention;

/**
 * The reference backend: every {@link Backend} op in fp32 on heap arrays, multithreaded over rows /
 * output tiles on a private {@link ForkJoinPool}, with Vector API GEMM kernels (scalar fallback when
 * {@code jdk.incubator.vector} is absent). BF16/F16 tensors hold floats rounded to that precision on
 * every write, so a CPU run can emulate the GPU's storage.
 *
 * <p>Deterministic: work is split at fixed boundaries that do not depend on the thread count, each
 * output element is produced by exactly one task, and reductions across tasks (sum of squares,
 * column norms) combine fixed partials in a fixed order. The same inputs give bit-identical outputs
 * with 1 or 64 threads.
 */
public final class CpuBackend implements WindowedAttention, SparseOps {

    private static final MatmulKernels KERNELS = pickKernels();
    /** Output tile of one GEMM task; fixed so results never depend on the thread count. */
    private static final int TILE_M = 48, TILE_N = 128, GROUP_TILES = 6;

    private final ForkJoinPool pool;
    private final int threads;
    private final DType computeType;

    public CpuBackend() { this(Runtime.getRuntime().availableProcessors()); }

    public CpuBackend(int threads) { this(threads, DType.F32); }

    /**
     * @param computeType F32 (the reference), or BF16/F16 to emulate a GPU run: weights and
     *                    activations are then stored rounded to that precision (arithmetic stays fp32)
     */
    public CpuBackend(int threads, DType computeType) {
        if (threads < 1) throw new IllegalArgumentException("threads must be >= 1, got " + threads);
        if (!computeType.isFloating()) throw new IllegalArgumentException("compute type must be floating, got " + computeType);
        this.threads = threads;
        this.computeType = computeType;
        this.pool = threads == 1 ? null : new ForkJoinPool(threads);
    }

    private static MatmulKernels pickKernels() {
        boolean vector = ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent();
        if (vector) {
            try {
                return new VectorMatmulKernels();
            } catch (Throwable t) { // LinkageError when the module is only partly usable
                return new MatmulKernels.Scalar();
            }
        }
        return new MatmulKernels.Scalar();
    }

    /** Whether the Vector API kernels are in use (false: scalar fallback). */
    public static boolean vectorized() { return KERNELS instanceof VectorMatmulKernels; }

    public int threads() { return threads; }

    @Override public String name() { return computeType == DType.F32 ? "cpu" : "cpu-" + computeType.name().toLowerCase(); }

    @Override public DType computeType() { return computeType; }

    /** The CPU runs SparseLoRA's ops itself (the reference semantics). */
    @Override public Backend backend() { return this; }

    @Override
    public void close() { if (pool != null) pool.shutdown(); }

    // ------------------------------------------------------------------ parallel helper

    @FunctionalInterface
    interface Range { void run(int from, int to); }

    /** Runs body over [0,n) in chunks of {@code grain}; chunk boundaries depend only on n and grain. */
    void parallelFor(int n, int grain, Range body) {
        if (n <= 0) return;
        int chunks = (n + grain - 1) / grain;
        if (pool == null || chunks == 1) {
            for (int c = 0; c < chunks; c++) body.run(c * grain, Math.min(n, (c + 1) * grain));
            return;
        }
        pool.invoke(new Chunks(0, chunks, n, grain, body));
    }

    private static final class Chunks extends RecursiveAction {
        final int c0, c1, n, grain;
        final Range body;

        Chunks(int c0, int c1, int n, int grain, Range body) {
            this.c0 = c0; this.c1 = c1; this.n = n; this.grain = grain; this.body = body;
        }

        @Override
        protected void compute() {
            if (c1 - c0 == 1) {
                body.run(c0 * grain, Math.min(n, (c0 + 1) * grain));
                return;
            }
            int mid = (c0 + c1) >>> 1;
            invokeAll(new Chunks(c0, mid, n, grain, body), new Chunks(mid, c1, n, grain, body));
        }
    }

    /** A grain giving roughly {@code work} scalar operations per task (at least one row). */
    private static int grainFor(int rowCost) { return Math.max(1, 32768 / Math.max(1, rowCost)); }

    // ------------------------------------------------------------------ memory

    static CpuTensor t(Tensor x) {
        if (x instanceof CpuTensor c) return c;
        throw new IllegalArgumentException("not a CPU tensor: " + x);
    }

    private static CpuTensor ft(Tensor x, String what) {
        CpuTensor c = t(x);
        if (c.f == null) throw new IllegalArgumentException(what + " must be a floating tensor, got " + Tensor.describe(x));
        return c;
    }

    private static CpuTensor it(Tensor x, String what) {
        CpuTensor c = t(x);
        if (c.i == null) throw new IllegalArgumentException(what + " must be I32, got " + Tensor.describe(x));
        return c;
    }

    @Override
    public Tensor empty(DType dtype, int... shape) {
        long n = 1;
        for (int d : shape) n *= d;
        if (n > Integer.MAX_VALUE) throw new IllegalArgumentException("tensor too large: " + Arrays.toString(shape));
        CpuTensor t = dtype == DType.I32
                ? new CpuTensor(this, dtype, shape.clone(), null, new int[(int) n], 0)
                : new CpuTensor(this, dtype, shape.clone(), new float[(int) n], null, 0);
        t.owner = true;
        allocated(n * dtype.bytes);
        return t;
    }

    // Byte accounting at the dtype's device size (a BF16 tensor counts 2 bytes per element although the
    // CPU stores a float), so a CPU run shows what a device run of the same code would hold: the
    // tensors made by empty/zeros/fromFloats/fromInts and not yet closed.
    private long liveBytes, peakBytes;

    synchronized void allocated(long bytes) {
        liveBytes += bytes;
        peakBytes = Math.max(peakBytes, liveBytes);
    }

    synchronized void released(long bytes) { liveBytes -= bytes; }

    /** Bytes of tensors made by this backend and not yet closed (at each dtype's device size). */
    public synchronized long liveBytes() { return liveBytes; }

    /** The most {@link #liveBytes()} at once since creation or the last {@link #resetPeakBytes()}. */
    public synchronized long peakBytes() { return peakBytes; }

    /** Starts a new peak window at the current live bytes. */
    public synchronized void resetPeakBytes() { peakBytes = liveBytes; }

    /** Rounds a BF16/F16 tensor's values to its precision (storage emulation); F32 is untouched. */
    private static void round(CpuTensor x) { round(x, 0, x.numel); }

    private static void round(CpuTensor x, int from, int to) {
        float[] f = x.f;
        switch (x.dtype) {
            case BF16 -> { for (int i = x.off + from; i < x.off + to; i++) f[i] = Bf16.toFloat(Bf16.fromFloat(f[i])); }
            case F16 -> { for (int i = x.off + from; i < x.off + to; i++) f[i] = Float.float16ToFloat(Float.floatToFloat16(f[i])); }
            default -> { }
        }
    }

    @Override
    public void copyFromHost(Tensor dst, float[] src) {
        CpuTensor d = t(dst);
        if (src.length != d.numel) throw new IllegalArgumentException("copyFromHost: " + src.length + " values for " + Tensor.describe(dst));
        if (d.f != null) {
            System.arraycopy(src, 0, d.f, d.off, src.length);
            round(d);
        } else {
            for (int i = 0; i < src.length; i++) d.i[d.off + i] = (int) src[i];
        }
    }

    @Override
    public void copyFromHost(Tensor dst, int[] src) {
        CpuTensor d = t(dst);
        if (src.length != d.numel) throw new IllegalArgumentException("copyFromHost: " + src.length + " values for " + Tensor.describe(dst));
        if (d.i != null) System.arraycopy(src, 0, d.i, d.off, src.length);
        else {
            for (int i = 0; i < src.length; i++) d.f[d.off + i] = src[i];
            round(d);
        }
    }

    @Override
    public float[] toFloats(Tensor x) {
        CpuTensor c = t(x);
        if (c.f != null) return Arrays.copyOfRange(c.f, c.off, c.off + c.numel);
        float[] out = new float[c.numel];
        for (int i = 0; i < out.length; i++) out[i] = c.i[c.off + i];
        return out;
    }

    @Override
    public int[] toInts(Tensor x) {
        CpuTensor c = t(x);
        if (c.i != null) return Arrays.copyOfRange(c.i, c.off, c.off + c.numel);
        int[] out = new int[c.numel];
        for (int i = 0; i < out.length; i++) out[i] = (int) c.f[c.off + i];
        return out;
    }

    @Override
    public void copy(Tensor dst, Tensor src) {
        TensorChecks.sameNumel(dst, src, "copy");
        CpuTensor d = t(dst), s = t(src);
        if (d.f != null && s.f != null) {
            System.arraycopy(s.f, s.off, d.f, d.off, d.numel);
            if (d.dtype != s.dtype) round(d);
        } else if (d.i != null && s.i != null) {
            System.arraycopy(s.i, s.off, d.i, d.off, d.numel);
        } else if (d.f != null) {
            for (int i = 0; i < d.numel; i++) d.f[d.off + i] = s.i[s.off + i];
            round(d);
        } else {
            for (int i = 0; i < d.numel; i++) d.i[d.off + i] = (int) s.f[s.off + i];
        }
    }

    @Override
    public void fill(Tensor x, float value) {
        CpuTensor c = t(x);
        if (c.f != null) {
            Arrays.fill(c.f, c.off, c.off + c.numel, value);
            round(c);
        } else Arrays.fill(c.i, c.off, c.off + c.numel, (int) value);
    }

    @Override public void synchronize() {}

    // ------------------------------------------------------------------ dense algebra

    @Override
    public void matmul(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta) {
        CpuTensor C = ft(c, "matmul C"), A = ft(a, "matmul A"), B = ft(b, "matmul B");
        final int m = C.rows(), n = C.cols();
        final int k = transA ? A.rows() : A.cols();
        int am = transA ? A.cols() : A.rows();
        int bk = transB ? B.cols() : B.rows(), bn = transB ? B.rows() : B.cols();
        if (am != m || bk != k || bn != n)
            throw new IllegalArgumentException("matmul shapes: C " + Tensor.describe(c) + " = op(A " + Tensor.describe(a) + (transA ? ")ᵀ" : ")")
                    + " · op(B " + Tensor.describe(b) + (transB ? ")ᵀ" : ")"));
        if (m == 0 || n == 0) return;
        if (k == 0) { // empty sum: C = β·C
            if (beta == 0f) Arrays.fill(C.f, C.off, C.off + C.numel, 0f);
            else for (int i = 0; i < C.numel; i++) C.f[C.off + i] *= beta;
            round(C);
            return;
        }
        // Pick the kernel from K, N and B's layout only (never from M), so that a gathered subset of
        // rows is computed exactly as inside the full product.
        // Pick the kernel from K, N and B's layout only (never from M), so that a gathered subset of
        // rows is computed exactly as inside the full product. The broadcast kernel (nn) is the faster
        // one whenever C is at least a vector wide, even counting the per-tile transpose of B that
        // x·Wᵀ needs, and it reads a transposed A in place; dot products (nt) only for narrow C.
        int lanes = KERNELS.lanes();
        boolean useNt = n < lanes;
        // A as (M,K) row-major, except that nn reads Aᵀ directly
        final boolean aTrans = transA && !useNt;
        float[] af;
        int aOff;
        if (transA && useNt) { af = transpose(A.f, A.off, k, m); aOff = 0; } else { af = A.f; aOff = A.off; }
        final int lda = aTrans ? m : k;
        final float[] bf;
        final int bOff;
        final boolean packTiles = !useNt && transB; // x·Wᵀ: each task transposes its own column tile of B
        if (useNt) {
            if (transB) { bf = B.f; bOff = B.off; } else { bf = transpose(B.f, B.off, k, n); bOff = 0; }
        } else {
            bf = B.f; bOff = B.off;
        }
        final int mt = (m + TILE_M - 1) / TILE_M, nt = (n + TILE_N - 1) / TILE_N;
        final int groups = (mt + GROUP_TILES - 1) / GROUP_TILES;
        final float[] cf = C.f;
        final int cOff = C.off;
        final float[] aF = af;
        final int aO = aOff;
        // task = (group of GROUP_TILES row tiles) × (one column tile); tiles are fixed, so is every C element
        parallelFor(groups * nt, 1, (t0, t1) -> {
            float[] packed = null;
            for (int task = t0; task < t1; task++) {
                int g = task / nt, jt = task % nt;
                int j0 = jt * TILE_N, j1 = Math.min(n, j0 + TILE_N), w = j1 - j0;
                float[] bm = bf;
                int bo = bOff, ldb = useNt ? k : n;
                if (packTiles) {
                    if (packed == null) packed = new float[k * TILE_N];
                    packTile(bf, bOff, k, j0, j1, packed);
                    bm = packed;
                    bo = -j0; // nn indexes B columns absolutely: column j lives at packed[p·w + j − j0]
                    ldb = w;
                }
                for (int it = g * GROUP_TILES; it < Math.min(mt, (g + 1) * GROUP_TILES); it++) {
                    int i0 = it * TILE_M, i1 = Math.min(m, i0 + TILE_M);
                    if (useNt) KERNELS.nt(aF, aO, k, bm, bo, ldb, cf, cOff, n, k, i0, i1, j0, j1, alpha, beta);
                    else KERNELS.nn(aF, aO, lda, aTrans, bm, bo, ldb, cf, cOff, n, k, i0, i1, j0, j1, alpha, beta);
                }
            }
        });
        round(C);
    }

    /**
     * Rows [j0, j1) of B (N,K) transposed into packed (K, j1−j0). Eight rows at a time, so every
     * step writes 8 adjacent floats while reading 8 sequential streams (both cache friendly).
     */
    private static void packTile(float[] b, int bOff, int k, int j0, int j1, float[] packed) {
        int w = j1 - j0, j = j0;
        for (; j + 8 <= j1; j += 8) {
            int s0 = bOff + j * k, col = j - j0;
            for (int p = 0; p < k; p++) {
                int d = p * w + col, s = s0 + p;
                packed[d] = b[s];
                packed[d + 1] = b[s + k];
                packed[d + 2] = b[s + 2 * k];
                packed[d + 3] = b[s + 3 * k];
                packed[d + 4] = b[s + 4 * k];
                packed[d + 5] = b[s + 5 * k];
                packed[d + 6] = b[s + 6 * k];
                packed[d + 7] = b[s + 7 * k];
            }
        }
        for (; j < j1; j++) {
            int s0 = bOff + j * k, col = j - j0;
            for (int p = 0; p < k; p++) packed[p * w + col] = b[s0 + p];
        }
    }

    /** (rows, cols) row-major → a fresh (cols, rows) array, in 32×32 blocks (both sides stay in cache). */
    private float[] transpose(float[] src, int off, int rows, int cols) {
        float[] out = new float[rows * cols];
        final int bs = 32;
        int colBlocks = (cols + bs - 1) / bs;
        parallelFor(colBlocks, Math.max(1, 64 * 1024 / Math.max(1, rows * bs)), (b0, b1) -> {
            for (int cb = b0; cb < b1; cb++) {
                int c0 = cb * bs, c1 = Math.min(cols, c0 + bs);
                for (int r0 = 0; r0 < rows; r0 += bs) {
                    int r1 = Math.min(rows, r0 + bs);
                    for (int r = r0; r < r1; r++) {
                        int so = off + r * cols;
                        for (int c = c0; c < c1; c++) out[c * rows + r] = src[so + c];
                    }
                }
            }
        });
        return out;
    }

    @Override
    public void axpy(Tensor y, float alpha, Tensor x) {
        TensorChecks.sameNumel(y, x, "axpy");
        CpuTensor Y = ft(y, "axpy y"), X = ft(x, "axpy x");
        parallelFor(Y.numel, 65536, (a, b) -> {
            for (int i = a; i < b; i++) Y.f[Y.off + i] += alpha * X.f[X.off + i];
            round(Y, a, b);
        });
    }

    @Override
    public void scale(Tensor x, float s) {
        CpuTensor X = ft(x, "scale");
        parallelFor(X.numel, 65536, (a, b) -> {
            for (int i = a; i < b; i++) X.f[X.off + i] *= s;
            round(X, a, b);
        });
    }

    @Override
    public void mul(Tensor out, Tensor a, Tensor b) {
        TensorChecks.sameNumel(out, a, "mul");
        TensorChecks.sameNumel(out, b, "mul");
        CpuTensor O = ft(out, "mul out"), A = ft(a, "mul a"), B = ft(b, "mul b");
        parallelFor(O.numel, 65536, (s, e) -> {
            for (int i = s; i < e; i++) O.f[O.off + i] = A.f[A.off + i] * B.f[B.off + i];
            round(O, s, e);
        });
    }

    @Override
    public double sumOfSquares(List<Tensor> tensors) {
        double total = 0;
        for (Tensor x : tensors) {
            CpuTensor X = ft(x, "sumOfSquares");
            final int grain = 1 << 16;
            int chunks = (X.numel + grain - 1) / grain;
            double[] partial = new double[chunks];
            parallelFor(X.numel, grain, (a, b) -> {
                double s = 0;
                for (int i = a; i < b; i++) { double v = X.f[X.off + i]; s += v * v; }
                partial[a / grain] = s;
            });
            for (double p : partial) total += p;
        }
        return total;
    }

    // ------------------------------------------------------------------ layers

    @Override
    public void embedding(Tensor out, Tensor ids, Tensor table) {
        CpuTensor O = ft(out, "embedding out"), I = it(ids, "embedding ids"), W = ft(table, "embedding table");
        int c = W.cols(), v = W.rows(), n = I.numel;
        if (O.cols() != c || O.rows() != n) throw new IllegalArgumentException("embedding: out " + Tensor.describe(out) + " for " + n + " ids of width " + c);
        for (int r = 0; r < n; r++) {
            int id = I.i[I.off + r];
            if (id < 0 || id >= v) throw new IllegalArgumentException("embedding: token id " + id + " at position " + r + " outside vocabulary of " + v);
        }
        parallelFor(n, grainFor(c), (a, b) -> {
            for (int r = a; r < b; r++) System.arraycopy(W.f, W.off + I.i[I.off + r] * c, O.f, O.off + r * c, c);
            round(O, a * c, b * c);
        });
    }

    @Override
    public void rmsNorm(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) {
        CpuTensor O = ft(out, "rmsNorm out"), R = ft(rstd, "rmsNorm rstd"), X = ft(x, "rmsNorm x"), W = ft(weight, "rmsNorm weight");
        int c = X.cols(), n = X.rows();
        if (W.numel != c || R.numel != n) throw new IllegalArgumentException("rmsNorm: weight " + Tensor.describe(weight) + " / rstd " + Tensor.describe(rstd) + " for x " + Tensor.describe(x));
        TensorChecks.sameNumel(out, x, "rmsNorm");
        parallelFor(n, grainFor(c), (a, b) -> {
            for (int r = a; r < b; r++) {
                int xo = X.off + r * c, oo = O.off + r * c;
                double ss = 0;
                for (int j = 0; j < c; j++) { double v = X.f[xo + j]; ss += v * v; }
                float rs = (float) (1.0 / Math.sqrt(ss / c + eps));
                R.f[R.off + r] = rs;
                for (int j = 0; j < c; j++) O.f[oo + j] = X.f[xo + j] * rs * W.f[W.off + j];
            }
            round(O, a * c, b * c);
        });
    }

    @Override
    public void rmsNormBackward(Tensor dx, Tensor dout, Tensor x, Tensor weight, Tensor rstd, boolean accumulate) {
        CpuTensor DX = ft(dx, "dx"), DO = ft(dout, "dout"), X = ft(x, "x"), W = ft(weight, "weight"), R = ft(rstd, "rstd");
        int c = X.cols(), n = X.rows();
        TensorChecks.sameNumel(dx, x, "rmsNormBackward");
        TensorChecks.sameNumel(dout, x, "rmsNormBackward");
        parallelFor(n, grainFor(c), (a, b) -> {
            for (int r = a; r < b; r++) {
                int xo = X.off + r * c, go = DO.off + r * c, dxo = DX.off + r * c;
                float rs = R.f[R.off + r];
                double dot = 0;
                for (int j = 0; j < c; j++) dot += (double) W.f[W.off + j] * DO.f[go + j] * X.f[xo + j];
                float coef = (float) (dot * rs * rs * rs / c);
                for (int j = 0; j < c; j++) {
                    float g = rs * W.f[W.off + j] * DO.f[go + j] - coef * X.f[xo + j];
                    DX.f[dxo + j] = accumulate ? DX.f[dxo + j] + g : g;
                }
            }
            round(DX, a * c, b * c);
        });
    }

    @Override
    public void rmsNormWeightGrad(Tensor dweight, Tensor dout, Tensor x, Tensor rstd) {
        CpuTensor DW = ft(dweight, "rmsNormWeightGrad dweight"), DO = ft(dout, "dout"), X = ft(x, "x"), R = ft(rstd, "rstd");
        int c = X.cols(), n = X.rows();
        if (DW.dtype != DType.F32 || DW.numel != c || R.numel != n)
            throw new IllegalArgumentException("rmsNormWeightGrad: dweight " + Tensor.describe(dweight) + " (F32, C) / rstd " + Tensor.describe(rstd) + " for x " + Tensor.describe(x));
        TensorChecks.sameNumel(dout, x, "rmsNormWeightGrad");
        // columns in parallel, each column's sum over the rows in row order: the same bits every time
        parallelFor(c, Math.max(1, 32768 / Math.max(1, n)), (a, b) -> {
            double[] s = new double[b - a];
            for (int r = 0; r < n; r++) {
                double rs = R.f[R.off + r];
                int xo = X.off + r * c, go = DO.off + r * c;
                for (int j = a; j < b; j++) s[j - a] += (double) DO.f[go + j] * X.f[xo + j] * rs;
            }
            for (int j = a; j < b; j++) DW.f[DW.off + j] += (float) s[j - a];
        });
    }

    @Override
    public void embeddingBackward(Tensor dtable, Tensor dout, Tensor ids) {
        CpuTensor DT = ft(dtable, "embeddingBackward dtable"), DO = ft(dout, "dout"), I = it(ids, "embeddingBackward ids");
        int c = DT.cols(), v = DT.rows(), n = I.numel;
        if (DT.dtype != DType.F32 || DO.cols() != c || DO.rows() != n)
            throw new IllegalArgumentException("embeddingBackward: dtable " + Tensor.describe(dtable) + " (F32) / dout " + Tensor.describe(dout) + " for " + n + " ids");
        for (int r = 0; r < n; r++) {
            int id = I.i[I.off + r];
            if (id < 0 || id >= v) throw new IllegalArgumentException("embeddingBackward: token id " + id + " at position " + r + " outside vocabulary of " + v);
        }
        // column ranges in parallel, rows in id order within each: repeated ids add in a fixed order
        parallelFor(c, Math.max(1, 32768 / Math.max(1, n)), (a, b) -> {
            for (int r = 0; r < n; r++) {
                int to = DT.off + I.i[I.off + r] * c, from = DO.off + r * c;
                for (int j = a; j < b; j++) DT.f[to + j] += DO.f[from + j];
            }
        });
    }

    @Override
    public void rope(Tensor x, Tensor positions, Tensor cos, Tensor sin, int heads, int headDim, boolean inverse) {
        CpuTensor X = ft(x, "rope x"), P = it(positions, "rope positions"), COS = ft(cos, "rope cos"), SIN = ft(sin, "rope sin");
        int width = heads * headDim, half = headDim / 2;
        if (X.cols() != width || P.numel != X.rows() || COS.cols() != half)
            throw new IllegalArgumentException("rope: x " + Tensor.describe(x) + ", positions " + Tensor.describe(positions) + ", cos " + Tensor.describe(cos) + " for " + heads + " heads of " + headDim);
        int maxPos = COS.rows(), n = X.rows();
        parallelFor(n, grainFor(width), (a, b) -> {
            for (int r = a; r < b; r++) {
                int pos = P.i[P.off + r];
                if (pos < 0 || pos >= maxPos) throw new IllegalArgumentException("rope: position " + pos + " outside table of " + maxPos);
                int co = COS.off + pos * half, so = SIN.off + pos * half;
                for (int h = 0; h < heads; h++) {
                    int base = X.off + r * width + h * headDim;
                    for (int i = 0; i < half; i++) {
                        float cs = COS.f[co + i], sn = inverse ? -SIN.f[so + i] : SIN.f[so + i];
                        float x1 = X.f[base + i], x2 = X.f[base + i + half];
                        X.f[base + i] = x1 * cs - x2 * sn;
                        X.f[base + i + half] = x2 * cs + x1 * sn;
                    }
                }
            }
            round(X, a * width, b * width);
        });
    }

    private static void checkAttention(CpuTensor q, CpuTensor k, CpuTensor v, CpuTensor out, int batch, int seqLen, int heads, int kvHeads, int headDim) {
        int n = batch * seqLen;
        if (heads % kvHeads != 0) throw new IllegalArgumentException("attention: " + heads + " heads not a multiple of " + kvHeads + " kv heads");
        if (q.numel != n * heads * headDim || out.numel != q.numel || k.numel != n * kvHeads * headDim || v.numel != k.numel)
            throw new IllegalArgumentException("attention: q " + Tensor.describe(q) + " k " + Tensor.describe(k) + " v " + Tensor.describe(v)
                    + " out " + Tensor.describe(out) + " for B=" + batch + " T=" + seqLen + " H=" + heads + " Hkv=" + kvHeads + " D=" + headDim);
    }

    /** Row block of the causal attention GEMMs: rows [i0, i0+ATT_BLOCK) only need keys [0, i0+ATT_BLOCK). */
    private static final int ATT_BLOCK = 32;

    /** First key query i may see under a sliding window (i − j < window); 0 when window ≤ 0 (plain causal). */
    static int firstVisibleKey(int i, int window) { return window > 0 ? Math.max(0, i - window + 1) : 0; }

    /** Rows [0, tv) of one head's K (or V), stride kw, transposed into kt (D, tv): the B operand of nn. */
    private static void packHeadT(float[] k, int kOff, int kw, int d, int tv, float[] kt) {
        for (int j = 0; j < tv; j++) {
            int src = kOff + j * kw;
            for (int e = 0; e < d; e++) kt[e * tv + j] = k[src + e];
        }
    }

    /**
     * S = scale·Q_h·K_gᵀ over the causal lower triangle (block-wise; entries above the diagonal are
     * left unspecified), for one sequence's tv valid rows. s is (tv, tv); kt is K_g transposed (D, tv).
     */
    private static void scores(float[] s, int tv, float[] q, int qOff, int qw, float[] kt, int d, float scale) {
        for (int i0 = 0; i0 < tv; i0 += ATT_BLOCK) {
            int i1 = Math.min(tv, i0 + ATT_BLOCK);
            KERNELS.nn(q, qOff, qw, false, kt, 0, tv, s, 0, tv, d, i0, i1, 0, i1, scale, 0f);
        }
    }

    /**
     * The one attention forward: {@code window} ≤ 0 is plain causal attention; otherwise row i only
     * keeps keys j with i − j < window (the scores GEMM still fills the causal block, the softmax
     * masks the rest), so window 0 runs exactly the plain path's arithmetic.
     */
    @Override
    public void attention(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyStart,
                          int batch, int seqLen, int heads, int kvHeads, int headDim, float scale, int window) {
        CpuTensor O = ft(out, "out"), L = ft(lse, "lse"), Q = ft(q, "q"), K = ft(k, "k"), V = ft(v, "v"), KS = it(keyStart, "keyStart");
        checkAttention(Q, K, V, O, batch, seqLen, heads, kvHeads, headDim);
        if (L.numel != batch * heads * seqLen) throw new IllegalArgumentException("attention: lse " + Tensor.describe(lse));
        final int T = seqLen, D = headDim, qw = heads * D, kw = kvHeads * D, group = heads / kvHeads;
        // one task per (sequence, head): S = QKᵀ and O = PV through the GEMM kernels, softmax in between
        parallelFor(batch * heads, 1, (st, en) -> {
            float[] p = new float[T * T], kt = new float[D * T];
            for (int bh = st; bh < en; bh++) {
                int b = bh / heads, h = bh % heads, g = h / group;
                int ks = Math.min(T, Math.max(0, KS.i[KS.off + b])), tv = T - ks;
                int lo = L.off + (b * heads + h) * T;
                for (int t = 0; t < ks; t++) { // padding queries: no visible key
                    int oo = O.off + (b * T + t) * qw + h * D;
                    Arrays.fill(O.f, oo, oo + D, 0f);
                    L.f[lo + t] = Float.NEGATIVE_INFINITY;
                }
                if (tv == 0) continue;
                int qOff = Q.off + (b * T + ks) * qw + h * D, kOff = K.off + (b * T + ks) * kw + g * D, vOff = V.off + (b * T + ks) * kw + g * D;
                packHeadT(K.f, kOff, kw, D, tv, kt);
                scores(p, tv, Q.f, qOff, qw, kt, D, scale);
                for (int i = 0; i < tv; i++) {
                    int r = i * tv, j0 = firstVisibleKey(i, window);
                    float max = Float.NEGATIVE_INFINITY;
                    for (int j = j0; j <= i; j++) max = Math.max(max, p[r + j]);
                    KERNELS.expShift(p, r + j0, i + 1 - j0, max);
                    double sum = 0;
                    for (int j = j0; j <= i; j++) sum += p[r + j];
                    float inv = (float) (1.0 / sum);
                    for (int j = j0; j <= i; j++) p[r + j] *= inv;
                    for (int j = 0; j < j0; j++) p[r + j] = 0f;
                    for (int j = i + 1; j < tv; j++) p[r + j] = 0f;
                    L.f[lo + ks + i] = (float) (max + Math.log(sum));
                }
                int oOff = O.off + (b * T + ks) * qw + h * D;
                for (int i0 = 0; i0 < tv; i0 += ATT_BLOCK) {
                    int i1 = Math.min(tv, i0 + ATT_BLOCK);
                    KERNELS.nn(p, 0, tv, false, V.f, vOff, kw, O.f, oOff, qw, i1, i0, i1, 0, D, 1f, 0f);
                }
            }
        });
        round(O);
    }

    /** The one attention backward; keys outside the window (window > 0) get P = dS = 0, as in the forward. */
    @Override
    public void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                                  Tensor q, Tensor k, Tensor v, Tensor keyStart,
                                  int batch, int seqLen, int heads, int kvHeads, int headDim, float scale, int window) {
        CpuTensor DQ = ft(dq, "dq"), DK = ft(dk, "dk"), DV = ft(dv, "dv"), DO = ft(dout, "dout"), O = ft(out, "out"), L = ft(lse, "lse");
        CpuTensor Q = ft(q, "q"), K = ft(k, "k"), V = ft(v, "v"), KS = it(keyStart, "keyStart");
        checkAttention(Q, K, V, O, batch, seqLen, heads, kvHeads, headDim);
        final int T = seqLen, D = headDim, qw = heads * D, kw = kvHeads * D, group = heads / kvHeads;
        // one task per (sequence, kv head): it owns dk/dv of that head and dq of the group's query heads.
        // Per head: P from the stashed lse, dP = dO·Vᵀ, dS = P⊙(dP − rowsum(dO⊙O)), then
        // dQ = scale·dS·K, dK += scale·dSᵀ·Q, dV += Pᵀ·dO through the GEMM kernels.
        parallelFor(batch * kvHeads, 1, (st, en) -> {
            float[] p = new float[T * T], ds = new float[T * T], kt = new float[D * T], vt = new float[D * T];
            for (int bg = st; bg < en; bg++) {
                int b = bg / kvHeads, g = bg % kvHeads;
                int ks = Math.min(T, Math.max(0, KS.i[KS.off + b])), tv = T - ks;
                for (int t = 0; t < T; t++) {
                    int ko = (b * T + t) * kw + g * D;
                    Arrays.fill(DK.f, DK.off + ko, DK.off + ko + D, 0f);
                    Arrays.fill(DV.f, DV.off + ko, DV.off + ko + D, 0f);
                    for (int h = g * group; h < (g + 1) * group; h++) {
                        int qo = DQ.off + (b * T + t) * qw + h * D;
                        Arrays.fill(DQ.f, qo, qo + D, 0f);
                    }
                }
                if (tv == 0) continue;
                int kOff = (b * T + ks) * kw + g * D;
                packHeadT(K.f, K.off + kOff, kw, D, tv, kt);
                packHeadT(V.f, V.off + kOff, kw, D, tv, vt);
                for (int h = g * group; h < (g + 1) * group; h++) {
                    int qOff = (b * T + ks) * qw + h * D, lo = L.off + (b * heads + h) * T + ks;
                    scores(p, tv, Q.f, Q.off + qOff, qw, kt, D, scale);
                    scores(ds, tv, DO.f, DO.off + qOff, qw, vt, D, 1f); // dP = dO·Vᵀ, same causal blocks
                    for (int i = 0; i < tv; i++) {
                        int r = i * tv, ro = qOff + i * qw;
                        float dsum = 0f;
                        for (int x = 0; x < D; x++) dsum += DO.f[DO.off + ro + x] * O.f[O.off + ro + x];
                        float l = L.f[lo + i];
                        int j0 = firstVisibleKey(i, window);
                        KERNELS.expShift(p, r + j0, i + 1 - j0, l);
                        for (int j = j0; j <= i; j++) ds[r + j] = p[r + j] * (ds[r + j] - dsum) * scale;
                        for (int j = 0; j < j0; j++) { p[r + j] = 0f; ds[r + j] = 0f; }
                        for (int j = i + 1; j < tv; j++) { p[r + j] = 0f; ds[r + j] = 0f; }
                    }
                    // dQ_h = dS·K (causal: row block i0..i1 needs keys < i1)
                    for (int i0 = 0; i0 < tv; i0 += ATT_BLOCK) {
                        int i1 = Math.min(tv, i0 + ATT_BLOCK);
                        KERNELS.nn(ds, 0, tv, false, K.f, K.off + kOff, kw, DQ.f, DQ.off + qOff, qw, i1, i0, i1, 0, D, 1f, 0f);
                    }
                    // dK_g += dSᵀ·Q_h ; dV_g += Pᵀ·dO_h
                    // causal: key row j only receives from queries i ≥ j, so each row block starts its sum at j0;
                    // dSᵀ and Pᵀ are read in place (nn's transposed-A mode)
                    for (int j0 = 0; j0 < tv; j0 += ATT_BLOCK) {
                        int j1 = Math.min(tv, j0 + ATT_BLOCK);
                        KERNELS.nn(ds, j0 * tv, tv, true, Q.f, Q.off + qOff + j0 * qw, qw, DK.f, DK.off + kOff, kw, tv - j0, j0, j1, 0, D, 1f, 1f);
                        KERNELS.nn(p, j0 * tv, tv, true, DO.f, DO.off + qOff + j0 * qw, qw, DV.f, DV.off + kOff, kw, tv - j0, j0, j1, 0, D, 1f, 1f);
                    }
                }
            }
        });
        round(DQ);
        round(DK);
        round(DV);
    }


    /** The one cached attention: the token at position p reads keys [p − window + 1, p] (all of [0, p] when window ≤ 0). */
    @Override
    public void attentionCached(Tensor out, Tensor q, Tensor kCache, Tensor vCache, int pos0,
                                int heads, int kvHeads, int headDim, float scale, int window) {
        CpuTensor O = ft(out, "out"), Q = ft(q, "q"), K = ft(kCache, "kCache"), V = ft(vCache, "vCache");
        final int D = headDim, qw = heads * D, kw = kvHeads * D, group = heads / kvHeads, n = Q.rows();
        if (Q.cols() != qw || K.cols() != kw || V.cols() != kw || O.numel != Q.numel || pos0 + n > K.rows())
            throw new IllegalArgumentException("attentionCached: q " + Tensor.describe(q) + " cache " + Tensor.describe(kCache) + " pos0 " + pos0);
        parallelFor(n * heads, 1, (s, e) -> {
            float[] p = new float[pos0 + n];
            for (int th = s; th < e; th++) {
                int t = th / heads, h = th % heads, g = h / group, last = pos0 + t, first = firstVisibleKey(last, window);
                int qo = Q.off + t * qw + h * D;
                float max = Float.NEGATIVE_INFINITY;
                for (int j = first; j <= last; j++) {
                    int ko = K.off + j * kw + g * D;
                    float d = 0f;
                    for (int i = 0; i < D; i++) d += Q.f[qo + i] * K.f[ko + i];
                    p[j] = d * scale;
                    if (p[j] > max) max = p[j];
                }
                double sum = 0;
                for (int j = first; j <= last; j++) { p[j] = (float) Math.exp(p[j] - max); sum += p[j]; }
                float inv = (float) (1.0 / sum);
                int oo = O.off + t * qw + h * D;
                Arrays.fill(O.f, oo, oo + D, 0f);
                for (int j = first; j <= last; j++) {
                    float w = p[j] * inv;
                    int vo = V.off + j * kw + g * D;
                    for (int i = 0; i < D; i++) O.f[oo + i] += w * V.f[vo + i];
                }
            }
        });
        round(O);
    }

    @Override
    public void attentionCachedBatch(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor keyStart, int batch, int pos0,
                                     int heads, int kvHeads, int headDim, float scale) {
        attentionCachedBatch(out, q, kCache, vCache, keyStart, batch, pos0, heads, kvHeads, headDim, scale, 0);
    }

    /**
     * The one batched cached attention (layouts in {@link Backend#attentionCachedBatch}): one task per
     * (new token, sequence, head), the arithmetic of {@link #attentionCached} over the keys
     * [max(keyStart[b], p − window + 1), p], so a sequence without padding gets the single-sequence bits.
     */
    @Override
    public void attentionCachedBatch(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor keyStart, int batch, int pos0,
                                     int heads, int kvHeads, int headDim, float scale, int window) {
        CpuTensor O = ft(out, "out"), Q = ft(q, "q"), K = ft(kCache, "kCache"), V = ft(vCache, "vCache"), KS = it(keyStart, "keyStart");
        if (batch <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
            throw new IllegalArgumentException("attentionCachedBatch: batch " + batch + ", " + heads + " heads over " + kvHeads + " kv heads");
        final int B = batch, D = headDim, qw = heads * D, kw = kvHeads * D, group = heads / kvHeads;
        final int n = Q.rows() / B, maxT = K.rows() / B;
        if (Q.cols() != qw || Q.rows() % B != 0 || K.cols() != kw || K.rows() % B != 0 || V.numel != K.numel || O.numel != Q.numel
                || KS.numel != B || pos0 < 0 || pos0 + n > maxT)
            throw new IllegalArgumentException("attentionCachedBatch: q " + Tensor.describe(q) + " cache " + Tensor.describe(kCache) + " keyStart "
                    + Tensor.describe(keyStart) + " for B=" + B + " pos0=" + pos0 + " H=" + heads + " Hkv=" + kvHeads + " D=" + D);
        parallelFor(n * B * heads, 1, (s, e) -> {
            float[] p = new float[pos0 + n];
            for (int r = s; r < e; r++) {
                int row = r / heads, h = r % heads, t = row / B, b = row % B, g = h / group, last = pos0 + t;
                int first = Math.max(KS.i[KS.off + b], firstVisibleKey(last, window));
                int qo = Q.off + row * qw + h * D, oo = O.off + row * qw + h * D;
                Arrays.fill(O.f, oo, oo + D, 0f);
                if (first > last) continue; // a padding slot: no visible key
                float max = Float.NEGATIVE_INFINITY;
                for (int j = first; j <= last; j++) {
                    int ko = K.off + (j * B + b) * kw + g * D;
                    float d = 0f;
                    for (int i = 0; i < D; i++) d += Q.f[qo + i] * K.f[ko + i];
                    p[j] = d * scale;
                    if (p[j] > max) max = p[j];
                }
                double sum = 0;
                for (int j = first; j <= last; j++) { p[j] = (float) Math.exp(p[j] - max); sum += p[j]; }
                float inv = (float) (1.0 / sum);
                for (int j = first; j <= last; j++) {
                    float w = p[j] * inv;
                    int vo = V.off + (j * B + b) * kw + g * D;
                    for (int i = 0; i < D; i++) O.f[oo + i] += w * V.f[vo + i];
                }
            }
        });
        round(O);
    }

    @Override
    public void swiglu(Tensor out, Tensor gate, Tensor up) {
        TensorChecks.sameNumel(out, gate, "swiglu");
        TensorChecks.sameNumel(out, up, "swiglu");
        CpuTensor O = ft(out, "out"), G = ft(gate, "gate"), U = ft(up, "up");
        parallelFor(O.numel, 32768, (a, b) -> {
            KERNELS.swiglu(O.f, O.off + a, G.f, G.off + a, U.f, U.off + a, b - a);
            round(O, a, b);
        });
    }

    @Override
    public void swigluBackward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up) {
        TensorChecks.sameNumel(dgate, gate, "swigluBackward");
        TensorChecks.sameNumel(dup, up, "swigluBackward");
        TensorChecks.sameNumel(dout, gate, "swigluBackward");
        CpuTensor DG = ft(dgate, "dgate"), DU = ft(dup, "dup"), DO = ft(dout, "dout"), G = ft(gate, "gate"), U = ft(up, "up");
        parallelFor(G.numel, 32768, (a, b) -> {
            KERNELS.swigluBackward(DG.f, DG.off + a, DU.f, DU.off + a, DO.f, DO.off + a, G.f, G.off + a, U.f, U.off + a, b - a);
            round(DG, a, b);
            round(DU, a, b);
        });
    }

    @Override
    public void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, float gradScale) {
        CpuTensor LS = ft(losses, "losses"), LG = ft(logits, "logits"), TG = it(targets, "targets");
        CpuTensor DL = dlogits == null ? null : ft(dlogits, "dlogits");
        int v = LG.cols(), n = LG.rows();
        if (TG.numel != n || LS.numel != n || (DL != null && DL.numel != LG.numel))
            throw new IllegalArgumentException("crossEntropy: logits " + Tensor.describe(logits) + " targets " + Tensor.describe(targets) + " losses " + Tensor.describe(losses));
        for (int r = 0; r < n; r++) {
            int tg = TG.i[TG.off + r];
            if (tg != -100 && (tg < 0 || tg >= v)) throw new IllegalArgumentException("crossEntropy: target " + tg + " at row " + r + " outside vocabulary of " + v);
        }
        parallelFor(n, grainFor(v), (a, b) -> {
            for (int r = a; r < b; r++) {
                int tg = TG.i[TG.off + r], lo = LG.off + r * v;
                if (tg == -100) {
                    LS.f[LS.off + r] = 0f;
                    if (DL != null) Arrays.fill(DL.f, DL.off + r * v, DL.off + (r + 1) * v, 0f);
                    continue;
                }
                float max = Float.NEGATIVE_INFINITY;
                for (int j = 0; j < v; j++) max = Math.max(max, LG.f[lo + j]);
                double sum = 0;
                for (int j = 0; j < v; j++) sum += Math.exp(LG.f[lo + j] - max);
                double lse = max + Math.log(sum);
                LS.f[LS.off + r] = (float) (lse - LG.f[lo + tg]);
                if (DL != null) {
                    int d = DL.off + r * v;
                    for (int j = 0; j < v; j++) {
                        float pj = (float) Math.exp(LG.f[lo + j] - lse);
                        DL.f[d + j] = gradScale * (j == tg ? pj - 1f : pj);
                    }
                    round(DL, r * v, (r + 1) * v);
                }
            }
        });
    }

    /** Uniform in [0,1) from (seed, index): splitmix64, so forward and backward draw the same mask. */
    static float uniform(long seed, long index) {
        long z = seed * 0x9E3779B97F4A7C15L + index * 0xBF58476D1CE4E5B9L + 0x94D049BB133111EBL;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        z = z ^ (z >>> 31);
        return (z >>> 40) * 0x1.0p-24f;
    }

    @Override
    public void dropout(Tensor out, Tensor x, float p, long seed) {
        TensorChecks.sameNumel(out, x, "dropout");
        if (!(p >= 0f && p < 1f)) throw new IllegalArgumentException("dropout: p must be in [0,1), got " + p);
        if (p == 0f) { copy(out, x); return; }
        CpuTensor O = ft(out, "out"), X = ft(x, "x");
        float keep = 1f / (1f - p);
        parallelFor(O.numel, 65536, (a, b) -> {
            for (int i = a; i < b; i++) O.f[O.off + i] = uniform(seed, i) >= p ? X.f[X.off + i] * keep : 0f;
            round(O, a, b);
        });
    }

    // ------------------------------------------------------------------ optimizer

    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2,
                      float eps, float weightDecay, int step, float gradScale) {
        TensorChecks.adamw(param, grad, m, v, step);
        CpuTensor P = ft(param, "param"), G = ft(grad, "grad"), M = ft(m, "m"), V = ft(v, "v");
        float bc1 = (float) (1.0 - Math.pow(beta1, step)), bc2 = (float) (1.0 - Math.pow(beta2, step));
        parallelFor(P.numel, 65536, (a, b) -> {
            for (int i = a; i < b; i++) {
                float g = G.f[G.off + i] * gradScale;
                float mi = beta1 * M.f[M.off + i] + (1f - beta1) * g;
                float vi = beta2 * V.f[V.off + i] + (1f - beta2) * g * g;
                M.f[M.off + i] = mi;
                V.f[V.off + i] = vi;
                float mhat = mi / bc1, vhat = vi / bc2;
                float pi = P.f[P.off + i];
                P.f[P.off + i] = pi - lr * (mhat / ((float) Math.sqrt(vhat) + eps) + weightDecay * pi);
            }
            round(P, a, b);
        });
    }

    // ------------------------------------------------------------------ SparseLoRA: selection and slicing

    private static void checkIdx(CpuTensor idx, int limit, String op) {
        for (int j = 0; j < idx.numel; j++) {
            int x = idx.i[idx.off + j];
            if (x < 0 || x >= limit) throw new IllegalArgumentException(op + ": index " + x + " at " + j + " outside [0," + limit + ")");
        }
    }

    @Override
    public void gatherRows(Tensor out, Tensor src, Tensor idx) {
        CpuTensor O = ft(out, "out"), S = ft(src, "src"), I = it(idx, "idx");
        int c = S.cols(), k = I.numel;
        if (O.cols() != c || O.rows() != k) throw new IllegalArgumentException("gatherRows: out " + Tensor.describe(out) + " for " + k + " rows of " + Tensor.describe(src));
        checkIdx(I, S.rows(), "gatherRows");
        parallelFor(k, grainFor(c), (a, b) -> {
            for (int r = a; r < b; r++) System.arraycopy(S.f, S.off + I.i[I.off + r] * c, O.f, O.off + r * c, c);
            if (O.dtype != S.dtype) round(O, a * c, b * c);
        });
    }

    @Override
    public void scatterRows(Tensor out, Tensor src, Tensor idx, boolean accumulate) {
        CpuTensor O = ft(out, "out"), S = ft(src, "src"), I = it(idx, "idx");
        int c = S.cols(), k = I.numel;
        if (O.cols() != c || S.rows() != k) throw new IllegalArgumentException("scatterRows: src " + Tensor.describe(src) + " for " + k + " rows of " + Tensor.describe(out));
        checkIdx(I, O.rows(), "scatterRows");
        // indices may repeat only if the caller accepts arbitrary order; kept sets are unique, so rows are disjoint
        parallelFor(k, grainFor(c), (a, b) -> {
            for (int r = a; r < b; r++) {
                int d = O.off + I.i[I.off + r] * c, s = S.off + r * c;
                if (accumulate) for (int j = 0; j < c; j++) O.f[d + j] += S.f[s + j];
                else System.arraycopy(S.f, s, O.f, d, c);
                if (O.dtype != DType.F32) round(O, d - O.off, d - O.off + c);
            }
        });
    }

    @Override
    public void gatherCols(Tensor out, Tensor src, Tensor idx) {
        CpuTensor O = ft(out, "out"), S = ft(src, "src"), I = it(idx, "idx");
        int c = S.cols(), rows = S.rows(), k = I.numel;
        if (O.cols() != k || O.rows() != rows) throw new IllegalArgumentException("gatherCols: out " + Tensor.describe(out) + " for " + k + " columns of " + Tensor.describe(src));
        checkIdx(I, c, "gatherCols");
        parallelFor(rows, grainFor(k), (a, b) -> {
            for (int r = a; r < b; r++) {
                int so = S.off + r * c, oo = O.off + r * k;
                for (int j = 0; j < k; j++) O.f[oo + j] = S.f[so + I.i[I.off + j]];
            }
            if (O.dtype != S.dtype) round(O, a * k, b * k);
        });
    }

    @Override
    public void scatterCols(Tensor out, Tensor src, Tensor idx, boolean accumulate) {
        CpuTensor O = ft(out, "out"), S = ft(src, "src"), I = it(idx, "idx");
        int c = O.cols(), rows = O.rows(), k = I.numel;
        if (S.cols() != k || S.rows() != rows) throw new IllegalArgumentException("scatterCols: src " + Tensor.describe(src) + " for " + k + " columns of " + Tensor.describe(out));
        checkIdx(I, c, "scatterCols");
        parallelFor(rows, grainFor(k), (a, b) -> {
            for (int r = a; r < b; r++) {
                int so = S.off + r * k, oo = O.off + r * c;
                if (accumulate) for (int j = 0; j < k; j++) O.f[oo + I.i[I.off + j]] += S.f[so + j];
                else for (int j = 0; j < k; j++) O.f[oo + I.i[I.off + j]] = S.f[so + j];
            }
            round(O, a * c, b * c);
        });
    }

    @Override
    public void gatherRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        CpuTensor O = ft(out, "out"), S = ft(src, "src"), R = it(rowIdx, "rowIdx"), K = it(colIdx, "colIdx");
        int c = S.cols(), n = R.numel, k = K.numel;
        if (O.rows() != n || O.cols() != k)
            throw new IllegalArgumentException("gatherRowsCols: out " + Tensor.describe(out) + " for " + n + " rows × " + k + " columns of " + Tensor.describe(src));
        checkIdx(R, S.rows(), "gatherRowsCols");
        checkIdx(K, c, "gatherRowsCols");
        parallelFor(n, grainFor(k), (a, b) -> {
            for (int r = a; r < b; r++) {
                int so = S.off + R.i[R.off + r] * c, oo = O.off + r * k;
                for (int j = 0; j < k; j++) O.f[oo + j] = S.f[so + K.i[K.off + j]];
            }
            if (O.dtype != S.dtype) round(O, a * k, b * k);
        });
    }

    @Override
    public void scatterRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        CpuTensor O = ft(out, "out"), S = ft(src, "src"), R = it(rowIdx, "rowIdx"), K = it(colIdx, "colIdx");
        int c = O.cols(), n = R.numel, k = K.numel;
        if (S.rows() != n || S.cols() != k)
            throw new IllegalArgumentException("scatterRowsCols: src " + Tensor.describe(src) + " for " + n + " rows × " + k + " columns of " + Tensor.describe(out));
        checkIdx(R, O.rows(), "scatterRowsCols");
        checkIdx(K, c, "scatterRowsCols");
        // kept sets and token sets are unique, so the rows written are disjoint
        parallelFor(n, grainFor(c), (a, b) -> {
            for (int r = a; r < b; r++) {
                int d = O.off + R.i[R.off + r] * c, so = S.off + r * k;
                java.util.Arrays.fill(O.f, d, d + c, 0f);
                for (int j = 0; j < k; j++) O.f[d + K.i[K.off + j]] = S.f[so + j];
                if (O.dtype != S.dtype) round(O, d - O.off, d - O.off + c);
            }
        });
    }

    @Override
    public void columnNorms(Tensor out, Tensor x) {
        CpuTensor O = ft(out, "out"), X = ft(x, "x");
        int c = X.cols(), rows = X.rows();
        if (O.numel != c) throw new IllegalArgumentException("columnNorms: out " + Tensor.describe(out) + " for x " + Tensor.describe(x));
        // parallel over column blocks; each column sums its rows in order (deterministic)
        parallelFor(c, 256, (a, b) -> {
            double[] ss = new double[b - a];
            for (int r = 0; r < rows; r++) {
                int xo = X.off + r * c;
                for (int j = a; j < b; j++) { double v = X.f[xo + j]; ss[j - a] += v * v; }
            }
            for (int j = a; j < b; j++) O.f[O.off + j] = (float) Math.sqrt(ss[j - a]);
            round(O, a, b);
        });
    }

    @Override
    public void sequenceMean(Tensor out, Tensor x, Tensor keyStart, int batch, int seqLen) {
        CpuTensor O = ft(out, "out"), X = ft(x, "x"), KS = it(keyStart, "keyStart");
        int c = X.cols();
        if (X.rows() != batch * seqLen || O.numel != batch * c || KS.numel != batch)
            throw new IllegalArgumentException("sequenceMean: x " + Tensor.describe(x) + " out " + Tensor.describe(out) + " for B=" + batch + " T=" + seqLen);
        parallelFor(batch, 1, (a, b) -> {
            for (int s = a; s < b; s++) {
                int ks = Math.max(0, KS.i[KS.off + s]);
                double[] acc = new double[c];
                for (int t = ks; t < seqLen; t++) {
                    int xo = X.off + (s * seqLen + t) * c;
                    for (int j = 0; j < c; j++) acc[j] += X.f[xo + j];
                }
                int cnt = seqLen - ks;
                for (int j = 0; j < c; j++) O.f[O.off + s * c + j] = cnt == 0 ? 0f : (float) (acc[j] / cnt);
            }
        });
        round(O);
    }

    @Override
    public void topK(Tensor idx, Tensor scores, int k) {
        CpuTensor I = it(idx, "idx"), S = ft(scores, "scores");
        int n = S.numel;
        if (k < 0 || k > n || I.numel != k) throw new IllegalArgumentException("topK: k=" + k + " of " + n + " scores into " + Tensor.describe(idx));
        Integer[] order = new Integer[n];
        for (int j = 0; j < n; j++) order[j] = j;
        float[] s = S.f;
        int so = S.off;
        // descending score, ties to the lower index; NaN ranks last
        Arrays.sort(order, (x, y) -> {
            float a = s[so + x], b = s[so + y];
            boolean na = Float.isNaN(a), nb = Float.isNaN(b);
            if (na != nb) return na ? 1 : -1;
            int c = Float.compare(b, a);
            return c != 0 ? c : Integer.compare(x, y);
        });
        int[] kept = new int[k];
        for (int j = 0; j < k; j++) kept[j] = order[j];
        Arrays.sort(kept);
        System.arraycopy(kept, 0, I.i, I.off, k);
    }
}
