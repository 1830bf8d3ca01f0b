package org.sparselora.engine.backend;

import static org.junit.jupiter.api.Assertions.*;

import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Projection;

/** The counter-based normal stream and the device-side random init built on it. */
class CounterRngTest {
    @Test
    void normalStreamHasUnitMomentsAndDependsOnlyOnSeedAndIndex() {
        int n = 400_000;
        double m = 0, v = 0, k4 = 0;
        for (int i = 0; i < n; i++) m += CounterRng.normal(7, i);
        m /= n;
        for (int i = 0; i < n; i++) {
            double d = CounterRng.normal(7, i) - m;
            v += d * d;
            k4 += d * d * d * d;
        }
        v /= n;
        k4 /= n * v * v;
        assertEquals(0, m, 0.01);
        assertEquals(1, v, 0.01);
        assertEquals(3, k4, 0.05, "kurtosis of a normal");
        assertEquals(CounterRng.normal(7, 12345), CounterRng.normal(7, 12345));
        assertNotEquals(CounterRng.normal(7, 12345), CounterRng.normal(8, 12345));
        for (int i = 0; i < 1000; i++) assertTrue(Float.isFinite(CounterRng.normal(i, i)));
    }

    @Test
    void backendDefaultFillsMeanPlusStdTimesTheStream() {
        try (CpuBackend be = new CpuBackend(2)) {
            Tensor t = be.empty(DType.F32, 3, 1000);
            be.randomNormal(t, 99, 1f, 0.1f);
            float[] v = be.toFloats(t);
            for (int i = 0; i < v.length; i++) assertEquals(1f + 0.1f * CounterRng.normal(99, i), v[i]);
        }
    }

    @Test
    void randomInitOnTheBackendHasRandomWeightsDistributions() {
        LlamaConfig c = new LlamaConfig("LlamaForCausalLM", 64, 160, 2, 4, 2, 16, 300, 128, 1e-5f, 10000f, null, false, false, 1, 2);
        try (CpuBackend be = new CpuBackend(2); LlamaWeights w = LlamaWeights.random(be, c, 5)) {
            float[] norm = be.toFloats(w.layers[1].ffnNorm());
            double mn = 0;
            for (float x : norm) mn += x;
            assertEquals(1.0, mn / norm.length, 0.05, "norms ~ 1 + N(0, 0.1²)");
            float[] wg = be.toFloats(w.layers[0].weight(Projection.GATE));
            double ss = 0;
            for (float x : wg) ss += x * x;
            assertEquals(1.0 / Math.sqrt(64), Math.sqrt(ss / wg.length), 0.01, "projections ~ N(0, 1/in)");
            assertArrayEquals(new int[] {300, 64}, w.head.shape());
            try (LlamaWeights again = LlamaWeights.random(be, c, 5)) {
                assertArrayEquals(wg, be.toFloats(again.layers[0].weight(Projection.GATE)), "same seed, same weights");
            }
        }
    }
}
