package org.sparselora.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;
import org.sparselora.engine.io.Dtypes;

class DtypesTest {
    @Test
    void bf16RoundTripAndRounding() {
        for (float f : new float[] {0f, 1f, -2.5f, 3.140625f, 65504f, 1e-20f}) {
            float r = Dtypes.bf16ToFloat(Dtypes.floatToBf16(f));
            assertEquals(f, r, Math.abs(f) / 128 + 1e-30f, "value " + f);
        }
        // 1 + 2^-8 lies exactly between two bf16 values: ties go to even (1.0)
        assertEquals(1f, Dtypes.bf16ToFloat(Dtypes.floatToBf16(1f + 0x1p-8f)));
        assertEquals(1f + 0x1p-6f, Dtypes.bf16ToFloat(Dtypes.floatToBf16(1f + 0x1p-7f + 0x1p-8f)), 0f);
    }
}
