package org.sparselora.engine.backend;

/** Element types a {@link Tensor} can hold. The CPU backend computes in F32; the GPU backend stores
 *  weights and activations in BF16 and accumulates in F32. */
public enum DType {
    F32(4), BF16(2), F16(2), I32(4);

    public final int bytes;

    DType(int bytes) { this.bytes = bytes; }

    public boolean isFloating() { return this != I32; }
}
