package org.sparselora.engine.backend;

/**
 * The bf16 number format: the upper 16 bits of an fp32. Backends round with it (the CPU's bf16
 * compute type) and files decode with it, so it sits with {@link DType}, below both.
 */
public final class Bf16 {
    private Bf16() {}

    public static float toFloat(short bits) { return Float.intBitsToFloat((bits & 0xffff) << 16); }

    /** Round-to-nearest-even float → bf16 (NaN stays NaN). */
    public static short fromFloat(float f) {
        int x = Float.floatToRawIntBits(f);
        if ((x & 0x7fffffff) > 0x7f800000) return (short) ((x >>> 16) | 0x40);
        int rounding = 0x7fff + ((x >>> 16) & 1);
        return (short) ((x + rounding) >>> 16);
    }
}
