package org.sparselora.engine.model;

/**
 * Rotary-embedding cos/sin tables, (maxPos, headDim/2), HF rotate-half convention: pair i of a head
 * rotates by pos·invFreq[i], invFreq[i] = θ^(−2i/D). Llama-3 {@code rope_scaling} (type
 * {@code llama3}) rescales the inverse frequencies the way HF's {@code _compute_llama3_parameters}
 * does: long wavelengths are divided by {@code factor}, short ones kept, the band between smoothly
 * interpolated. Angles are computed in double and rounded once.
 */
public final class RopeTables {
    public final int maxPos, half;
    public final float[] cos, sin;

    public RopeTables(LlamaConfig c, int maxPos) {
        this.maxPos = maxPos;
        this.half = c.headDim() / 2;
        double[] inv = inverseFrequencies(c);
        cos = new float[maxPos * half];
        sin = new float[maxPos * half];
        for (int p = 0; p < maxPos; p++)
            for (int i = 0; i < half; i++) {
                double a = p * inv[i];
                cos[p * half + i] = (float) Math.cos(a);
                sin[p * half + i] = (float) Math.sin(a);
            }
    }

    public static double[] inverseFrequencies(LlamaConfig c) {
        int d = c.headDim(), half = d / 2;
        double[] inv = new double[half];
        for (int i = 0; i < half; i++) inv[i] = 1.0 / Math.pow(c.ropeTheta(), 2.0 * i / d);
        LlamaConfig.RopeScaling s = c.ropeScaling();
        if (s == null) return inv;
        String type = s.type() == null ? "" : s.type();
        switch (type) {
            case "llama3" -> {
                double lowWavelen = s.originalMaxPositions() / s.lowFreqFactor();
                double highWavelen = s.originalMaxPositions() / s.highFreqFactor();
                for (int i = 0; i < half; i++) {
                    double wavelen = 2 * Math.PI / inv[i];
                    if (wavelen < highWavelen) continue;
                    if (wavelen > lowWavelen) { inv[i] = inv[i] / s.factor(); continue; }
                    double smooth = (s.originalMaxPositions() / wavelen - s.lowFreqFactor()) / (s.highFreqFactor() - s.lowFreqFactor());
                    inv[i] = (1 - smooth) * inv[i] / s.factor() + smooth * inv[i];
                }
            }
            case "linear" -> { for (int i = 0; i < half; i++) inv[i] /= s.factor(); }
            case "default", "" -> { }
            default -> throw new IllegalArgumentException("unsupported rope_scaling type '" + type + "' (supported: llama3, linear, default)");
        }
        return inv;
    }
}
