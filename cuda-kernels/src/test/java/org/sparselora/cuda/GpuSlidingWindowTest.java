package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;

/**
 * GpuBackend has no sliding-window attention kernel: it must take {@link Backend}'s windowed
 * defaults (a window covering the sequence runs the plain kernels, a shorter one is one clear error;
 * the engine's WindowedAttentionDefaultsTest checks that logic). Runs without CUDA: it only looks
 * at which class declares the methods, so a GPU override added later has to come with its own
 * GpuBackendTest comparison (and a change here).
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
    }
}
