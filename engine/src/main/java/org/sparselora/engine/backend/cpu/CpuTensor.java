package org.sparselora.engine.backend.cpu;

import java.util.Arrays;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.TensorChecks;

/**
 * A CPU tensor: a window {@code [off, off+numel)} of a heap array. Floating dtypes live in a
 * {@code float[]} (BF16/F16 values are kept as floats already rounded to that precision, so a CPU
 * run can emulate the GPU's storage); I32 lives in an {@code int[]}. Views share the array.
 */
public final class CpuTensor implements Tensor {
    final CpuBackend backend;
    final DType dtype;
    final int[] shape;
    final float[] f;   // null for I32
    final int[] i;     // null for floating dtypes
    final int off;
    final int numel;
    boolean owner;     // made by CpuBackend.empty (views are not owners)
    private boolean closed;

    CpuTensor(CpuBackend backend, DType dtype, int[] shape, float[] f, int[] i, int off) {
        this.backend = backend;
        this.dtype = dtype;
        this.shape = shape;
        this.f = f;
        this.i = i;
        this.off = off;
        long n = TensorChecks.numel(shape);
        if (n > Integer.MAX_VALUE) throw new IllegalArgumentException("tensor too large for the CPU backend: " + Arrays.toString(shape));
        this.numel = (int) n;
        TensorChecks.viewInside(off, numel, f != null ? f.length : i.length);
    }

    @Override public Backend backend() { return backend; }
    @Override public DType dtype() { return dtype; }
    @Override public int[] shape() { return shape; }
    @Override public long numel() { return numel; }

    /** Size of the last dimension (the row length of a row-major matrix view). */
    int cols() { return shape.length == 0 ? 1 : shape[shape.length - 1]; }

    /** Number of rows when seen as a matrix (all leading dims flattened). */
    int rows() { int c = cols(); return c == 0 ? 0 : numel / c; }

    @Override
    public Tensor view(long offsetElems, int... newShape) {
        return new CpuTensor(backend, dtype, newShape.clone(), f, i, Math.toIntExact(off + offsetElems));
    }

    /** Closing an owner (a tensor the backend made, not a view) ends its share of the backend's byte accounting. */
    @Override public void close() {
        if (owner && !closed) {
            closed = true;
            backend.released((long) numel * dtype.bytes);
        }
    }

    @Override public String toString() { return "CpuTensor" + Tensor.describe(this); }
}
