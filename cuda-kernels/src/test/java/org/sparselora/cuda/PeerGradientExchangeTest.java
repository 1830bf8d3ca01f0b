package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * {@link PeerGradientExchange} against the host path's float sum in worker order, bit for bit:
 * every worker's backend made and used on its own thread (as the Steppers do), the all-reduce on
 * the test thread (as the GradientAggregator round does). Workers on distinct GPUs when several are
 * visible (peer copies), and three workers sharing GPU 0 (same-context copies). Fails, never skips,
 * without a GPU.
 */
@Tag("gpu")
class PeerGradientExchangeTest {

    @Test
    void workersOnDistinctGpusGetTheHostSumBitForBit() throws Exception {
        Gpu.Availability a = Gpu.check();
        if (!a.available()) fail("GPU tests need a CUDA GPU: " + a.reason());
        int n = Math.max(2, Math.min(4, a.deviceCount()));
        int[] devices = new int[n];
        for (int w = 0; w < n; w++) devices[w] = a.deviceCount() >= n ? w : 0;
        check(devices, 1_000_003);
    }

    @Test
    void threeWorkersSharingOneGpuGetTheHostSumBitForBit() throws Exception {
        if (!Gpu.available()) fail("GPU tests need a CUDA GPU: " + Gpu.reason());
        check(new int[]{0, 0, 0}, 77_777);
    }

    private static void check(int[] devices, int len) throws Exception {
        int n = devices.length;
        SplittableRandom r = new SplittableRandom(len);
        float[][] host = new float[n][len];
        for (float[] h : host) for (int i = 0; i < len; i++) h[i] = (float) (r.nextGaussian() * Math.pow(10, r.nextInt(-6, 6)));
        ExecutorService[] threads = new ExecutorService[n];
        GpuBackend[] be = new GpuBackend[n];
        Tensor[] g = new Tensor[n];
        PeerGradientExchange x = new PeerGradientExchange(n);
        try {
            for (int w = 0; w < n; w++) {
                int ww = w;
                threads[w] = Executors.newSingleThreadExecutor();
                on(threads[w], () -> {
                    be[ww] = GpuBackend.create(devices[ww]);
                    g[ww] = be[ww].fromFloats(host[ww], DType.F32, len);
                    be[ww].synchronize();
                    x.register(ww, g[ww]);
                    return null;
                });
            }
            x.allReduce();
            x.allReduce();   // a second round on the same buffers: the sum of sums, still in worker order
            float[] want = host[0].clone();
            for (int w = 1; w < n; w++) for (int i = 0; i < len; i++) want[i] += host[w][i];
            float[] twice = new float[len];
            for (int i = 0; i < len; i++) {
                float s = want[i];
                for (int w = 1; w < n; w++) s += want[i];
                twice[i] = s;
            }
            for (int w = 0; w < n; w++) {
                int ww = w;
                float[] got = on(threads[w], () -> be[ww].toFloats(g[ww]));
                for (int i = 0; i < len; i++)
                    assertEquals(Float.floatToRawIntBits(twice[i]), Float.floatToRawIntBits(got[i]),
                            "worker " + w + " (GPU " + devices[w] + ") element " + i + ": " + got[i] + " vs " + twice[i]);
            }
        } finally {
            for (int w = n - 1; w >= 0; w--) {
                int ww = w;
                if (threads[w] == null) continue;
                if (be[w] != null) on(threads[w], () -> {
                    be[ww].close();
                    return null;
                });
                threads[w].shutdown();
            }
        }
    }

    private static <T> T on(ExecutorService t, Callable<T> c) throws Exception {
        return t.submit(c).get();
    }
}
