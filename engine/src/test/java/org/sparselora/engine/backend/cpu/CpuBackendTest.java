package org.sparselora.engine.backend.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.function.ToDoubleFunction;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.ref.ReferenceBackend;
import org.sparselora.engine.io.Dtypes;

/**
 * Every CPU backend op against {@link ReferenceBackend} (the plain float64 loops that specify it)
 * on fresh random inputs, every backward also against central finite differences of a scalar probe
 * loss L = Σ out ⊙ R, plus the determinism contract (thread count and row subsets do not change a
 * single bit) and the errors bad arguments give.
 */
class CpuBackendTest {
    static final CpuBackend be = new CpuBackend(3);
    static final CpuBackend one = new CpuBackend(1);
    static final ReferenceBackend ref = new ReferenceBackend();

    @AfterAll
    static void close() { be.close(); one.close(); }

    static float[] rand(Random r, int n, float scale) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) (r.nextGaussian() * scale);
        return x;
    }

    static Tensor f(float[] x, int... shape) { return be.fromFloats(x, DType.F32, shape); }

    static Tensor rf(float[] x, int... shape) { return ref.fromFloats(x, DType.F32, shape); }

    /** got (the CPU) against want (the reference), elementwise within tol·(1 + |want|). */
    static void close(float[] want, float[] got, double tol, String what) {
        assertEquals(want.length, got.length, what + " length");
        for (int i = 0; i < want.length; i++)
            assertEquals(want[i], got[i], tol * (1 + Math.abs(want[i])), what + " at " + i);
    }

    static void close(Tensor want, Tensor got, double tol, String what) { close(ref.toFloats(want), be.toFloats(got), tol, what); }

    static double dot(float[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += (double) a[i] * b[i];
        return s;
    }

    /** Central difference of f at x[i]; restores x. */
    static double fd(float[] x, int i, double h, ToDoubleFunction<float[]> f) {
        float old = x[i];
        x[i] = (float) (old + h);
        double up = f.applyAsDouble(x);
        x[i] = (float) (old - h);
        double dn = f.applyAsDouble(x);
        x[i] = old;
        return (up - dn) / (2 * h);
    }

    static void checkFd(float[] x, float[] analytic, ToDoubleFunction<float[]> loss, String what) {
        for (int i = 0; i < x.length; i += Math.max(1, x.length / 23)) {
            double num = fd(x, i, 1e-2, loss);
            assertEquals(num, analytic[i], 2e-2 * (1 + Math.abs(num)), what + " d/dx[" + i + "]");
        }
    }

    // ------------------------------------------------------------------ matmul

    @Test
    void matmulAllTransposesMatchTheReference() {
        Random r = new Random(1);
        int[][] shapes = {{1, 1, 1}, {5, 7, 3}, {33, 70, 45}, {64, 128, 96}, {3, 8, 200}, {40, 5, 37}, {17, 300, 8}};
        for (int[] s : shapes) {
            int m = s[0], k = s[1], n = s[2];
            float[] a = rand(r, m * k, 1), b = rand(r, k * n, 1), c0 = rand(r, m * n, 1);
            for (boolean ta : new boolean[] {false, true})
                for (boolean tb : new boolean[] {false, true}) {
                    float alpha = 0.7f, beta = ta ? 0.5f : 0f;
                    int[] as = ta ? new int[] {k, m} : new int[] {m, k}, bs = tb ? new int[] {n, k} : new int[] {k, n};
                    Tensor C = f(c0.clone(), m, n), RC = rf(c0.clone(), m, n);
                    be.matmul(C, f(a, as), ta, f(b, bs), tb, alpha, beta);
                    ref.matmul(RC, rf(a, as), ta, rf(b, bs), tb, alpha, beta);
                    close(RC, C, 1e-5 * Math.sqrt(k), "matmul " + m + "x" + k + "x" + n + " tA=" + ta + " tB=" + tb);
                }
        }
    }

    static float[] transpose(float[] x, int rows, int cols) {
        float[] t = new float[x.length];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) t[j * rows + i] = x[i * cols + j];
        return t;
    }

    @Test
    void matmulIsBitIdenticalAcrossThreadCountsAndRowSubsets() {
        Random r = new Random(2);
        int m = 70, k = 131, n = 150;
        float[] a = rand(r, m * k, 1), w = rand(r, n * k, 1);
        for (boolean tb : new boolean[] {true, false}) {
            float[] wl = tb ? w : transpose(w, n, k);
            Tensor C3 = be.zeros(DType.F32, m, n), C1 = one.zeros(DType.F32, m, n);
            be.matmul(C3, f(a, m, k), false, tb ? f(wl, n, k) : f(wl, k, n), tb, 1, 0);
            one.matmul(C1, one.fromFloats(a, DType.F32, m, k), false, tb ? one.fromFloats(wl, DType.F32, n, k) : one.fromFloats(wl, DType.F32, k, n), tb, 1, 0);
            float[] full = be.toFloats(C3);
            assertArrayEquals(full, one.toFloats(C1), "threads must not change bits");
            // rows 3..9 on their own: same bits as inside the full product
            float[] sub = Arrays.copyOfRange(a, 3 * k, 10 * k);
            Tensor Cs = be.zeros(DType.F32, 7, n);
            be.matmul(Cs, f(sub, 7, k), false, tb ? f(wl, n, k) : f(wl, k, n), tb, 1, 0);
            assertArrayEquals(Arrays.copyOfRange(full, 3 * n, 10 * n), be.toFloats(Cs), "row subsets must not change bits");
        }
    }

    @Test
    void matmulRejectsBadShapes() {
        var e = assertThrows(IllegalArgumentException.class,
                () -> be.matmul(be.zeros(DType.F32, 2, 3), be.zeros(DType.F32, 2, 4), false, be.zeros(DType.F32, 5, 3), false, 1, 0));
        assertTrue(e.getMessage().contains("matmul shapes"));
    }

    // ------------------------------------------------------------------ elementwise and norms

    @Test
    void axpyScaleMulSumOfSquares() {
        Random r = new Random(3);
        float[] x = rand(r, 1000, 1), y = rand(r, 1000, 1);
        Tensor X = f(x, 1000), Y = f(y.clone(), 1000), RX = rf(x, 1000), RY = rf(y.clone(), 1000);
        be.axpy(Y, 0.5f, X);
        ref.axpy(RY, 0.5f, RX);
        close(RY, Y, 1e-6, "axpy");
        be.scale(Y, 2f);
        ref.scale(RY, 2f);
        close(RY, Y, 1e-6, "scale");
        Tensor P = be.empty(DType.F32, 1000), RP = ref.empty(DType.F32, 1000);
        be.mul(P, X, Y);
        ref.mul(RP, RX, RY);
        close(RP, P, 1e-6, "mul");
        double want = ref.sumOfSquares(List.of(RX, rf(y, 10, 100)));
        assertEquals(want, be.sumOfSquares(List.of(X, f(y, 10, 100))), 1e-9 * want);
    }

    @Test
    void rmsNormForwardAndBackward() {
        Random r = new Random(4);
        int n = 5, c = 24;
        float[] x = rand(r, n * c, 1), w = rand(r, c, 1), probe = rand(r, n * c, 1), d0 = rand(r, n * c, 1);
        Tensor out = be.empty(DType.F32, n, c), rstd = be.empty(DType.F32, n);
        Tensor rout = ref.empty(DType.F32, n, c), rrstd = ref.empty(DType.F32, n);
        be.rmsNorm(out, rstd, f(x, n, c), f(w, c), 1e-5f);
        ref.rmsNorm(rout, rrstd, rf(x, n, c), rf(w, c), 1e-5f);
        close(rout, out, 1e-5, "rmsNorm");
        close(rrstd, rstd, 1e-6, "rmsNorm rstd");
        for (boolean acc : new boolean[] {false, true}) {
            Tensor dx = f(d0.clone(), n, c), rdx = rf(d0.clone(), n, c);
            be.rmsNormBackward(dx, f(probe, n, c), f(x, n, c), f(w, c), rstd, acc);
            ref.rmsNormBackward(rdx, rf(probe, n, c), rf(x, n, c), rf(w, c), rrstd, acc);
            close(rdx, dx, 1e-5, "rmsNormBackward accumulate=" + acc);
        }
        Tensor dx = be.zeros(DType.F32, n, c);
        be.rmsNormBackward(dx, f(probe, n, c), f(x, n, c), f(w, c), rstd, false);
        checkFd(x, be.toFloats(dx), xs -> {
            Tensor o = be.empty(DType.F32, n, c);
            be.rmsNorm(o, be.empty(DType.F32, n), f(xs, n, c), f(w, c), 1e-5f);
            return dot(be.toFloats(o), probe);
        }, "rmsNorm");
    }

    @Test
    void embeddingGathersRowsAndRejectsBadIds() {
        Random r = new Random(5);
        float[] table = rand(r, 10 * 4, 1);
        int[] ids = {7, 0, 7};
        Tensor out = be.empty(DType.F32, 3, 4), rout = ref.empty(DType.F32, 3, 4);
        be.embedding(out, be.fromInts(ids, 3), f(table, 10, 4));
        ref.embedding(rout, ref.fromInts(ids, 3), rf(table, 10, 4));
        assertArrayEquals(ref.toFloats(rout), be.toFloats(out));
        var e = assertThrows(IllegalArgumentException.class, () -> be.embedding(out, be.fromInts(new int[] {1, 10, 2}, 3), f(table, 10, 4)));
        assertTrue(e.getMessage().contains("token id 10"));
    }

    @Test
    void ropeMatchesTheReferenceAndInverseUndoes() {
        Random r = new Random(6);
        int n = 4, h = 2, d = 8, half = 4, maxPos = 16;
        float[] x = rand(r, n * h * d, 1), cos = new float[maxPos * half], sin = new float[maxPos * half];
        for (int p = 0; p < maxPos; p++)
            for (int i = 0; i < half; i++) {
                double ang = p * Math.pow(10000, -2.0 * i / d);
                cos[p * half + i] = (float) Math.cos(ang);
                sin[p * half + i] = (float) Math.sin(ang);
            }
        int[] pos = {0, 3, 9, 15};
        Tensor X = f(x.clone(), n, h * d), P = be.fromInts(pos, n), C = f(cos, maxPos, half), S = f(sin, maxPos, half);
        Tensor RX = rf(x.clone(), n, h * d), RP = ref.fromInts(pos, n), RC = rf(cos, maxPos, half), RS = rf(sin, maxPos, half);
        be.rope(X, P, C, S, h, d, false);
        ref.rope(RX, RP, RC, RS, h, d, false);
        close(RX, X, 1e-5, "rope");
        // backward: the gradient of Σ rope(x)⊙R is rope⁻¹(R) (rotation is orthogonal)
        float[] probe = rand(r, n * h * d, 1);
        Tensor G = f(probe.clone(), n, h * d), RG = rf(probe.clone(), n, h * d);
        be.rope(G, P, C, S, h, d, true);
        ref.rope(RG, RP, RC, RS, h, d, true);
        close(RG, G, 1e-5, "rope inverse");
        checkFd(x, be.toFloats(G), xs -> {
            Tensor y = f(xs.clone(), n, h * d);
            be.rope(y, P, C, S, h, d, false);
            return dot(be.toFloats(y), probe);
        }, "rope backward");
        be.rope(X, P, C, S, h, d, true);
        float[] back = be.toFloats(X);
        for (int i = 0; i < x.length; i++) assertEquals(x[i], back[i], 1e-5 * (1 + Math.abs(x[i])), "rope⁻¹(rope(x)) at " + i);
    }

    // ------------------------------------------------------------------ attention

    static final int B = 2, T = 5, H = 4, HKV = 2, D = 4;
    static final int[] KEYSTART = {0, 2};
    static final float SCALE = 0.5f;

    float[] attn(float[] q, float[] k, float[] v, Tensor lse) {
        Tensor out = be.empty(DType.F32, B * T, H * D);
        be.attention(out, lse, f(q, B * T, H * D), f(k, B * T, HKV * D), f(v, B * T, HKV * D), be.fromInts(KEYSTART, B), B, T, H, HKV, D, SCALE);
        return be.toFloats(out);
    }

    /** Forward (out, lse) and backward (dq, dk, dv) of one attention shape on be against the reference. */
    static void attentionMatchesTheReference(CpuBackend be, int b, int t, int h, int hkv, int d, int[] ks, float scale, int window, long seed, String what) {
        Random r = new Random(seed);
        float[] q = rand(r, b * t * h * d, 1), k = rand(r, b * t * hkv * d, 1), v = rand(r, b * t * hkv * d, 1), probe = rand(r, b * t * h * d, 1);
        Backend[] backends = {be, ref};
        Tensor[][] res = new Tensor[2][];
        for (int x = 0; x < 2; x++) {
            Backend bk = backends[x];
            Tensor Q = bk.fromFloats(q, DType.F32, b * t, h * d), K = bk.fromFloats(k, DType.F32, b * t, hkv * d), V = bk.fromFloats(v, DType.F32, b * t, hkv * d);
            Tensor KS = bk.fromInts(ks, b), out = bk.empty(DType.F32, b * t, h * d), lse = bk.empty(DType.F32, b, h, t);
            bk.attention(out, lse, Q, K, V, KS, b, t, h, hkv, d, scale, window);
            Tensor dq = bk.empty(DType.F32, b * t, h * d), dk = bk.empty(DType.F32, b * t, hkv * d), dv = bk.empty(DType.F32, b * t, hkv * d);
            bk.attentionBackward(dq, dk, dv, bk.fromFloats(probe, DType.F32, b * t, h * d), out, lse, Q, K, V, KS, b, t, h, hkv, d, scale, window);
            res[x] = new Tensor[] {out, lse, dq, dk, dv};
        }
        String[] names = {"out", "lse", "dq", "dk", "dv"};
        for (int i = 0; i < names.length; i++) {
            float[] want = ref.toFloats(res[1][i]), got = be.toFloats(res[0][i]);
            for (int j = 0; j < want.length; j++) {
                if (Float.isInfinite(want[j])) assertEquals(want[j], got[j], what + " " + names[i] + " at " + j); // padding rows' lse is −∞
                else assertEquals(want[j], got[j], 1e-5 * (1 + Math.abs(want[j])), what + " " + names[i] + " at " + j);
            }
        }
    }

    @Test
    void attentionCausalGqaPaddingForwardAndBackward() {
        attentionMatchesTheReference(be, B, T, H, HKV, D, KEYSTART, SCALE, 0, 7, "attention");
        Random r = new Random(7);
        float[] q = rand(r, B * T * H * D, 1), k = rand(r, B * T * HKV * D, 1), v = rand(r, B * T * HKV * D, 1), probe = rand(r, B * T * H * D, 1);
        Tensor lse = be.empty(DType.F32, B, H, T);
        float[] out = attn(q, k, v, lse);
        // padded query rows (sequence 1, t < 2) are exactly zero
        for (int t = 0; t < 2; t++) for (int i = 0; i < H * D; i++) assertEquals(0f, out[(T + t) * H * D + i]);

        Tensor dq = be.empty(DType.F32, B * T, H * D), dk = be.empty(DType.F32, B * T, HKV * D), dv = be.empty(DType.F32, B * T, HKV * D);
        be.attentionBackward(dq, dk, dv, f(probe, B * T, H * D), f(out, B * T, H * D), lse, f(q, B * T, H * D), f(k, B * T, HKV * D),
                f(v, B * T, HKV * D), be.fromInts(KEYSTART, B), B, T, H, HKV, D, SCALE);
        checkFd(q, be.toFloats(dq), qs -> dot(attn(qs, k, v, be.empty(DType.F32, B, H, T)), probe), "attention dq");
        checkFd(k, be.toFloats(dk), ks -> dot(attn(q, ks, v, be.empty(DType.F32, B, H, T)), probe), "attention dk");
        checkFd(v, be.toFloats(dv), vs -> dot(attn(q, k, vs, be.empty(DType.F32, B, H, T)), probe), "attention dv");
    }

    @Test
    void attentionLongerThanOneBlockForwardAndBackward() {
        // T spans several 32-row blocks (the causal block ranges of the GEMM-based kernels), odd D
        int b = 2, t = 75, h = 6, hkv = 2, d = 5;
        int[] ks = {0, 9};
        float scale = 0.4f;
        attentionMatchesTheReference(be, b, t, h, hkv, d, ks, scale, 0, 21, "long attention");
        Random r = new Random(21);
        float[] q = rand(r, b * t * h * d, 1), k = rand(r, b * t * hkv * d, 1), v = rand(r, b * t * hkv * d, 1), probe = rand(r, b * t * h * d, 1);
        java.util.function.Function<float[][], float[]> run = in -> {
            Tensor out = be.empty(DType.F32, b * t, h * d);
            be.attention(out, be.empty(DType.F32, b, h, t), f(in[0], b * t, h * d), f(in[1], b * t, hkv * d), f(in[2], b * t, hkv * d), be.fromInts(ks, b), b, t, h, hkv, d, scale);
            return be.toFloats(out);
        };
        float[] out = run.apply(new float[][] {q, k, v});
        Tensor lse = be.empty(DType.F32, b, h, t);
        be.attention(be.empty(DType.F32, b * t, h * d), lse, f(q, b * t, h * d), f(k, b * t, hkv * d), f(v, b * t, hkv * d), be.fromInts(ks, b), b, t, h, hkv, d, scale);
        Tensor dq = be.empty(DType.F32, b * t, h * d), dk = be.empty(DType.F32, b * t, hkv * d), dv = be.empty(DType.F32, b * t, hkv * d);
        be.attentionBackward(dq, dk, dv, f(probe, b * t, h * d), f(out, b * t, h * d), lse, f(q, b * t, h * d), f(k, b * t, hkv * d),
                f(v, b * t, hkv * d), be.fromInts(ks, b), b, t, h, hkv, d, scale);
        checkFd(q, be.toFloats(dq), xs -> dot(run.apply(new float[][] {xs, k, v}), probe), "long attention dq");
        checkFd(k, be.toFloats(dk), xs -> dot(run.apply(new float[][] {q, xs, v}), probe), "long attention dk");
        checkFd(v, be.toFloats(dv), xs -> dot(run.apply(new float[][] {q, k, xs}), probe), "long attention dv");
        float[] g = be.toFloats(dk);
        for (int i = 0; i < 9 * hkv * d; i++) assertEquals(0f, g[(t) * hkv * d + i], "padding keys get no gradient");
    }

    @Test
    void attentionCachedMatchesFullAttentionAndTheReference() {
        Random r = new Random(8);
        int t = 6;
        float[] q = rand(r, t * H * D, 1), k = rand(r, t * HKV * D, 1), v = rand(r, t * HKV * D, 1);
        Tensor full = be.empty(DType.F32, t, H * D);
        be.attention(full, be.empty(DType.F32, 1, H, t), f(q, t, H * D), f(k, t, HKV * D), f(v, t, HKV * D), be.fromInts(new int[] {0}, 1), 1, t, H, HKV, D, SCALE);
        float[] want = be.toFloats(full);
        Tensor kc = be.zeros(DType.F32, 10, HKV * D), vc = be.zeros(DType.F32, 10, HKV * D);
        be.copy(kc.rows(0, t), f(k, t, HKV * D));
        be.copy(vc.rows(0, t), f(v, t, HKV * D));
        Tensor rkc = rf(be.toFloats(kc), 10, HKV * D), rvc = rf(be.toFloats(vc), 10, HKV * D);
        // prefill 4, then 2 one at a time
        Tensor o = be.empty(DType.F32, 4, H * D), ro = ref.empty(DType.F32, 4, H * D);
        be.attentionCached(o, f(Arrays.copyOfRange(q, 0, 4 * H * D), 4, H * D), kc, vc, 0, H, HKV, D, SCALE);
        ref.attentionCached(ro, rf(Arrays.copyOfRange(q, 0, 4 * H * D), 4, H * D), rkc, rvc, 0, H, HKV, D, SCALE);
        close(ro, o, 1e-5, "cached prefill vs reference");
        float[] got = new float[t * H * D];
        System.arraycopy(be.toFloats(o), 0, got, 0, 4 * H * D);
        for (int p = 4; p < t; p++) {
            Tensor o1 = be.empty(DType.F32, 1, H * D), ro1 = ref.empty(DType.F32, 1, H * D);
            float[] qp = Arrays.copyOfRange(q, p * H * D, (p + 1) * H * D);
            be.attentionCached(o1, f(qp, 1, H * D), kc, vc, p, H, HKV, D, SCALE);
            ref.attentionCached(ro1, rf(qp, 1, H * D), rkc, rvc, p, H, HKV, D, SCALE);
            close(ro1, o1, 1e-5, "cached token " + p + " vs reference");
            System.arraycopy(be.toFloats(o1), 0, got, p * H * D, H * D);
        }
        for (int i = 0; i < want.length; i++) assertEquals(want[i], got[i], 1e-5, "cached at " + i);
    }

    // ------------------------------------------------------------------ MLP, loss, dropout, optimizer

    @Test
    void swigluForwardAndBackward() {
        Random r = new Random(9);
        int n = 40;
        float[] g = rand(r, n, 2), u = rand(r, n, 1), probe = rand(r, n, 1);
        Tensor out = be.empty(DType.F32, n), rout = ref.empty(DType.F32, n);
        be.swiglu(out, f(g, n), f(u, n));
        ref.swiglu(rout, rf(g, n), rf(u, n));
        close(rout, out, 1e-6, "swiglu");
        Tensor dg = be.empty(DType.F32, n), du = be.empty(DType.F32, n), rdg = ref.empty(DType.F32, n), rdu = ref.empty(DType.F32, n);
        be.swigluBackward(dg, du, f(probe, n), f(g, n), f(u, n));
        ref.swigluBackward(rdg, rdu, rf(probe, n), rf(g, n), rf(u, n));
        close(rdg, dg, 1e-6, "swiglu dgate");
        close(rdu, du, 1e-6, "swiglu dup");
        ToDoubleFunction<float[]> lg = gs -> { Tensor o = be.empty(DType.F32, n); be.swiglu(o, f(gs, n), f(u, n)); return dot(be.toFloats(o), probe); };
        ToDoubleFunction<float[]> lu = us -> { Tensor o = be.empty(DType.F32, n); be.swiglu(o, f(g, n), f(us, n)); return dot(be.toFloats(o), probe); };
        checkFd(g, be.toFloats(dg), lg, "swiglu dgate");
        checkFd(u, be.toFloats(du), lu, "swiglu dup");
    }

    @Test
    void crossEntropyLossGradientAndIgnoreIndex() {
        Random r = new Random(10);
        int n = 4, v = 11;
        float[] logits = rand(r, n * v, 2);
        int[] tg = {3, -100, 0, 10};
        Tensor losses = be.empty(DType.F32, n), dl = be.empty(DType.F32, n, v), rlosses = ref.empty(DType.F32, n), rdl = ref.empty(DType.F32, n, v);
        be.crossEntropy(losses, dl, f(logits, n, v), be.fromInts(tg, n), 0.5f);
        ref.crossEntropy(rlosses, rdl, rf(logits, n, v), ref.fromInts(tg, n), 0.5f);
        close(rlosses, losses, 1e-5, "crossEntropy losses");
        close(rdl, dl, 1e-6, "crossEntropy dlogits");
        assertEquals(0f, be.toFloats(losses)[1], "ignored row has no loss");
        float[] g = be.toFloats(dl);
        for (int j = 0; j < v; j++) assertEquals(0f, g[v + j], "ignored row has zero gradient");
        checkFd(logits, g, xs -> {
            Tensor l2 = be.empty(DType.F32, n);
            be.crossEntropy(l2, be.empty(DType.F32, n, v), f(xs, n, v), be.fromInts(tg, n), 1f);
            double s = 0;
            for (float x : be.toFloats(l2)) s += x;
            return 0.5 * s;
        }, "crossEntropy");
        // in place
        Tensor lg = f(logits.clone(), n, v);
        be.crossEntropy(be.empty(DType.F32, n), lg, lg, be.fromInts(tg, n), 0.5f);
        assertArrayEquals(g, be.toFloats(lg));
        assertThrows(IllegalArgumentException.class, () -> be.crossEntropy(losses, dl, f(logits, n, v), be.fromInts(new int[] {0, 1, 2, 11}, n), 1f));
    }

    @Test
    void dropoutIsInvertedAndReproducible() {
        int n = 20000;
        float[] x = new float[n];
        Arrays.fill(x, 1f);
        Tensor o1 = be.empty(DType.F32, n), o2 = be.empty(DType.F32, n), ro = ref.empty(DType.F32, n);
        be.dropout(o1, f(x, n), 0.25f, 42);
        be.dropout(o2, f(x, n), 0.25f, 42);
        ref.dropout(ro, rf(x, n), 0.25f, 42);
        float[] a = be.toFloats(o1);
        assertArrayEquals(a, be.toFloats(o2));
        assertArrayEquals(ref.toFloats(ro), a, "the reference's mask");
        int kept = 0;
        for (float v : a) { if (v != 0f) { kept++; assertEquals(1f / 0.75f, v, 1e-6); } }
        assertEquals(0.75, kept / (double) n, 0.02);
        be.dropout(o2, f(x, n), 0.25f, 43);
        assertTrue(!Arrays.equals(a, be.toFloats(o2)), "another seed, another mask");
        be.dropout(o2, f(x, n), 0f, 1);
        assertArrayEquals(x, be.toFloats(o2));
    }

    @Test
    void adamwMatchesTheReference() {
        Random r = new Random(11);
        int n = 50;
        float[] p = rand(r, n, 1), g = rand(r, n, 1);
        Tensor P = f(p.clone(), n), G = f(g, n), M = be.zeros(DType.F32, n), V = be.zeros(DType.F32, n);
        Tensor RP = rf(p.clone(), n), RG = rf(g, n), RM = ref.zeros(DType.F32, n), RV = ref.zeros(DType.F32, n);
        for (int step = 1; step <= 3; step++) {
            be.adamw(P, G, M, V, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, step, 0.5f);
            ref.adamw(RP, RG, RM, RV, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, step, 0.5f);
        }
        close(RP, P, 1e-5, "adamw param");
        close(RM, M, 1e-5, "adamw m");
        close(RV, V, 1e-5, "adamw v");
    }

    // ------------------------------------------------------------------ slicing and selection

    @Test
    void gatherScatterRowsAndCols() {
        Random r = new Random(12);
        int rows = 6, cols = 5;
        float[] x = rand(r, rows * cols, 1), y = rand(r, rows * cols, 1);
        int[] idx = {1, 4, 5}, cidx = {0, 2, 4};
        Tensor X = f(x, rows, cols), I = be.fromInts(idx, 3), CI = be.fromInts(cidx, 3);
        Tensor RX = rf(x, rows, cols), RI = ref.fromInts(idx, 3), RCI = ref.fromInts(cidx, 3);
        Tensor gr = be.empty(DType.F32, 3, cols), rgr = ref.empty(DType.F32, 3, cols);
        be.gatherRows(gr, X, I);
        ref.gatherRows(rgr, RX, RI);
        assertArrayEquals(ref.toFloats(rgr), be.toFloats(gr), "gatherRows");
        Tensor gc = be.empty(DType.F32, rows, 3), rgc = ref.empty(DType.F32, rows, 3);
        be.gatherCols(gc, X, CI);
        ref.gatherCols(rgc, RX, RCI);
        assertArrayEquals(ref.toFloats(rgc), be.toFloats(gc), "gatherCols");
        for (boolean acc : new boolean[] {false, true}) {
            Tensor sr = f(y.clone(), rows, cols), rsr = rf(y.clone(), rows, cols);
            be.scatterRows(sr, gr, I, acc);
            ref.scatterRows(rsr, rgr, RI, acc);
            close(rsr, sr, 1e-7, "scatterRows accumulate=" + acc);
            Tensor sc = f(y.clone(), rows, cols), rsc = rf(y.clone(), rows, cols);
            be.scatterCols(sc, gc, CI, acc);
            ref.scatterCols(rsc, rgc, RCI, acc);
            close(rsc, sc, 1e-7, "scatterCols accumulate=" + acc);
        }
        assertThrows(IllegalArgumentException.class, () -> be.gatherRows(gr, X, be.fromInts(new int[] {0, 6, 1}, 3)));
    }

    /** The fused block ops against the reference and against the defaults they replace (two-op compositions). */
    @Test
    void gatherRowsColsAndScatterRowsColsMatchTheReferenceAndTheirCompositions() {
        Random r = new Random(21);
        int rows = 9, cols = 37;
        float[] x = rand(r, rows * cols, 1);
        Tensor X = f(x, rows, cols), RX = rf(x, rows, cols);
        int[] ri = {7, 0, 4, 5}, ci = {36, 1, 2, 20, 11};
        Tensor R = be.fromInts(ri, ri.length), K = be.fromInts(ci, ci.length), RR = ref.fromInts(ri, ri.length), RK = ref.fromInts(ci, ci.length);
        Tensor g = be.empty(DType.F32, ri.length, ci.length), rg = ref.empty(DType.F32, ri.length, ci.length);
        be.gatherRowsCols(g, X, R, K);
        ref.gatherRowsCols(rg, RX, RR, RK);
        float[] gv = be.toFloats(g);
        assertArrayEquals(ref.toFloats(rg), gv, "gatherRowsCols");

        Tensor out = f(new float[rows * cols], rows, cols), rout = rf(new float[rows * cols], rows, cols);
        be.fill(out, 5f);
        ref.fill(rout, 5f);
        be.scatterRowsCols(out, g, R, K);
        ref.scatterRowsCols(rout, rg, RR, RK);
        float[] o = be.toFloats(out);
        assertArrayEquals(ref.toFloats(rout), o, "scatterRowsCols");
        // the SparseOps defaults (what a backend without the fused ops runs) give the same
        org.sparselora.engine.backend.SparseOps defaults = (org.sparselora.engine.backend.SparseOps) java.lang.reflect.Proxy.newProxyInstance(
                getClass().getClassLoader(), new Class<?>[] {org.sparselora.engine.backend.Backend.class, org.sparselora.engine.backend.SparseOps.class}, (px, m, a) ->
                        m.getName().endsWith("RowsCols") ? java.lang.reflect.InvocationHandler.invokeDefault(px, m, a) : m.invoke(be, a));
        Tensor g3 = be.empty(DType.F32, ri.length, ci.length), out2 = f(new float[rows * cols], rows, cols);
        be.fill(out2, 5f);
        defaults.gatherRowsCols(g3, X, R, K);
        defaults.scatterRowsCols(out2, g3, R, K);
        assertArrayEquals(gv, be.toFloats(g3));
        assertArrayEquals(o, be.toFloats(out2));
        assertThrows(IllegalArgumentException.class, () -> be.gatherRowsCols(g, X, R, be.fromInts(new int[] {0, 1, 2, 3, 37}, 5)));
        assertThrows(IllegalArgumentException.class, () -> be.scatterRowsCols(out, g, be.fromInts(new int[] {0, 1, 2, 9}, 4), K));
        assertThrows(IllegalArgumentException.class, () -> be.scatterRowsCols(out, g, R, be.fromInts(new int[] {0, 1}, 2)));
    }

    @Test
    void columnNormsSequenceMeanTopK() {
        Random r = new Random(13);
        int rows = 6, cols = 300;
        float[] x = rand(r, rows * cols, 1);
        Tensor out = be.empty(DType.F32, cols), rout = ref.empty(DType.F32, cols);
        be.columnNorms(out, f(x, rows, cols));
        ref.columnNorms(rout, rf(x, rows, cols));
        close(rout, out, 1e-6, "columnNorms");

        int[] ks = {1, 0};
        Tensor mean = be.empty(DType.F32, 2, cols), rmean = ref.empty(DType.F32, 2, cols);
        be.sequenceMean(mean, f(x, rows, cols), be.fromInts(ks, 2), 2, 3);
        ref.sequenceMean(rmean, rf(x, rows, cols), ref.fromInts(ks, 2), 2, 3);
        close(rmean, mean, 1e-6, "sequenceMean");

        float[] scores = rand(r, 50, 1);
        scores[7] = scores[30] = scores[44]; // a tie the rule must break the same way
        for (int k : new int[] {0, 1, 13, 50}) {
            Tensor idx = be.empty(DType.I32, k), ridx = ref.empty(DType.I32, k);
            be.topK(idx, f(scores, 50), k);
            ref.topK(ridx, rf(scores, 50), k);
            assertArrayEquals(ref.toInts(ridx), be.toInts(idx), "topK k=" + k);
        }
        Tensor idx = be.empty(DType.I32, 3);
        be.topK(idx, f(new float[] {1f, 5f, 3f, 5f, 0f, 3f}, 6), 3);
        assertArrayEquals(new int[] {1, 2, 3}, be.toInts(idx), "ties go to the lower index, output ascending");
    }

    @Test
    void bf16TensorsRoundOnWrite() {
        Tensor t = be.fromFloats(new float[] {1f + 0x1p-9f, 3.14159f}, DType.BF16, 2);
        float[] v = be.toFloats(t);
        assertEquals(1f, v[0]);
        assertEquals(Dtypes.bf16ToFloat(Dtypes.floatToBf16(3.14159f)), v[1]);
        assertArrayEquals(ref.toFloats(ref.fromFloats(new float[] {1f + 0x1p-9f, 3.14159f}, DType.BF16, 2)), v, "the reference rounds the same");
        Tensor c = be.zeros(DType.BF16, 1, 1);
        be.matmul(c, f(new float[] {1f + 0x1p-9f}, 1, 1), false, f(new float[] {1f}, 1, 1), false, 1, 0);
        assertEquals(1f, be.toFloats(c)[0], "matmul output rounded to bf16");
    }
}
