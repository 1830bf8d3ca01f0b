package org.sparselora.engine.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;

/** The in-process exchange on CPU backends against the host path's float sum in worker order. */
class LocalGradientExchangeTest {

    @Test
    void everyBufferHoldsTheHostSumInWorkerOrderBitForBit() {
        for (int n : new int[]{2, 3, 4}) {
            int len = 10_007;
            SplittableRandom r = new SplittableRandom(n);
            float[][] host = new float[n][len];
            // magnitudes spread over many binades, so a different summation order would change bits
            for (float[] h : host) for (int i = 0; i < len; i++) h[i] = (float) (r.nextGaussian() * Math.pow(10, r.nextInt(-6, 6)));
            CpuBackend[] be = new CpuBackend[n];
            Tensor[] t = new Tensor[n];
            LocalGradientExchange x = new LocalGradientExchange(n);
            for (int w = 0; w < n; w++) {
                be[w] = new CpuBackend(1 + w % 2);
                t[w] = be[w].fromFloats(host[w], DType.F32, len);
                x.register(w, t[w]);
            }
            x.allReduce();
            float[] want = host[0].clone();
            for (int w = 1; w < n; w++) for (int i = 0; i < len; i++) want[i] += host[w][i];
            float[] other = host[n - 1].clone();   // reverse order: must differ somewhere, else the test proves nothing
            for (int w = n - 2; w >= 0; w--) for (int i = 0; i < len; i++) other[i] += host[w][i];
            boolean differs = false;
            for (int i = 0; i < len; i++) differs |= Float.floatToRawIntBits(other[i]) != Float.floatToRawIntBits(want[i]);
            // (with two workers a + b = b + a: order matters from three on)
            if (n >= 3) assertTrue(differs, "summation order matters for these values");
            for (int w = 0; w < n; w++) {
                float[] got = be[w].toFloats(t[w]);
                for (int i = 0; i < len; i++)
                    assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]), "n=" + n + " worker " + w + " element " + i);
            }
            for (CpuBackend b : be) b.close();
        }
    }

    @Test
    void aReplacedWorkerIsSummedFromItsNewBufferAndMisuseFailsClearly() {
        CpuBackend be = new CpuBackend(1);
        LocalGradientExchange x = new LocalGradientExchange(2);
        x.register(0, be.fromFloats(new float[]{1, 2}, DType.F32, 2));
        var e = assertThrows(IllegalStateException.class, x::allReduce);
        assertTrue(e.getMessage().contains("worker 1"), e.getMessage());
        x.register(1, be.fromFloats(new float[]{100, 100}, DType.F32, 2));
        Tensor fresh = be.fromFloats(new float[]{10, 20}, DType.F32, 2);
        x.register(1, fresh);
        x.allReduce();
        assertArrayEquals(new float[]{11, 22}, be.toFloats(fresh));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> x.register(1, be.zeros(DType.F32, 3))).getMessage().contains("3 values"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> x.register(2, fresh)).getMessage().contains("worker 2"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> x.register(0, be.zeros(DType.BF16, 2))).getMessage().contains("F32"));
    }
}
