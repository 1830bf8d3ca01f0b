package org.sparselora.cuda;

import java.util.Arrays;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * A tensor in device memory: one block of the backend's {@link DevicePool} (owner) or a window into
 * one (view). Closing the owner returns the block to the pool (views must not outlive it); closing a
 * view does nothing.
 */
final class GpuTensor implements Tensor {
    private final GpuBackend backend;
    private final DType dtype;
    private final int[] shape;
    private final long numel;
    final DevPtr ptr;                              // this tensor's first element
    private final DevicePool.Block<DevPtr> block;  // the allocation (null for a view)
    private boolean closed;

    GpuTensor(GpuBackend backend, DType dtype, int[] shape, DevPtr ptr, DevicePool.Block<DevPtr> block) {
        this.backend = backend;
        this.dtype = dtype;
        this.shape = shape.clone();
        long n = 1;
        for (int d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            n *= d;
        }
        this.numel = n;
        this.ptr = ptr;
        this.block = block;
    }

    @Override public Backend backend() { return backend; }
    @Override public DType dtype() { return dtype; }
    @Override public int[] shape() { return shape; }
    @Override public long numel() { return numel; }

    long bytes() { return numel * dtype.bytes; }

    long address() { return ptr.address(); }

    @Override
    public Tensor view(long offsetElems, int... newShape) {
        long n = 1;
        for (int d : newShape) n *= d;
        if (offsetElems < 0 || offsetElems + n > numel)
            throw new IllegalArgumentException("view [" + offsetElems + ", " + (offsetElems + n) + ") of " + Tensor.describe(this) + " is out of bounds");
        return new GpuTensor(backend, dtype, newShape, ptr.plus(offsetElems * dtype.bytes), null);
    }

    @Override
    public void close() {
        if (block != null && !closed) {
            closed = true;
            backend.release(block);
        }
    }

    @Override
    public String toString() { return "GpuTensor" + Tensor.describe(this); }
}
