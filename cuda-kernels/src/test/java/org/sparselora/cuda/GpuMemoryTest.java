package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.io.Dtypes;

/**
 * GpuBackend's memory against CpuBackend: uploads, downloads and conversions, chunked transfers,
 * the elementwise axpy/scale/mul, the sum of squares, dropout and the device normal fill, the
 * pool's block reuse and graph capture, and the error messages of bad inputs.
 * See {@link GpuOpsTestSupport} for the method and tolerances.
 */
@Tag("gpu")
class GpuMemoryTest extends GpuOpsTestSupport {
    @Test
    void uploadDownloadAndConversions() {
        float[] v = rand(1001, 3f);
        Tensor f = gpu.fromFloats(v, DType.F32, 1001);
        assertArrayEquals(v, gpu.toFloats(f));
        Tensor b = gpu.empty(DType.BF16, 1001);
        gpu.fill(b, Float.NaN);
        gpu.copy(b, f);  // f32 -> bf16 kernel: round to nearest even, like Dtypes.floatToBf16
        assertArrayEquals(bf(v), gpu.toFloats(b));
        Tensor f2 = gpu.empty(DType.F32, 1001);
        gpu.fill(f2, Float.NaN);
        gpu.copy(f2, b);
        assertArrayEquals(bf(v), gpu.toFloats(f2));
        // aligned, vectorised path (n % 8 == 0) and a misaligned view (scalar path)
        float[] w = rand(4096, 2f);
        Tensor fw = gpu.fromFloats(w, DType.F32, 4096), bw = gpu.empty(DType.BF16, 4096);
        gpu.copy(bw, fw);
        assertArrayEquals(bf(w), gpu.toFloats(bw));
        Tensor view = bw.view(3, 1000), fv = gpu.empty(DType.F32, 1000);
        gpu.copy(fv, view);
        assertArrayEquals(Arrays.copyOfRange(bf(w), 3, 1003), gpu.toFloats(fv));
        int[] ids = {5, -7, 1 << 20, 0};
        assertArrayEquals(ids, gpu.toInts(gpu.fromInts(ids, 4)));
        Tensor i32 = gpu.empty(DType.I32, 6);
        gpu.fill(i32, 7f);
        assertArrayEquals(new int[] {7, 7, 7, 7, 7, 7}, gpu.toInts(i32));
        Tensor b16 = gpu.empty(DType.BF16, 9);
        gpu.fill(b16, 1.5f);
        float[] filled = gpu.toFloats(b16);
        for (float x : filled) assertEquals(1.5f, x);
        for (Tensor t : List.of(f, b, f2, fw, bw, fv, i32, b16)) t.close();
    }

