package org.sparselora.engine.backend;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.InputStream;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The NF4 host reference against {@code scripts/nf4_reference.py} (the paper's definition with
 * numpy): the code table, the indices and absmax of a (5, 100) weight whose blocks cross rows, hold
 * zeros and outliers, its dequantized values bit for bit, and double quantization of 300 absmax
 * constants; plus the row/column slices the sparse path dequantizes.
 */
class Nf4Test {

    static JsonNode fixture() throws Exception {
        try (InputStream in = Nf4Test.class.getResourceAsStream("/nf4/fixture.json")) {
            return new ObjectMapper().readTree(in);
        }
    }

    static float[] floats(JsonNode a) {
        float[] v = new float[a.size()];
        for (int i = 0; i < v.length; i++) v[i] = (float) a.get(i).asDouble();
        return v;
    }

    static int[] ints(JsonNode a) {
        int[] v = new int[a.size()];
        for (int i = 0; i < v.length; i++) v[i] = a.get(i).asInt();
        return v;
    }

    @Test
    void theCodeIsThePapersNormalFloat() throws Exception {
        JsonNode f = fixture();
        assertEquals(Nf4.BLOCK, f.get("block").asInt());
        assertArrayEquals(floats(f.get("code")), Nf4.CODE, 0f, "the 16 values from the N(0,1) quantiles");
        // the values bitsandbytes ships (computed in float64 there): the same up to float rounding
        float[] bnb = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
                -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
                0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
        assertArrayEquals(bnb, Nf4.CODE, 1e-6f);
        assertEquals(0f, Nf4.CODE[7], "zero is exact");
    }

    @Test
    void quantizeAndDequantizeMatchTheReference() throws Exception {
        JsonNode f = fixture();
        float[] w = floats(f.get("weight"));
        Nf4.Quantized q = Nf4.quantize(w);
        assertArrayEquals(floats(f.get("absmax")), q.absmax(), 0f, "absmax per block of 64");
        int[] want = ints(f.get("indices"));
        for (int i = 0; i < w.length; i++) assertEquals(want[i], q.index(i), "index of element " + i);
        assertArrayEquals(floats(f.get("dequantized")), Nf4.dequantize(q), 0f, "dequantized");
        // the error bound: half the widest gap between neighbouring code values, times the block's absmax
        float[] d = Nf4.dequantize(q);
        for (int i = 0; i < w.length; i++) assertTrue(Math.abs(d[i] - w[i]) <= 0.5f * 0.3039f * q.absmax()[i / 64] + 1e-9f, "error at " + i);
    }

    @Test
    void doubleQuantizationMatchesTheReference() throws Exception {
        JsonNode f = fixture();
        Nf4.Absmax8 d = Nf4.doubleQuantize(floats(f.get("dq_absmax")));
        assertEquals((float) f.get("dq_mean").asDouble(), d.mean(), 0f, "mean");
        assertArrayEquals(floats(f.get("dq_scales")), d.scales(), 0f, "scales per 256");
        int[] codes = ints(f.get("dq_codes"));
        for (int i = 0; i < codes.length; i++) assertEquals(codes[i], d.codes()[i], "code " + i);
        assertArrayEquals(floats(f.get("dq_absmax_dequantized")), Nf4.absmax(d), 0f, "absmax back");
    }

    @Test
    void rowAndColumnSlicesAreTheWholeDequantizationsSlices() {
        Random r = new Random(4);
        int R = 12, C = 40;   // blocks cross rows
        float[] w = new float[R * C];
        for (int i = 0; i < w.length; i++) w[i] = (float) r.nextGaussian();
        Nf4.Quantized q = Nf4.quantize(w);
        float[] all = Nf4.dequantize(q);
        int[] rows = {0, 3, 4, 11}, cols = {1, 2, 17, 39};
        float[] rs = Nf4.dequantizeRows(q, C, rows), cs = Nf4.dequantizeCols(q, C, cols);
        for (int i = 0; i < rows.length; i++)
            for (int j = 0; j < C; j++) assertEquals(all[rows[i] * C + j], rs[i * C + j], 0f);
        for (int i = 0; i < R; i++)
            for (int j = 0; j < cols.length; j++) assertEquals(all[i * C + cols[j]], cs[i * cols.length + j], 0f);
    }
}
