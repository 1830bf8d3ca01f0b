package org.sparselora.engine.backend.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.sparselora.engine.backend.cpu.CpuBackendTest.rand;

import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.ref.ReferenceAttention;

/**
 * CpuBackend's sliding-window attention (Mistral's {@code sliding_window}): query i sees key j iff
 * keyStart ≤ j ≤ i and i − j < window. Forward and backward against the reference backend's float64
 * attention ({@link ReferenceAttention}), the backward also against finite differences of it, the
 * KV-cache path against the full one, and windows that cover the sequence are bit-for-bit the
 * plain op.
 */
class SlidingWindowAttentionTest {
    static final CpuBackend be = new CpuBackend(3);

    @AfterAll
    static void close() { be.close(); }

    static Tensor f(float[] x, int... shape) { return be.fromFloats(x, DType.F32, shape); }

    /** The reference's float64 windowed causal GQA attention with left padding (window ≤ 0 = none). */
    static double[] reference(double[] q, double[] k, double[] v, int b, int t, int h, int hkv, int d, int[] ks, double scale, int window) {
        return ReferenceAttention.forward(new ReferenceAttention.Shape(b, t, h, hkv, d, ks, scale, window), q, k, v, null);
    }

    static double[] widen(float[] x) {
        double[] y = new double[x.length];
        for (int i = 0; i < x.length; i++) y[i] = x[i];
        return y;
    }

    record Shape(int b, int t, int h, int hkv, int d, int[] ks, float scale) {}

    static float[] run(Shape s, float[] q, float[] k, float[] v, Tensor lse, int window) {
        Tensor out = be.empty(DType.F32, s.b * s.t, s.h * s.d);
        be.attention(out, lse, f(q, s.b * s.t, s.h * s.d), f(k, s.b * s.t, s.hkv * s.d), f(v, s.b * s.t, s.hkv * s.d),
                be.fromInts(s.ks, s.b), s.b, s.t, s.h, s.hkv, s.d, s.scale, window);
        return be.toFloats(out);
    }

    @Test
    void forwardMatchesTheBruteForceReferenceForEveryWindow() {
        // T spans several 32-row blocks of the GEMM kernels; GQA (3 query heads per KV head); padding
        Shape s = new Shape(2, 75, 6, 2, 5, new int[] {0, 9}, 0.4f);
        Random r = new Random(31);
        float[] q = rand(r, s.b * s.t * s.h * s.d, 1), k = rand(r, s.b * s.t * s.hkv * s.d, 1), v = rand(r, s.b * s.t * s.hkv * s.d, 1);
        for (int w : new int[] {1, 2, 3, 17, 32, 33, 40, 65, 66, 74}) {
            float[] got = run(s, q, k, v, be.empty(DType.F32, s.b, s.h, s.t), w);
            double[] want = reference(widen(q), widen(k), widen(v), s.b, s.t, s.h, s.hkv, s.d, s.ks, s.scale, w);
            for (int i = 0; i < want.length; i++)
                assertEquals(want[i], got[i], 1e-5 * (1 + Math.abs(want[i])), "window " + w + " at " + i);
        }
        // window 1: every query sees only itself, so the output is its own v row
        float[] self = run(s, q, k, v, be.empty(DType.F32, s.b, s.h, s.t), 1);
        for (int e = 0; e < s.d; e++) assertEquals(v[(s.t + 20) * s.hkv * s.d + s.d + e], self[(s.t + 20) * s.h * s.d + 4 * s.d + e], 1e-6);
    }

    @Test
    void forwardAndBackwardMatchTheReferenceBackendForEveryWindow() {
        for (int w : new int[] {1, 3, 17, 33, 74})
            CpuBackendTest.attentionMatchesTheReference(be, 2, 75, 6, 2, 5, new int[] {0, 9}, 0.4f, w, 40 + w, "window " + w);
    }

    @Test
    void aWindowCoveringTheSequenceIsThePlainOpBitForBit() {
        Shape s = new Shape(2, 40, 4, 2, 3, new int[] {0, 5}, 0.5f);
        Random r = new Random(32);
        float[] q = rand(r, s.b * s.t * s.h * s.d, 1), k = rand(r, s.b * s.t * s.hkv * s.d, 1), v = rand(r, s.b * s.t * s.hkv * s.d, 1);
        Tensor plainLse = be.empty(DType.F32, s.b, s.h, s.t);
        Tensor out = be.empty(DType.F32, s.b * s.t, s.h * s.d);
        be.attention(out, plainLse, f(q, s.b * s.t, s.h * s.d), f(k, s.b * s.t, s.hkv * s.d), f(v, s.b * s.t, s.hkv * s.d),
                be.fromInts(s.ks, s.b), s.b, s.t, s.h, s.hkv, s.d, s.scale);
        float[] plain = be.toFloats(out);
        for (int w : new int[] {0, -3, 40, 41, 4096}) {
            Tensor lse = be.empty(DType.F32, s.b, s.h, s.t);
            assertArrayEquals(plain, run(s, q, k, v, lse, w), "window " + w);
            assertArrayEquals(be.toFloats(plainLse), be.toFloats(lse), "lse, window " + w);
        }
        // and a shorter window really changes the output
        float[] w8 = run(s, q, k, v, be.empty(DType.F32, s.b, s.h, s.t), 8);
        assertEquals(false, Arrays.equals(plain, w8));
    }

