package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;

/**
 * GpuBackend's layers against CpuBackend: embedding, the rmsnorm family, rotary embeddings, SwiGLU
 * and cross-entropy, and the norm and embedding weight gradients. See {@link GpuOpsTestSupport} for the method and tolerances.
 */
@Tag("gpu")
class GpuLayersTest extends GpuOpsTestSupport {
    @Test
    void embedding() {
        int V = 50, C = 64, N = 37;
        int[] ids = new int[N];
        for (int i = 0; i < N; i++) ids[i] = RNG.nextInt(V);
        for (DType t : FLOATS) {
            Pair W = pair(rand(V * C, 1f), t, V, C), I = ints(ids, N), O = out(t, N, C);
            gpu.embedding(O.g, I.g, W.g);
            cpu.embedding(O.c, I.c, W.c);
            exact("embedding " + t, O);
        }
    }

    @Test
    void rmsNormForwardFusedAndBackward() {
        for (DType t : FLOATS) {
            for (int C : new int[] {256, 100, 12288}) {  // register-cached row, scalar path, long row
                int N = C > 4096 ? 3 : 19;
                float eps = 1e-5f;
                float[] x = rand(N * C, 2f), w = rand(C, 1f), d = rand(N * C, 1f), dout = rand(N * C, 1f);
                Pair X = pair(x, t, N, C), W = pair(w, t, C), O = out(t, N, C), R = out(DType.F32, N);
                gpu.rmsNorm(O.g, R.g, X.g, W.g, eps);
                cpu.rmsNorm(O.c, R.c, X.c, W.c, eps);
                close("rmsNorm out " + t + " C=" + C, O, tolFor(t) * 2);
                close("rmsNorm rstd " + t + " C=" + C, R, 1e-5);
                // fused residual add + norm
                Pair Res = inout(x, t, N, C), D = pair(d, t, N, C), O2 = out(t, N, C), R2 = out(DType.F32, N);
                gpu.addRmsNorm(Res.g, O2.g, R2.g, D.g, W.g, eps);
                cpu.addRmsNorm(Res.c, O2.c, R2.c, D.c, W.c, eps);
                close("addRmsNorm residual " + t, Res, tolFor(t));
                close("addRmsNorm out " + t, O2, tolFor(t) * 2);
                close("addRmsNorm rstd " + t, R2, t == DType.BF16 ? 1e-3 : 1e-5);
                // out of place: the input residual stays as it was
                Pair In = pair(x, t, N, C), Res3 = out(t, N, C), O3 = out(t, N, C), R3 = out(DType.F32, N);
                gpu.addRmsNormTo(Res3.g, In.g, O3.g, R3.g, D.g, W.g, eps);
                cpu.addRmsNormTo(Res3.c, In.c, O3.c, R3.c, D.c, W.c, eps);
                close("addRmsNormTo residual " + t, Res3, tolFor(t));
                close("addRmsNormTo out " + t, O3, tolFor(t) * 2);
                close("addRmsNormTo rstd " + t, R3, t == DType.BF16 ? 1e-3 : 1e-5);
                exact("addRmsNormTo leaves its input " + t, In);
                assertArrayEquals(gpu.toFloats(Res.g), gpu.toFloats(Res3.g), "addRmsNormTo residual = in-place addRmsNorm's, bit for bit");
                assertArrayEquals(gpu.toFloats(O2.g), gpu.toFloats(O3.g), "addRmsNormTo out = in-place addRmsNorm's, bit for bit");
                // backward, overwrite and accumulate
                Pair DO = pair(dout, t, N, C), DX = out(t, N, C);
                gpu.rmsNormBackward(DX.g, DO.g, X.g, W.g, R.g, false);
                cpu.rmsNormBackward(DX.c, DO.c, X.c, W.c, R.c, false);
                close("rmsNormBackward " + t + " C=" + C, DX, tolFor(t) * 2);
                float[] acc0 = rand(N * C, 1f);
                Pair DXa = inout(acc0, t, N, C);
                gpu.rmsNormBackward(DXa.g, DO.g, X.g, W.g, R.g, true);
                cpu.rmsNormBackward(DXa.c, DO.c, X.c, W.c, R.c, true);
                close("rmsNormBackward acc " + t, DXa, tolFor(t) * 2);
            }
        }
    }

