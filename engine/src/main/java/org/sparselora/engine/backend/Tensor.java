package org.sparselora.engine.backend;

import java.util.Arrays;

/**
 * A dense, row-major, contiguous buffer owned by a {@link Backend}. A tensor made by
 * {@link #view} shares storage with its parent and is valid as long as the parent is; closing a
 * view frees nothing. Shapes are written in comments the llm.c way: {@code // (B,T,C)}.
 */
public interface Tensor extends AutoCloseable {

    Backend backend();

    DType dtype();

    /** The shape; callers must not modify the returned array. */
    int[] shape();

    default int dim(int i) { return shape()[i < 0 ? shape().length + i : i]; }

    default int rank() { return shape().length; }

    default long numel() {
        long n = 1;
        for (int d : shape()) n *= d;
        return n;
    }

    /** A window of {@code numel(shape)} elements starting {@code offsetElems} into this tensor's
     *  storage, seen with a new shape. */
    Tensor view(long offsetElems, int... shape);

    /** The same storage seen with another shape of equal element count. */
    default Tensor reshape(int... shape) { return view(0, shape); }

    /** Rows {@code [from, from+count)} along dimension 0. */
    default Tensor rows(int from, int count) {
        int[] s = shape().clone();
        long rowSize = numel() / s[0];
        s[0] = count;
        return view(from * rowSize, s);
    }

    /** Frees the storage (no-op for views). */
    @Override
    void close();

    static String describe(Tensor t) { return t.dtype() + Arrays.toString(t.shape()); }
}
