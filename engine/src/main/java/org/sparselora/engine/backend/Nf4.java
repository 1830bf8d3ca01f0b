package org.sparselora.engine.backend;

/**
 * NF4, QLoRA's 4-bit NormalFloat: the host reference of quantization and dequantization, which the
 * backends' dequantize ops must match. A weight is cut into blocks of {@link #BLOCK} consecutive
 * elements (row-major, so a block may cross a row boundary and the last may be partial); each block
 * keeps its absmax (F32) and each element the index of the {@link #CODE} value nearest to
 * element / absmax (the lower index on a tie); dequantization is CODE[index] · absmax. Indices are
 * packed eight to an int, element i in bits 4·(i mod 8) of int i / 8 (an I32 tensor on a backend).
 *
 * <p>Double quantization ({@link #doubleQuantize}) stores the absmax constants again in 8 bits:
 * their mean is subtracted, then blocks of {@link #BLOCK2} are scaled by their own absmax to
 * integers in [-127, 127] (round half to even); back as q · scale / 127 + mean. The paper stores
 * them as 8-bit floats; this linear 8-bit variant is what {@code scripts/nf4_reference.py} defines
 * and the fixture test checks.
 */
public final class Nf4 {
    private Nf4() {}

    public static final int BLOCK = 64, BLOCK2 = 256;

    /**
     * The 16 NF4 values: quantiles of N(0,1) (8 positive, 7 negative, and an exact 0) normalised to
     * [-1, 1], as {@code scripts/nf4_reference.py} computes them from the paper's definition.
     */
    public static final float[] CODE = {
        -1.0f, -0.6961929f, -0.52507305f, -0.3949175f, -0.28444135f, -0.18477343f, -0.09104999f, 0.0f,
        0.07958033f, 0.16093017f, 0.24611229f, 0.33791518f, 0.4407098f, 0.56261694f, 0.7229567f, 1.0f};

    /** A quantized tensor: packed 4-bit indices and one absmax per block. */
    public record Quantized(int[] packed, float[] absmax, int numel) {
        public int index(int i) { return (packed[i >>> 3] >>> ((i & 7) << 2)) & 0xF; }
    }

    /** The double-quantized absmax constants. */
    public record Absmax8(byte[] codes, float[] scales, float mean) {}

    public static int blocks(long numel) { return (int) ((numel + BLOCK - 1) / BLOCK); }

    /** The CODE index nearest to v (the lower one on a tie). */
    public static int nearest(float v) {
        int best = 0;
        float bd = Math.abs(v - CODE[0]);
        for (int j = 1; j < 16; j++) {
            float d = Math.abs(v - CODE[j]);
            if (d < bd) { bd = d; best = j; }
        }
        return best;
    }

    public static Quantized quantize(float[] x) {
        int n = x.length, nb = blocks(n);
        int[] packed = new int[(n + 7) / 8];
        float[] absmax = new float[nb];
        // blocks in parallel: a block of 64 fills whole packed ints of its own
        java.util.stream.IntStream.range(0, nb).parallel().forEach(b -> {
            int from = b * BLOCK, to = Math.min(n, from + BLOCK);
            float a = 0;
            for (int i = from; i < to; i++) a = Math.max(a, Math.abs(x[i]));
            absmax[b] = a;
            for (int i = from; i < to; i++) {
                int q = nearest(a > 0 ? x[i] / a : 0f);
                packed[i >>> 3] |= q << ((i & 7) << 2);
            }
        });
        return new Quantized(packed, absmax, n);
    }

    public static float[] dequantize(Quantized q) {
        float[] out = new float[q.numel()];
        for (int i = 0; i < out.length; i++) out[i] = CODE[q.index(i)] * q.absmax()[i / BLOCK];
        return out;
    }

    /** Rows {@code rows} of a quantized (R, cols) matrix, dequantized: (rows.length, cols). */
    public static float[] dequantizeRows(Quantized q, int cols, int[] rows) {
        float[] out = new float[rows.length * cols];
        for (int r = 0; r < rows.length; r++)
            for (int j = 0, i = rows[r] * cols; j < cols; j++, i++) out[r * cols + j] = CODE[q.index(i)] * q.absmax()[i / BLOCK];
        return out;
    }

    /** Columns {@code cols} of a quantized (R, C) matrix, dequantized: (R, cols.length). */
    public static float[] dequantizeCols(Quantized q, int C, int[] cols) {
        int R = q.numel() / C, k = cols.length;
        float[] out = new float[R * k];
        for (int r = 0; r < R; r++)
            for (int j = 0; j < k; j++) {
                int i = r * C + cols[j];
                out[r * k + j] = CODE[q.index(i)] * q.absmax()[i / BLOCK];
            }
        return out;
    }

    public static Absmax8 doubleQuantize(float[] absmax) {
        float mean = (float) (sumD(absmax) / absmax.length);
        int n = absmax.length, nb = (n + BLOCK2 - 1) / BLOCK2;
        byte[] codes = new byte[n];
        float[] scales = new float[nb];
        for (int b = 0; b < nb; b++) {
            int from = b * BLOCK2, to = Math.min(n, from + BLOCK2);
            float s = 0;
            for (int i = from; i < to; i++) s = Math.max(s, Math.abs(absmax[i] - mean));
            scales[b] = s;
            if (s > 0)
                for (int i = from; i < to; i++) codes[i] = (byte) Math.max(-127, Math.min(127, Math.rint((absmax[i] - mean) / s * 127f)));
        }
        return new Absmax8(codes, scales, mean);
    }

    private static double sumD(float[] v) {
        double s = 0;
        for (float x : v) s += x;
        return s;
    }

    public static float[] absmax(Absmax8 d) {
        float[] out = new float[d.codes().length];
        for (int i = 0; i < out.length; i++) out[i] = d.codes()[i] * d.scales()[i / BLOCK2] / 127f + d.mean();
        return out;
    }
}