    /**
     * Full-parameter training's two weight-gradient ops, accumulating into F32 gradients that hold
     * values already: the norm weight's Σ dout ⊙ x·rstd (1e-5 for f32 inputs; bf16 inputs are rounded
     * identically for both, the sums differ only in order: 1e-4) and the embedding's scatter-add with
     * repeated ids (exact: both add the rows in token order in fp32). Run twice on the GPU: the same bits.
     */
    @Test
    void normWeightAndEmbeddingGradients() {
        for (DType t : FLOATS) {
            for (int C : new int[] {256, 100, 4160}) {
                int N = C > 4096 ? 5 : 301;
                float[] x = rand(N * C, 2f), w = rand(C, 1f), dout = rand(N * C, 1f), dw0 = rand(C, 1f);
                Pair X = pair(x, t, N, C), W = pair(w, t, C), O = out(t, N, C), R = out(DType.F32, N), DO = pair(dout, t, N, C);
                gpu.rmsNorm(O.g, R.g, X.g, W.g, 1e-5f);
                cpu.rmsNorm(O.c, R.c, X.c, W.c, 1e-5f);
                cpu.copyFromHost(R.c, gpu.toFloats(R.g));   // the same rstd on both: the op under test is the sum
                Pair DW = inout(dw0, DType.F32, C);
                gpu.rmsNormWeightGrad(DW.g, DO.g, X.g, R.g);
                cpu.rmsNormWeightGrad(DW.c, DO.c, X.c, R.c);
                close("rmsNormWeightGrad " + t + " C=" + C, DW, t == DType.BF16 ? 1e-4 : F32_TOL);
                Pair again = inout(dw0, DType.F32, C);
                gpu.rmsNormWeightGrad(again.g, DO.g, X.g, R.g);
                assertArrayEquals(gpu.toFloats(DW.g), gpu.toFloats(again.g), "rmsNormWeightGrad is deterministic");
            }
            int V = 70, C = 96, N = 333;
            int[] ids = new int[N];
            for (int i = 0; i < N; i++) ids[i] = RNG.nextInt(i % 3 == 0 ? 3 : V);   // ids 0..2 repeated often
            float[] t0 = rand(V * C, 1f), dout = rand(N * C, 1f);
            Pair T = inout(t0, DType.F32, V, C), DO = pair(dout, t, N, C), I = ints(ids, N);
            gpu.embeddingBackward(T.g, DO.g, I.g);
            cpu.embeddingBackward(T.c, DO.c, I.c);
            exact("embeddingBackward " + t, T);
        }
    }

    static float[][] ropeTables(int maxPos, int D) {
        float[] cos = new float[maxPos * D / 2], sin = new float[maxPos * D / 2];
        for (int p = 0; p < maxPos; p++)
            for (int i = 0; i < D / 2; i++) {
                double th = p * Math.pow(500000.0, -2.0 * i / D);
                cos[p * D / 2 + i] = (float) Math.cos(th);
                sin[p * D / 2 + i] = (float) Math.sin(th);
            }
        return new float[][] {cos, sin};
    }

    /**
     * ropeQK (one launch for q and k) against CpuBackend's two rope calls: GQA head counts, the
     * vector path (D = 128, 64), the scalar path (D = 12; and D = 128 with q an unaligned view),
     * forward then inverse, both dtypes (tolerances as rope).
     */
    @Test
    void ropeQkMatchesCpu() {
        int N = 37, Hq = 4, Hkv = 2, maxPos = 600;
        int[] pos = new int[N];
        for (int i = 0; i < N; i++) pos[i] = RNG.nextInt(maxPos);
        Pair P = ints(pos, N);
        for (int[] c : new int[][] {{128, 0}, {64, 0}, {12, 0}, {128, 1}}) {
            int D = c[0];
            boolean unaligned = c[1] == 1;
            float[][] tb = ropeTables(maxPos, D);
            Pair COS = pair(tb[0], DType.F32, maxPos, D / 2), SIN = pair(tb[1], DType.F32, maxPos, D / 2);
            for (DType t : FLOATS) {
                float[] q = rand(N * Hq * D, 1f), k = rand(N * Hkv * D, 1f);
                Pair Q = inout(q, t, N, Hq * D), K = inout(k, t, N, Hkv * D);
                Tensor parent = null;
                if (unaligned) {  // q one element into a larger buffer: the scalar path
                    parent = gpu.empty(t, N * Hq * D + 1);
                    gpu.fill(parent, Float.NaN);
                    Tensor view = parent.view(1, N, Hq * D);
                    gpu.copy(view, Q.g());
                    Q.g().close();
                    Q = new Pair(view, Q.c());
                }
                String what = "ropeQK " + t + " D=" + D + (unaligned ? " unaligned q" : "");
                gpu.ropeQK(Q.g(), K.g(), P.g(), COS.g(), SIN.g(), Hq, Hkv, D, false);
                cpu.ropeQK(Q.c(), K.c(), P.c(), COS.c(), SIN.c(), Hq, Hkv, D, false);
                close(what + " q", Q, tolFor(t));
                close(what + " k", K, tolFor(t));
                gpu.ropeQK(Q.g(), K.g(), P.g(), COS.g(), SIN.g(), Hq, Hkv, D, true);
                cpu.ropeQK(Q.c(), K.c(), P.c(), COS.c(), SIN.c(), Hq, Hkv, D, true);
                close(what + " inverse q", Q, tolFor(t));
                close(what + " inverse k", K, tolFor(t));
                if (parent != null) {
                    assertTrue(Float.isNaN(gpu.toFloats(parent)[0]), what + ": the element before q is untouched");
                    parent.close();
                } else Q.g().close();
                K.g().close();
            }
        }
        assertThrows(IllegalArgumentException.class, () -> gpu.ropeQK(gpu.empty(DType.BF16, N, Hq * 16), gpu.empty(DType.BF16, N, Hq * 16),
                P.g(), gpu.empty(DType.F32, 8, 8), gpu.empty(DType.F32, 8, 8), Hq, Hkv, 16, false), "k has Hq heads, not Hkv");
    }

