package org.sparselora.engine.backend.ref;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.function.ToDoubleFunction;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.TinyModels;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.model.SparsePlan.FrozenGrad;
import org.sparselora.engine.model.SparsePlan.LayerPlan;
import org.sparselora.engine.model.Batch;

/**
 * The reference backend on its own: hand-computed values, its backward ops against finite
 * differences of its forward ops (attention entirely in float64), and a whole tiny model — a dense
 * and a SparseLoRA training step — computed on it and on CpuBackend giving the same loss and LoRA
 * gradients, which shows the reference is complete enough to run the model it specifies.
 */
class ReferenceBackendTest {
    static final ReferenceBackend ref = new ReferenceBackend();
    static final CpuBackend cpu = new CpuBackend(2);

    @AfterAll
    static void close() { cpu.close(); }

    static Tensor f(float[] x, int... shape) { return ref.fromFloats(x, DType.F32, shape); }

    static float[] rand(Random r, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) r.nextGaussian();
        return x;
    }

    static double dot(float[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += (double) a[i] * b[i];
        return s;
    }

    /** Every analytic[i] against the central difference (h = 1e-2) of loss at x[i]. */
    static void checkFd(float[] x, float[] analytic, ToDoubleFunction<float[]> loss, String what) {
        for (int i = 0; i < x.length; i++) {
            float old = x[i];
            x[i] = old + 1e-2f;
            double up = loss.applyAsDouble(x);
            x[i] = old - 1e-2f;
            double dn = loss.applyAsDouble(x);
            x[i] = old;
            double fd = (up - dn) / ((double) (old + 1e-2f) - (old - 1e-2f));
            assertEquals(fd, analytic[i], 1e-3 * (1 + Math.abs(fd)), what + " d/dx[" + i + "]");
        }
    }

    // ------------------------------------------------------------------ values by hand

    @Test
    void handComputedValues() {
        Tensor c = f(new float[] {1, 1}, 1, 2);
        ref.matmul(c, f(new float[] {1, 2, 3}, 1, 3), false, f(new float[] {1, 0, 0, 1, 1, 1}, 2, 3), true, 2f, 0.5f);
        assertArrayEquals(new float[] {2 * 1 + 0.5f, 2 * 6 + 0.5f}, ref.toFloats(c), "C = 2·a·Bᵀ + ½·C");

        Tensor out = ref.empty(DType.F32, 1, 2), rstd = ref.empty(DType.F32, 1);
        ref.rmsNorm(out, rstd, f(new float[] {3, 4}, 1, 2), f(new float[] {1, 2}, 2), 0f);
        float rs = (float) (1 / Math.sqrt(12.5));
        assertArrayEquals(new float[] {3 * rs, 8 * rs}, ref.toFloats(out), 1e-7f);

        Tensor idx = ref.empty(DType.I32, 3);
        ref.topK(idx, f(new float[] {1f, 5f, 3f, 5f, Float.NaN, 3f}, 6), 3);
        assertArrayEquals(new int[] {1, 2, 3}, ref.toInts(idx), "ties to the lower index, NaN last, ascending");

        Tensor mean = ref.empty(DType.F32, 2, 1);
        ref.sequenceMean(mean, f(new float[] {9, 1, 2, 7, 7, 7}, 6, 1), ref.fromInts(new int[] {1, 3}, 2), 2, 3);
        assertArrayEquals(new float[] {1.5f, 0f}, ref.toFloats(mean), "padding excluded; an all-padding sequence is 0");

        Tensor losses = ref.empty(DType.F32, 2);
        ref.crossEntropy(losses, null, f(new float[] {0, 0, 0, 0, 5, 0}, 2, 3), ref.fromInts(new int[] {2, -100}, 2), 1f);
        assertArrayEquals(new float[] {(float) Math.log(3), 0f}, ref.toFloats(losses), 1e-6f);

        var e = assertThrows(IllegalArgumentException.class,
                () -> ref.embedding(ref.empty(DType.F32, 1, 2), ref.fromInts(new int[] {4}, 1), f(new float[8], 4, 2)));
        assertTrue(e.getMessage().contains("token id 4"), e.getMessage());
        Tensor b = ref.fromFloats(new float[] {1f + 0x1p-9f}, DType.BF16, 1);
        assertEquals(1f, ref.toFloats(b)[0], "BF16 rounds on store");
    }

    @Test
    void attentionMasksPaddingAndWindow() {
        int t = 4, h = 2, d = 2;
        Random r = new Random(1);
        float[] q = rand(r, t * h * d), k = rand(r, t * d), v = rand(r, t * d);
        Tensor out = ref.empty(DType.F32, t, h * d), lse = ref.empty(DType.F32, 1, h, t);
        ref.attention(out, lse, f(q, t, h * d), f(k, t, d), f(v, t, d), ref.fromInts(new int[] {1}, 1), 1, t, h, 1, d, 0.7f, 1);
        float[] o = ref.toFloats(out), l = ref.toFloats(lse);
        for (int e = 0; e < h * d; e++) assertEquals(0f, o[e], "padding query");
        assertEquals(Float.NEGATIVE_INFINITY, l[0]);
        // window 1: each real query sees only its own key, so both heads output that token's v row
        for (int i = 1; i < t; i++)
            for (int hh = 0; hh < h; hh++)
                for (int e = 0; e < d; e++) assertEquals(v[i * d + e], o[(i * h + hh) * d + e], 1e-6, "window 1, token " + i);
    }

    // ------------------------------------------------------------------ backward ops against finite differences

    @Test
    void attentionBackwardMatchesFiniteDifferencesInFloat64() {
        for (int window : new int[] {0, 3}) {
            var s = new ReferenceAttention.Shape(2, 7, 4, 2, 3, new int[] {0, 2}, 0.6, window);
            Random r = new Random(2 + window);
            double[][] in = {widen(rand(r, 2 * 7 * 4 * 3)), widen(rand(r, 2 * 7 * 2 * 3)), widen(rand(r, 2 * 7 * 2 * 3))};
            double[] probe = widen(rand(r, 2 * 7 * 4 * 3));
            double[][] g = ReferenceAttention.backward(s, probe, in[0], in[1], in[2]);
            for (int x = 0; x < 3; x++)
                for (int i = 0; i < in[x].length; i++) {
                    double old = in[x][i], hh = 1e-6;
                    in[x][i] = old + hh;
                    double up = dot(ReferenceAttention.forward(s, in[0], in[1], in[2], null), probe);
                    in[x][i] = old - hh;
                    double dn = dot(ReferenceAttention.forward(s, in[0], in[1], in[2], null), probe);
                    in[x][i] = old;
                    double fd = (up - dn) / (2 * hh);
                    assertEquals(fd, g[x][i], 1e-7 * (1 + Math.abs(fd)), "window " + window + " grad " + x + "[" + i + "]");
                }
        }
    }

    static double[] widen(float[] x) {
        double[] y = new double[x.length];
        for (int i = 0; i < x.length; i++) y[i] = x[i];
        return y;
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    @Test
    void rmsNormSwigluAndCrossEntropyBackwardMatchFiniteDifferences() {
        Random r = new Random(3);
        int n = 3, c = 8;
        float[] x = rand(r, n * c), w = rand(r, c), probe = rand(r, n * c);
        Tensor rstd = ref.empty(DType.F32, n), dx = ref.empty(DType.F32, n, c);
        ref.rmsNorm(ref.empty(DType.F32, n, c), rstd, f(x, n, c), f(w, c), 1e-5f);
        ref.rmsNormBackward(dx, f(probe, n, c), f(x, n, c), f(w, c), rstd, false);
        checkFd(x, ref.toFloats(dx), xs -> {
            Tensor o = ref.empty(DType.F32, n, c);
            ref.rmsNorm(o, ref.empty(DType.F32, n), f(xs, n, c), f(w, c), 1e-5f);
            return dot(ref.toFloats(o), probe);
        }, "rmsNorm");

        float[] g = rand(r, n * c), u = rand(r, n * c);
        Tensor dg = ref.empty(DType.F32, n * c), du = ref.empty(DType.F32, n * c);
        ref.swigluBackward(dg, du, f(probe, n * c), f(g, n * c), f(u, n * c));
        ToDoubleFunction<float[]> byG = gs -> { Tensor o = ref.empty(DType.F32, n * c); ref.swiglu(o, f(gs, n * c), f(u, n * c)); return dot(ref.toFloats(o), probe); };
        ToDoubleFunction<float[]> byU = us -> { Tensor o = ref.empty(DType.F32, n * c); ref.swiglu(o, f(g, n * c), f(us, n * c)); return dot(ref.toFloats(o), probe); };
        checkFd(g, ref.toFloats(dg), byG, "swiglu dgate");
        checkFd(u, ref.toFloats(du), byU, "swiglu dup");

        float[] logits = rand(r, n * c);
        int[] tg = {5, -100, 0};
        Tensor dl = ref.empty(DType.F32, n, c);
        ref.crossEntropy(ref.empty(DType.F32, n), dl, f(logits, n, c), ref.fromInts(tg, n), 0.25f);
        checkFd(logits, ref.toFloats(dl), ls -> {
            Tensor l = ref.empty(DType.F32, n);
            ref.crossEntropy(l, null, f(ls, n, c), ref.fromInts(tg, n), 1f);
            double s = 0;
            for (float v : ref.toFloats(l)) s += v;
            return 0.25 * s;
        }, "crossEntropy");
    }

    /** The norm weight's gradient against differences of rmsNorm in the weight; the lookup's gradient by hand (a repeated id adds). */
    @Test
    void normWeightAndEmbeddingGradients() {
        Random r = new Random(4);
        int n = 3, c = 8;
        float[] x = rand(r, n * c), w = rand(r, c), probe = rand(r, n * c);
        Tensor rstd = ref.empty(DType.F32, n), dw = ref.zeros(DType.F32, c);
        ref.rmsNorm(ref.empty(DType.F32, n, c), rstd, f(x, n, c), f(w, c), 1e-5f);
        ref.rmsNormWeightGrad(dw, f(probe, n, c), f(x, n, c), rstd);
        checkFd(w, ref.toFloats(dw), ws -> {
            Tensor o = ref.empty(DType.F32, n, c);
            ref.rmsNorm(o, ref.empty(DType.F32, n), f(x, n, c), f(ws, c), 1e-5f);
            return dot(ref.toFloats(o), probe);
        }, "rmsNorm weight");

        Tensor table = f(new float[] {1, 1, 2, 2, 3, 3}, 3, 2);
        ref.embeddingBackward(table, f(new float[] {10, 20, 30, 40, 50, 60, 70, 80}, 4, 2), ref.fromInts(new int[] {2, 0, 2, 2}, 4));
        assertArrayEquals(new float[] {31, 41, 2, 2, 133, 163}, ref.toFloats(table));
        assertThrows(IllegalArgumentException.class, () -> ref.embeddingBackward(table, f(new float[2], 1, 2), ref.fromInts(new int[] {3}, 1)));
    }

    /** CpuBackend's two new weight-gradient ops equal the reference on random inputs (repeated ids included), accumulating into what is there. */
    @Test
    void cpuWeightGradientOpsMatchTheReference() {
        Random r = new Random(6);
        int n = 37, c = 24, v = 9;
        float[] x = rand(r, n * c), dout = rand(r, n * c), w = rand(r, c), d0 = rand(r, c), t0 = rand(r, v * c);
        int[] ids = new int[n];
        for (int i = 0; i < n; i++) ids[i] = r.nextInt(v);
        float[][] got = new float[2][], table = new float[2][];
        Backend[] bs = {ref, cpu};
        for (int k = 0; k < 2; k++) {
            Backend be = bs[k];
            Tensor rstd = be.empty(DType.F32, n), dw = be.fromFloats(d0, DType.F32, c), X = be.fromFloats(x, DType.F32, n, c);
            be.rmsNorm(be.empty(DType.F32, n, c), rstd, X, be.fromFloats(w, DType.F32, c), 1e-5f);
            be.rmsNormWeightGrad(dw, be.fromFloats(dout, DType.F32, n, c), X, rstd);
            got[k] = be.toFloats(dw);
            Tensor tb = be.fromFloats(t0, DType.F32, v, c);
            be.embeddingBackward(tb, be.fromFloats(dout, DType.F32, n, c), be.fromInts(ids, n));
            table[k] = be.toFloats(tb);
        }
        for (int j = 0; j < c; j++) assertEquals(got[0][j], got[1][j], 1e-5f * (1 + Math.abs(got[0][j])), "dweight[" + j + "]");
        for (int j = 0; j < v * c; j++) assertEquals(table[0][j], table[1][j], 1e-5f * (1 + Math.abs(table[0][j])), "dtable[" + j + "]");
    }

    // ------------------------------------------------------------------ the whole model

    record Step(double loss, List<float[]> grads) {}

    static Step step(Backend be, LlamaConfig c, Batch b, boolean sparse, FrozenGrad fg) {
        LlamaModel m = TinyModels.model(be, c, 11);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 12);
        lora.zeroGrads();
        double loss = m.forward(b, lora, sparse ? plan(be, c, b, fg) : null, 0);
        m.backward();
        List<float[]> grads = new ArrayList<>();
        for (Tensor g : lora.grads()) grads.add(be.toFloats(g));
        return new Step(loss, grads);
    }

    /** Context tokens sparse, output tokens dense; layer 0 keeps every other MLP channel, layer 1 also half of Q/K and V/O. */
    static SparsePlan plan(Backend be, LlamaConfig c, Batch b, FrozenGrad fg) {
        int[] context = IntStream.range(0, b.tokenCount()).filter(i -> b.targets()[i] == Batch.IGNORE).toArray();
        int[] output = IntStream.range(0, b.tokenCount()).filter(i -> b.targets()[i] != Batch.IGNORE).toArray();
        int[] mlp = IntStream.range(0, c.intermediateSize()).filter(i -> i % 2 == 0).toArray();
        int[] q = IntStream.range(0, c.qDim()).filter(i -> i % 4 == 0 || i % 4 == 3).toArray();
        int[] k = IntStream.range(0, c.kvDim()).filter(i -> i % 4 == 0 || i % 4 == 3).toArray();
        int[] v = IntStream.range(0, c.kvDim()).filter(i -> i % 4 == 1 || i % 4 == 2).toArray();
        int[] o = IntStream.range(0, c.qDim()).filter(i -> i % 4 == 1 || i % 4 == 2).toArray();
        LayerPlan[] lp = {new LayerPlan(ints(be, mlp), null, null, null, null),
                new LayerPlan(ints(be, mlp), ints(be, q), ints(be, k), ints(be, v), ints(be, o))};
        return new SparsePlan(ints(be, context), ints(be, output), lp, fg);
    }

    static Tensor ints(Backend be, int[] v) { return be.fromInts(v, v.length); }

    @Test
    void aTinyModelTrainsTheSameOnTheReferenceAndOnTheCpu() {
        LlamaConfig c = TinyModels.config(false, true, true);
        Batch b = TinyModels.batch(c, 13, 2);
        for (int variant = 0; variant < 3; variant++) {
            boolean sparse = variant > 0;
            FrozenGrad fg = variant == 2 ? FrozenGrad.CUT : FrozenGrad.SLICED;
            String what = sparse ? "sparse " + fg : "dense";
            Step want = step(ref, c, b, sparse, fg), got = step(cpu, c, b, sparse, fg);
            assertEquals(want.loss(), got.loss(), 1e-5 * Math.abs(want.loss()), "loss, " + what);
            double maxNorm = 0;
            for (int i = 0; i < want.grads().size(); i++) {
                float[] w = want.grads().get(i), g = got.grads().get(i);
                double num = 0, den = 0;
                for (int j = 0; j < w.length; j++) { num += (g[j] - w[j]) * (double) (g[j] - w[j]); den += (double) w[j] * w[j]; }
                assertTrue(Math.sqrt(num) <= 1e-4 * Math.sqrt(den) + 1e-9, what + " gradient " + i + ": " + Math.sqrt(num / Math.max(den, 1e-30)));
                maxNorm = Math.max(maxNorm, Math.sqrt(den));
            }
            assertTrue(maxNorm > 1e-3, what + ": the gradients are real");
        }
    }
}
