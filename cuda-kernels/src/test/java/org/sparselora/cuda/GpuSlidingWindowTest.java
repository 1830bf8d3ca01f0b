package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Random;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;

/**
 * GpuBackend has no sliding-window attention kernel: it must take {@link Backend}'s windowed
 * defaults (a window covering the sequence runs the plain kernels, a shorter one is one clear error;
 * the engine's WindowedAttentionDefaultsTest checks that logic). Runs without CUDA: it only looks
 * at which class declares the methods, so a GPU override added later has to come with its own
 * GpuAttentionTest comparison (and a change here). The {@code gpu}-tagged method runs the defaults on
 * the device: a covering window matches CpuBackend's windowed op, a shorter one is refused.
 */
class GpuSlidingWindowTest {

    @Test
    void gpuBackendUsesTheWindowedDefaults() throws NoSuchMethodException {
        Class<?> t = Tensor.class, i = int.class, f = float.class;
        var attention = GpuBackend.class.getMethod("attention", t, t, t, t, t, t, i, i, i, i, i, f, i);
        var backward = GpuBackend.class.getMethod("attentionBackward", t, t, t, t, t, t, t, t, t, t, i, i, i, i, i, f, i);
        var cached = GpuBackend.class.getMethod("attentionCached", t, t, t, t, i, i, i, i, f, i);
        assertEquals(Backend.class, attention.getDeclaringClass());
        assertEquals(Backend.class, backward.getDeclaringClass());
        assertEquals(Backend.class, cached.getDeclaringClass());
        var cachedBatch = GpuBackend.class.getMethod("attentionCachedBatch", t, t, t, t, t, i, i, i, i, i, f, i);
        assertEquals(Backend.class, cachedBatch.getDeclaringClass());
    }

    @Test
    @Tag("gpu")
    void onTheDeviceACoveringWindowRunsAndAShorterOneIsRefused() {
        if (!Gpu.available()) fail("GPU tests need a CUDA GPU: " + Gpu.reason());
        int b = 2, t = 20, h = 4, hkv = 2, d = 16, n = b * t;
        float scale = 0.25f;
        int[] ks = {0, 5};
        Random r = new Random(3);
        float[] q = new float[n * h * d], k = new float[n * hkv * d], v = new float[n * hkv * d];
        for (float[] x : new float[][] {q, k, v}) for (int i = 0; i < x.length; i++) x[i] = (float) r.nextGaussian();
        try (GpuBackend gpu = GpuBackend.create(0); CpuBackend cpu = new CpuBackend(2)) {
            float[][] outs = new float[2][];
            Backend[] bes = {gpu, cpu};
            for (int i = 0; i < 2; i++) {
                Backend be = bes[i];
                DType dt = be == gpu ? DType.BF16 : DType.F32; // the GPU's activation dtype
                Tensor out = be.empty(dt, n, h * d), lse = be.empty(DType.F32, b, h, t);
                be.fill(out, Float.NaN); // poisoned: the op must write every element
                be.attention(out, lse, be.fromFloats(q, dt, n, h * d), be.fromFloats(k, dt, n, hkv * d),
                        be.fromFloats(v, dt, n, hkv * d), be.fromInts(ks, b), b, t, h, hkv, d, scale, t);
                outs[i] = be.toFloats(out);
            }
            assertTrue(GpuOpsTestSupport.relErr(outs[0], outs[1]) < 1e-2, "covering window: GPU vs CPU rel err " + GpuOpsTestSupport.relErr(outs[0], outs[1]));
            Tensor out = gpu.empty(DType.BF16, n, h * d), lse = gpu.empty(DType.F32, b, h, t);
            var e = assertThrows(UnsupportedOperationException.class, () -> gpu.attention(out, lse, gpu.fromFloats(q, DType.BF16, n, h * d),
                    gpu.fromFloats(k, DType.BF16, n, hkv * d), gpu.fromFloats(v, DType.BF16, n, hkv * d), gpu.fromInts(ks, b), b, t, h, hkv, d, scale, 8));
            assertTrue(e.getMessage().contains("sliding window 8") && e.getMessage().contains("sequence length 20"), e.getMessage());
        }
    }
}