    @Test
    void backwardMatchesFiniteDifferencesOfTheFloat64Reference() {
        Shape s = new Shape(2, 11, 4, 2, 3, new int[] {0, 3}, 0.6f);
        int w = 3;
        Random r = new Random(33);
        float[] q = rand(r, s.b * s.t * s.h * s.d, 1), k = rand(r, s.b * s.t * s.hkv * s.d, 1), v = rand(r, s.b * s.t * s.hkv * s.d, 1);
        float[] probe = rand(r, s.b * s.t * s.h * s.d, 1);
        Tensor lse = be.empty(DType.F32, s.b, s.h, s.t);
        float[] out = run(s, q, k, v, lse, w);
        Tensor dq = be.empty(DType.F32, s.b * s.t, s.h * s.d), dk = be.empty(DType.F32, s.b * s.t, s.hkv * s.d), dv = be.empty(DType.F32, s.b * s.t, s.hkv * s.d);
        be.attentionBackward(dq, dk, dv, f(probe, s.b * s.t, s.h * s.d), f(out, s.b * s.t, s.h * s.d), lse,
                f(q, s.b * s.t, s.h * s.d), f(k, s.b * s.t, s.hkv * s.d), f(v, s.b * s.t, s.hkv * s.d),
                be.fromInts(s.ks, s.b), s.b, s.t, s.h, s.hkv, s.d, s.scale, w);
        double[][] in = {widen(q), widen(k), widen(v)};
        float[][] analytic = {be.toFloats(dq), be.toFloats(dk), be.toFloats(dv)};
        String[] names = {"dq", "dk", "dv"};
        double maxAbs = 0;
        for (int x = 0; x < 3; x++)
            for (int i = 0; i < in[x].length; i++) {
                double old = in[x][i], h = 1e-5;
                in[x][i] = old + h;
                double up = dot(reference(in[0], in[1], in[2], s.b, s.t, s.h, s.hkv, s.d, s.ks, s.scale, w), probe);
                in[x][i] = old - h;
                double dn = dot(reference(in[0], in[1], in[2], s.b, s.t, s.h, s.hkv, s.d, s.ks, s.scale, w), probe);
                in[x][i] = old;
                double fd = (up - dn) / (2 * h);
                assertEquals(fd, analytic[x][i], 2e-5 * (1 + Math.abs(fd)), names[x] + "[" + i + "]");
                maxAbs = Math.max(maxAbs, Math.abs(fd));
            }
        assertEquals(true, maxAbs > 0.1, "the check sees real gradients: " + maxAbs);
        // keys that no query sees get no gradient: with window 3 every key is seen (j ≤ i < j + 3), padding keys are not
        float[] gk = analytic[1];
        for (int i = 0; i < 3 * s.hkv * s.d; i++) assertEquals(0f, gk[s.t * s.hkv * s.d + i], "padding key " + i);
    }

    static double dot(double[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    @Test
    void cachedAttentionWithAWindowMatchesTheFullWindowedOp() {
        int t = 9, h = 4, hkv = 2, d = 3, w = 3;
        float scale = 0.5f;
        Random r = new Random(34);
        float[] q = rand(r, t * h * d, 1), k = rand(r, t * hkv * d, 1), v = rand(r, t * hkv * d, 1);
        double[] want = reference(widen(q), widen(k), widen(v), 1, t, h, hkv, d, new int[] {0}, scale, w);
        Tensor kc = be.zeros(DType.F32, 12, hkv * d), vc = be.zeros(DType.F32, 12, hkv * d);
        be.copy(kc.rows(0, t), f(k, t, hkv * d));
        be.copy(vc.rows(0, t), f(v, t, hkv * d));
        // prefill 5 (longer than the window), then one token at a time
        float[] got = new float[t * h * d];
        Tensor o = be.empty(DType.F32, 5, h * d);
        be.attentionCached(o, f(Arrays.copyOfRange(q, 0, 5 * h * d), 5, h * d), kc, vc, 0, h, hkv, d, scale, w);
        System.arraycopy(be.toFloats(o), 0, got, 0, 5 * h * d);
        for (int p = 5; p < t; p++) {
            Tensor o1 = be.empty(DType.F32, 1, h * d);
            be.attentionCached(o1, f(Arrays.copyOfRange(q, p * h * d, (p + 1) * h * d), 1, h * d), kc, vc, p, h, hkv, d, scale, w);
            System.arraycopy(be.toFloats(o1), 0, got, p * h * d, h * d);
        }
        for (int i = 0; i < want.length; i++) assertEquals(want[i], got[i], 1e-5 * (1 + Math.abs(want[i])), "cached at " + i);
        // a window covering every key is the plain cached op, bit for bit
        Tensor a = be.empty(DType.F32, t, h * d), b = be.empty(DType.F32, t, h * d);
        be.attentionCached(a, f(q, t, h * d), kc, vc, 0, h, hkv, d, scale);
        be.attentionCached(b, f(q, t, h * d), kc, vc, 0, h, hkv, d, scale, t);
        assertArrayEquals(be.toFloats(a), be.toFloats(b));
    }
}
