package org.sparselora.engine.backend.ref;

import java.util.Arrays;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.TensorChecks;
import org.sparselora.engine.io.Dtypes;

/**
 * A {@link ReferenceBackend} tensor: the window {@code [off, off+numel)} of a heap array, floats for
 * the floating dtypes, ints for I32. Every write goes through {@link #set}, which rounds a BF16/F16
 * tensor's value to that precision — the one place the reference models a narrow storage type.
 */
public final class RefTensor implements Tensor {
    private final ReferenceBackend backend;
    private final DType dtype;
    private final int[] shape;
    private final float[] f;   // null for I32
    private final int[] i;     // null for floating dtypes
    private final int off;
    private final int numel;

    RefTensor(ReferenceBackend backend, DType dtype, int[] shape, float[] f, int[] i, int off) {
        long n = TensorChecks.numel(shape);
        TensorChecks.viewInside(off, n, f != null ? f.length : i.length);
        this.backend = backend;
        this.dtype = dtype;
        this.shape = shape;
        this.f = f;
        this.i = i;
        this.off = off;
        this.numel = (int) n;
    }

    /** A fresh zeroed tensor. */
    static RefTensor allocate(ReferenceBackend backend, DType dtype, int[] shape) {
        long n = 1;
        for (int d : shape) n *= Math.max(0, d);
        if (n > Integer.MAX_VALUE) throw new IllegalArgumentException("tensor too large: " + Arrays.toString(shape));
        return dtype == DType.I32
                ? new RefTensor(backend, dtype, shape.clone(), null, new int[(int) n], 0)
                : new RefTensor(backend, dtype, shape.clone(), new float[(int) n], null, 0);
    }

    @Override public Backend backend() { return backend; }
    @Override public DType dtype() { return dtype; }
    @Override public int[] shape() { return shape; }
    @Override public long numel() { return numel; }
    @Override public void close() {}

    @Override
    public Tensor view(long offsetElems, int... newShape) {
        return new RefTensor(backend, dtype, newShape.clone(), f, i, Math.toIntExact(off + offsetElems));
    }

    /** Length of the last dimension: the row length of the tensor seen as a matrix. */
    int cols() { return shape.length == 0 ? 1 : shape[shape.length - 1]; }

    /** Number of rows of the tensor seen as a matrix (leading dimensions flattened). */
    int rows() { int c = cols(); return c == 0 ? 0 : numel / c; }

    boolean isInt() { return i != null; }

    /** Element k as a float (an I32 element converted). */
    float get(int k) {
        check(k);
        return f != null ? f[off + k] : i[off + k];
    }

    /** Element k, stored at this tensor's dtype (rounded for BF16/F16, truncated for I32). */
    void set(int k, double v) {
        check(k);
        if (i != null) { i[off + k] = (int) v; return; }
        float x = (float) v;
        f[off + k] = switch (dtype) {
            case BF16 -> Dtypes.bf16ToFloat(Dtypes.floatToBf16(x));
            case F16 -> Float.float16ToFloat(Float.floatToFloat16(x));
            default -> x;
        };
    }

    /** Element k of an I32 tensor. */
    int geti(int k) {
        check(k);
        if (i == null) throw new IllegalArgumentException("not an I32 tensor: " + Tensor.describe(this));
        return i[off + k];
    }

    void seti(int k, int v) {
        check(k);
        if (i == null) throw new IllegalArgumentException("not an I32 tensor: " + Tensor.describe(this));
        i[off + k] = v;
    }

    private void check(int k) {
        if (k < 0 || k >= numel) throw new IndexOutOfBoundsException("element " + k + " of " + Tensor.describe(this));
    }

    @Override public String toString() { return "RefTensor" + Tensor.describe(this); }
}