    @Test
    void largeTransfersCrossChunkBoundaries() {
        int n = (17 << 20) + 3;  // 68 MB of f32: two 64 MiB chunks, the last one partial
        float[] v = new float[n];
        for (int i = 0; i < n; i++) v[i] = i * 0.5f - 7f;
        try (Tensor t = gpu.fromFloats(v, DType.F32, n)) {
            assertArrayEquals(v, gpu.toFloats(t));
        }
        int[] iv = new int[n];
        for (int i = 0; i < n; i++) iv[i] = i ^ 0x5a5a5;
        try (Tensor t = gpu.fromInts(iv, n)) {
            assertArrayEquals(iv, gpu.toInts(t));
        }
        // raw bf16 bytes straight from a native segment (a memory-mapped checkpoint looks like this)
        int m = (40 << 20) + 5;
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            java.lang.foreign.MemorySegment seg = arena.allocate(2L * m, 2);
            float[] want = new float[m];
            for (int i = 0; i < m; i++) {
                short b = Dtypes.floatToBf16((i % 1000) * 0.25f - 100f);
                seg.setAtIndex(java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED, i, b);
                want[i] = Dtypes.bf16ToFloat(b);
            }
            try (Tensor t = gpu.upload(new org.sparselora.engine.io.HostTensor("w", DType.BF16, new int[] {m}, seg), DType.BF16)) {
                assertArrayEquals(want, gpu.toFloats(t));
            }
        }
    }

    @Test
    void axpyScaleMul() {
        for (DType t : FLOATS) {
            for (int n : new int[] {4096, 1003}) {
                float[] y = rand(n, 1f), x = rand(n, 1f), z = rand(n, 1f);
                Pair Y = inout(y, t, n), X = pair(x, t, n), Z = pair(z, t, n);
                gpu.axpy(Y.g, -0.75f, X.g);
                cpu.axpy(Y.c, -0.75f, X.c);
                close("axpy " + t + " n=" + n, Y, tolFor(t));
                gpu.scale(Y.g, 1.25f);
                cpu.scale(Y.c, 1.25f);
                close("scale " + t + " n=" + n, Y, tolFor(t));
                Pair O = out(t, n);
                gpu.mul(O.g, X.g, Z.g);
                cpu.mul(O.c, X.c, Z.c);
                close("mul " + t + " n=" + n, O, tolFor(t));
            }
        }
        // mixed: an f32 accumulator += bf16 increments (gradient accumulation)
        float[] y = rand(2048, 1f), x = rand(2048, 1f);
        Pair Y = inout(y, DType.F32, 2048), X = pair(x, DType.BF16, 2048);
        gpu.axpy(Y.g, 0.5f, X.g);
        cpu.axpy(Y.c, 0.5f, X.c);
        close("axpy f32 += bf16", Y, F32_TOL);
    }

    @Test
    void sumOfSquares() {
        float[] a = rand(10_000, 1f), b = rand(777, 2f);
        Pair A = pair(a, DType.F32, 10_000), B = pair(b, DType.BF16, 777);
        double g = gpu.sumOfSquares(List.of(A.g, B.g)), c = cpu.sumOfSquares(List.of(A.c, B.c));
        assertEquals(c, g, 1e-5 * c);
    }

    @Test
    void dropoutMatchesCpuMask() {
        int n = 5000;
        float[] x = rand(n, 1f);
        for (DType t : FLOATS) {
            Pair X = pair(x, t, n), O = out(t, n);
            gpu.dropout(O.g, X.g, 0.3f, 1234567L);
            cpu.dropout(O.c, X.c, 0.3f, 1234567L);
            float[] g = gpu.toFloats(O.g), c = cpu.toFloats(O.c);
            int dropped = 0;
            for (int i = 0; i < n; i++) {
                assertEquals(c[i] == 0f, g[i] == 0f, "dropout mask differs at " + i);
                if (g[i] == 0f) dropped++;
                assertEquals(GpuBackend.dropoutUniform(1234567L, i) >= 0.3f, g[i] != 0f || x[i] == 0f);
            }
            assertTrue(dropped > n * 0.25 && dropped < n * 0.35, "dropped " + dropped + " of " + n + " at p=0.3");
            close("dropout " + t, O, tolFor(t));
        }
    }

    @Test
    void randomNormalMatchesHostDraw() {
        long seed = new java.util.Random().nextLong();   // fresh stream each run
        int n = 100_003;
        for (DType t : FLOATS) {
            Pair O = out(t, n);
            gpu.randomNormal(O.g, seed, 0.25f, 0.5f);
            cpu.randomNormal(O.c, seed, 0.25f, 0.5f);
            close("randomNormal " + t + " seed " + seed, O, tolFor(t));
            float[] g = gpu.toFloats(O.g);
            double m = 0, v = 0;
            for (float x : g) m += x;
            m /= n;
            for (float x : g) v += (x - m) * (x - m);
            double sd = Math.sqrt(v / n);
            assertEquals(0.25, m, 0.01, "mean");
            assertEquals(0.5, sd, 0.01, "std");
        }
    }

    @Test
    void tensorsReuseFreedBlocksAndGraphsKeepTheirs() {
        Tensor a = gpu.empty(DType.BF16, 1000);
        long held = gpu.allocatedMemory();
        a.close();
        Tensor b = gpu.empty(DType.BF16, 1000);  // served from the cache: no new device memory
        assertEquals(held, gpu.allocatedMemory());
        b.close();
        // a tensor closed inside a capture stays reserved for the graph's replays
        Pair X = pair(rand(4096, 1f), DType.F32, 4096), Y = out(DType.F32, 4096);
        gpu.beginCapture();
        Tensor tmp = gpu.empty(DType.F32, 4096);
        gpu.copy(tmp, X.g);
        gpu.scale(tmp, 2f);
        gpu.copy(Y.g, tmp);
        tmp.close();
        GpuBackend.Graph graph = gpu.endCapture();
        Tensor other = gpu.zeros(DType.F32, 4096);  // must not get tmp's block
        graph.replay();
        cpu.copy(Y.c, X.c);
        cpu.scale(Y.c, 2f);
        close("graph with a captured temporary", Y, 0);
        assertArrayEquals(new float[4096], gpu.toFloats(other), "a tensor made after the capture must not share the graph's scratch");
        graph.close();
        other.close();
    }

    @Test
    void graphCaptureAndReplay() {
        int M = 64, K = 128, N = 32;
        Pair X = pair(rand(M * K, 1f), DType.BF16, M, K), W = pair(rand(N * K, 1f), DType.BF16, N, K);
        Pair Y = inout(new float[M * N], DType.F32, M, N), Z = pair(rand(M * N, 1f), DType.F32, M, N);
        Pair S = out(DType.F32, N), I = new Pair(gpu.empty(DType.I32, 5), cpu.empty(DType.I32, 5));
        Runnable gpuStep = () -> {
            gpu.matmul(Y.g, X.g, false, W.g, true, 0.5f, 1f);   // Y += 0.5·X·Wᵀ
            gpu.axpy(Y.g, -1f, Z.g);                             // Y -= Z
            gpu.scale(Y.g, 0.9f);
            gpu.columnNorms(S.g, Y.g);
            gpu.topK(I.g, S.g, 5);
        };
        gpu.synchronize();
        gpu.beginCapture();
        gpuStep.run();
        assertThrows(IllegalStateException.class, () -> gpu.toFloats(Y.g), "downloads must refuse during capture");
        GpuBackend.Graph graph = gpu.endCapture();
        // capture recorded, did not run: Y is still zero
        assertArrayEquals(new float[M * N], gpu.toFloats(Y.g));
        for (int r = 0; r < 3; r++) {
            graph.replay();
            cpu.matmul(Y.c, X.c, false, W.c, true, 0.5f, 1f);
            cpu.axpy(Y.c, -1f, Z.c);
            cpu.scale(Y.c, 0.9f);
        }
        cpu.columnNorms(S.c, Y.c);
        cpu.topK(I.c, S.c, 5);
        close("graph replay x3: Y", Y, 1e-5);
        close("graph replay x3: column norms", S, 1e-5);
        assertArrayEquals(cpu.toInts(I.c), gpu.toInts(I.g), "graph replay: topK");
        float ms = gpu.timeMs(() -> { for (int r = 0; r < 100; r++) graph.replay(); });
        System.out.printf("  graph of 7 ops: %.1f us per replay%n", ms * 10);
        graph.close();
    }

    @Test
    void badInputsSayWhatIsWrong() {
        Tensor a = gpu.empty(DType.BF16, 4, 8), b = gpu.empty(DType.BF16, 5, 8), c = gpu.empty(DType.F32, 4, 5);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> gpu.matmul(c, a, false, b, false, 1, 0));
        assertTrue(e.getMessage().contains("shapes disagree"), e.getMessage());
        Tensor f16 = gpu.empty(DType.F16, 8);
        e = assertThrows(IllegalArgumentException.class, () -> gpu.scale(f16, 2f));
        assertTrue(e.getMessage().contains("F16"), e.getMessage());
        Tensor s = gpu.empty(DType.F32, 10), idx = gpu.empty(DType.I32, 3);
        assertThrows(IllegalArgumentException.class, () -> gpu.topK(idx, s, 11));
        assertThrows(IllegalArgumentException.class, () -> gpu.axpy(a, 1f, b));
        Backend other = cpu;
        assertThrows(IllegalArgumentException.class, () -> gpu.copy(a, other.empty(DType.F32, 4, 8)));
        assertTrue(gpu.peakMemory() >= gpu.allocatedMemory() && gpu.allocatedMemory() > 0);
        gpu.resetPeakMemory();
        assertEquals(gpu.allocatedMemory(), gpu.peakMemory());
        assertTrue(gpu.peakMemoryInUse() <= gpu.peakMemory());
    }
}
