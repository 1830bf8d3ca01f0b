package org.sparselora.engine.io;

import java.lang.foreign.MemorySegment;
import org.sparselora.engine.backend.DType;

/**
 * A tensor in host memory as a file stores it (usually a slice of a memory-mapped file: no copy),
 * little-endian, row-major. {@link #toFloats()} converts F32/BF16/F16 to a fresh float array.
 */
public record HostTensor(String name, DType dtype, int[] shape, MemorySegment data) {

    public long numel() {
        long n = 1;
        for (int d : shape) n *= d;
        return n;
    }

    public float[] toFloats() {
        return org.sparselora.engine.io.Dtypes.toFloats(dtype, data, numel());
    }
}
