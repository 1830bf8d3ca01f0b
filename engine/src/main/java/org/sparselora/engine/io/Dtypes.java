package org.sparselora.engine.io;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import org.sparselora.engine.backend.Bf16;
import org.sparselora.engine.backend.DType;

/** Conversions between stored element types and float, shared by every reader and writer. */
public final class Dtypes {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private Dtypes() {}

    public static float bf16ToFloat(short bits) { return Bf16.toFloat(bits); }

    /** Round-to-nearest-even float → bf16 (NaN stays NaN): {@link Bf16#fromFloat}. */
    public static short floatToBf16(float f) { return Bf16.fromFloat(f); }

    public static float[] toFloats(DType dtype, MemorySegment data, long numel) {
        if (numel > Integer.MAX_VALUE) throw new IllegalArgumentException("tensor too large for a float[]: " + numel);
        float[] out = new float[(int) numel];
        switch (dtype) {
            case F32 -> { for (int i = 0; i < out.length; i++) out[i] = data.getAtIndex(F32, i); }
            case BF16 -> { for (int i = 0; i < out.length; i++) out[i] = bf16ToFloat(data.getAtIndex(I16, i)); }
            case F16 -> { for (int i = 0; i < out.length; i++) out[i] = Float.float16ToFloat(data.getAtIndex(I16, i)); }
            default -> throw new IllegalArgumentException("not a floating dtype: " + dtype);
        }
        return out;
    }

    /**
     * Encodes floats as a little-endian F32, BF16 (round-to-nearest-even) or F16 segment, the inverse
     * of {@link #toFloats}. The result is a heap segment owned by the caller.
     */
    public static MemorySegment fromFloats(DType dtype, float[] values) {
        switch (dtype) {
            case F32 -> {
                if (ByteOrder.nativeOrder() == ByteOrder.LITTLE_ENDIAN) return MemorySegment.ofArray(values.clone());
                MemorySegment out = MemorySegment.ofArray(new byte[values.length * 4]);
                for (int i = 0; i < values.length; i++) out.setAtIndex(F32, i, values[i]);
                return out;
            }
            case BF16 -> {
                MemorySegment out = MemorySegment.ofArray(new byte[values.length * 2]);
                for (int i = 0; i < values.length; i++) out.setAtIndex(I16, i, floatToBf16(values[i]));
                return out;
            }
            case F16 -> {
                MemorySegment out = MemorySegment.ofArray(new byte[values.length * 2]);
                for (int i = 0; i < values.length; i++) out.setAtIndex(I16, i, Float.floatToFloat16(values[i]));
                return out;
            }
            default -> throw new IllegalArgumentException("not a floating dtype: " + dtype);
        }
    }
}
