package org.sparselora.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * A JCuda device pointer that exposes its raw 64-bit device address (JCuda keeps
 * {@code getNativePointer()} protected). The address is what kernel parameters and cuBLAS (bound
 * through FFM) take; the object itself is what JCuda's copy and free calls take.
 */
final class DevPtr extends CUdeviceptr {

    DevPtr() {}

    private DevPtr(DevPtr base, long byteOffset) { super(base, byteOffset); }

    /** The device address this pointer denotes (allocation base plus any byte offset). */
    long address() { return getNativePointer() + getByteOffset(); }

    /** A pointer {@code byteOffset} bytes past this one (no allocation). */
    DevPtr plus(long byteOffset) { return byteOffset == 0 ? this : new DevPtr(this, byteOffset); }
}
