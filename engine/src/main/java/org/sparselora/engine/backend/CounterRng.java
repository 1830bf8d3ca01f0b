package org.sparselora.engine.backend;

/**
 * Counter-based random numbers: the value of element {@code i} of a stream {@code seed} is a pure
 * function of (seed, i) — splitmix64's finaliser over {@code seed·γ + i·c1 + c2} — so a GPU kernel
 * and the host produce the same numbers in any order and from any number of threads. Used for
 * {@link Backend#randomNormal} (random-init weights made on the device, no host copy).
 */
public final class CounterRng {
    private CounterRng() {}

    /** 64 mixed bits of (seed, i). The GPU kernel {@code randn_*} computes the same. */
    public static long bits(long seed, long i) {
        long z = seed * 0x9E3779B97F4A7C15L + i * 0xBF58476D1CE4E5B9L + 0x94D049BB133111EBL;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /**
     * A standard normal sample for element i (Box–Muller on two 24-bit uniforms from one 64-bit
     * draw: u1 in (0,1] from the top 24 bits, u2 in [0,1) from the next 24), in float arithmetic
     * as the kernel does it (results agree with the GPU to float rounding of log/cos).
     */
    public static float normal(long seed, long i) {
        long z = bits(seed, i);
        float u1 = ((z >>> 40) + 1) * (1.0f / 16777216.0f);
        float u2 = ((z >>> 16) & 0xFFFFFF) * (1.0f / 16777216.0f);
        return (float) Math.sqrt(-2.0f * (float) Math.log(u1)) * (float) Math.cos(6.2831855f * u2);
    }
}