    @Test
    void ropeForwardAndInverse() {
        int N = 24, H = 3, D = 16, maxPos = 64;
        float[][] tb = ropeTables(maxPos, D);
        int[] pos = new int[N];
        for (int i = 0; i < N; i++) pos[i] = RNG.nextInt(maxPos);
        for (DType t : FLOATS) {
            float[] x = rand(N * H * D, 1f);
            Pair X = inout(x, t, N, H * D), P = ints(pos, N);
            Pair COS = pair(tb[0], DType.F32, maxPos, D / 2), SIN = pair(tb[1], DType.F32, maxPos, D / 2);
            gpu.rope(X.g, P.g, COS.g, SIN.g, H, D, false);
            cpu.rope(X.c, P.c, COS.c, SIN.c, H, D, false);
            close("rope " + t, X, tolFor(t));
            gpu.rope(X.g, P.g, COS.g, SIN.g, H, D, true);
            cpu.rope(X.c, P.c, COS.c, SIN.c, H, D, true);
            close("rope inverse " + t, X, tolFor(t));
        }
    }

    @Test
    void swigluForwardBackward() {
        for (DType t : FLOATS) {
            for (int n : new int[] {4096, 999}) {
                Pair G = pair(rand(n, 4f), t, n), U = pair(rand(n, 2f), t, n), DO = pair(rand(n, 1f), t, n);
                Pair O = out(t, n), DG = out(t, n), DU = out(t, n);
                gpu.swiglu(O.g, G.g, U.g);
                cpu.swiglu(O.c, G.c, U.c);
                close("swiglu " + t + " n=" + n, O, tolFor(t) * 2);
                gpu.swigluBackward(DG.g, DU.g, DO.g, G.g, U.g);
                cpu.swigluBackward(DG.c, DU.c, DO.c, G.c, U.c);
                close("swiglu dgate " + t, DG, tolFor(t) * 2);
                close("swiglu dup " + t, DU, tolFor(t) * 2);
            }
        }
    }

    @Test
    void crossEntropyWithIgnoredRowsAndInPlace() {
        for (int V : new int[] {1000, 777}) crossEntropyCase(9, V);
    }

    static void crossEntropyCase(int n, int V) {
        int[] tg = new int[n];
        for (int i = 0; i < n; i++) tg[i] = i % 3 == 1 ? -100 : RNG.nextInt(V);
        float[] logits = rand(n * V, 6f);
        for (DType t : FLOATS) {
            Pair LG = pair(logits, t, n, V), TG = ints(tg, n), LS = out(DType.F32, n), DL = out(t, n, V);
            gpu.crossEntropy(LS.g, DL.g, LG.g, TG.g, 0.125f);
            cpu.crossEntropy(LS.c, DL.c, LG.c, TG.c, 0.125f);
            close("crossEntropy loss " + t + " V=" + V, LS, 1e-4);
            close("crossEntropy dlogits " + t + " V=" + V, DL, tolFor(t) * 2);
            // in place: dlogits is the logits buffer
            Pair LG2 = pair(logits, t, n, V), LS2 = out(DType.F32, n);
            gpu.crossEntropy(LS2.g, LG2.g, LG2.g, TG.g, 0.125f);
            cpu.crossEntropy(LS2.c, LG2.c, LG2.c, TG.c, 0.125f);
            close("crossEntropy in place loss " + t, LS2, 1e-4);
            close("crossEntropy in place dlogits " + t, LG2, tolFor(t) * 2);
        }
    }
}
