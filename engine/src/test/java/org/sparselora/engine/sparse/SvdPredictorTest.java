package org.sparselora.engine.sparse;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.model.LlamaConfig;

class SvdPredictorTest {

    static final LlamaConfig CFG = TestWeights.config(32, 64, 3, 4, 2);

    static TreeSet<Integer> set(int... v) {
        TreeSet<Integer> s = new TreeSet<>();
        for (int x : v) s.add(x);
        return s;
    }

    @Test
    void factorsOnlyWhatTheConfigMakesSparse() {
        TestWeights w = new TestWeights(CFG, DType.F32, 1);
        SparsityConfig c = SparsityConfig.parse("sparsity:\n  layers.1.mlp: 0.5\n  layers.2.self_attn: 0.5\n", "t");
        SvdPredictor p = SvdPredictor.forConfig(w, c.resolve(CFG), 4, null, LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE);
        assertTrue(p.has(1, SvdPredictor.Proj.GATE) && p.has(1, SvdPredictor.Proj.UP));
        assertFalse(p.has(1, SvdPredictor.Proj.Q) || p.has(0, SvdPredictor.Proj.GATE) || p.has(2, SvdPredictor.Proj.UP));
        assertTrue(p.has(2, SvdPredictor.Proj.Q) && p.has(2, SvdPredictor.Proj.K) && p.has(2, SvdPredictor.Proj.V));
        LowRankSvd.Factors k = p.get(2, SvdPredictor.Proj.K);
        assertEquals(32, k.in());
        assertEquals(CFG.kvDim(), k.out());
        assertNull(p.get(0, SvdPredictor.Proj.V));
        assertEquals(5, p.builtCount());
    }

    @Test
    void cacheIsReusedAndStaleEntriesAreRebuilt(@TempDir Path dir) throws Exception {
        Path cache = dir.resolve("pred.safetensors");
        TestWeights w = new TestWeights(CFG, DType.BF16, 2);
        List<String> progress = new ArrayList<>();
        SvdPredictor.Progress rec = new SvdPredictor.Progress() {
            @Override public void step(int done, int total, String what) { progress.add(done + "/" + total + " " + what); }
            @Override public void note(String m) { progress.add(m); }
        };
        SvdPredictor first = SvdPredictor.build(w, set(0, 1, 2), set(1), 4, cache, LowRankSvd.Method.EXACT, rec);
        assertEquals(9, first.builtCount());
        assertTrue(Files.exists(cache));
        assertTrue(progress.contains("9/9 layers.2.up_proj (factored)"), progress.toString());

        // second build: everything from the cache, identical values (factors are held rounded to bf16)
        progress.clear();
        SvdPredictor second = SvdPredictor.build(w, set(0, 1, 2), set(1), 4, cache, LowRankSvd.Method.EXACT, rec);
        assertEquals(0, second.builtCount());
        assertEquals(first.identity(), second.identity(), "same weights and rank: same identity");
        assertEquals(9, second.reusedCount());
        assertTrue(progress.contains("9/9 layers.2.up_proj (cached)"), progress.toString());
        for (int l = 0; l < 3; l++)
            for (SvdPredictor.Proj pr : List.of(SvdPredictor.Proj.GATE, SvdPredictor.Proj.UP)) {
                assertArrayEquals(first.get(l, pr).p(), second.get(l, pr).p());
                assertArrayEquals(first.get(l, pr).q(), second.get(l, pr).q());
            }

        // change one source weight: exactly that entry is detected as stale and rebuilt
        String name = SvdPredictor.Proj.UP.weightName(1);
        float[] changed = w.floats.get(name).clone();
        changed[5] += 0.5f;
        w.put(name, changed, DType.BF16, CFG.intermediateSize(), CFG.hiddenSize());
        progress.clear();
        SvdPredictor third = SvdPredictor.build(w, set(0, 1, 2), set(1), 4, cache, LowRankSvd.Method.EXACT, rec);
        assertEquals(1, third.builtCount());
        assertEquals(8, third.reusedCount());
        assertTrue(progress.stream().anyMatch(s -> s.contains("stale")), progress.toString());
        assertFalse(first.identity().equals(third.identity()), "changed weights: another identity");
        assertFalse(java.util.Arrays.equals(first.get(1, SvdPredictor.Proj.UP).p(), third.get(1, SvdPredictor.Proj.UP).p()));

        // another rank: the whole cache is stale
        SvdPredictor r2 = SvdPredictor.build(w, set(0), set(), 2, cache, LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE);
        assertEquals(2, r2.builtCount());

        // garbage on disk: rebuilt, never trusted
        Files.write(cache, new byte[] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
        SvdPredictor r3 = SvdPredictor.build(w, set(0), set(), 2, cache, LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE);
        assertEquals(2, r3.builtCount());
        try (var files = Files.list(dir)) { assertEquals(1, files.count(), "no temp files left"); }
    }

    @Test
    void cacheFromAnotherModelIsNotUsed(@TempDir Path dir) {
        Path cache = dir.resolve("pred.safetensors");
        SvdPredictor.build(new TestWeights(CFG, DType.F32, 3), set(1), set(), 4, cache, LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE);
        SvdPredictor other = SvdPredictor.build(new TestWeights(CFG, DType.F32, 4), set(1), set(), 4, cache,
                LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE);
        assertEquals(2, other.builtCount());
    }

    @Test
    void approximatesTheProjection() {
        TestWeights w = new TestWeights(CFG, DType.F32, 5);
        SvdPredictor p = SvdPredictor.build(w, set(0), set(), 8, null, LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE);
        LowRankSvd.Factors f = p.get(0, SvdPredictor.Proj.GATE);
        assertNotNull(f);
        float[] wg = w.weight(0, SvdPredictor.Proj.GATE);
        Random rng = new Random(9);
        double err = 0, norm = 0;
        for (int t = 0; t < 20; t++) {
            double[] x = new double[32];
            for (int i = 0; i < 32; i++) x[i] = rng.nextGaussian();
            for (int c = 0; c < 64; c++) {
                double exact = 0, est = 0;
                for (int i = 0; i < 32; i++) exact += x[i] * wg[c * 32 + i];
                for (int j = 0; j < 8; j++) {
                    double xp = 0;
                    for (int i = 0; i < 32; i++) xp += x[i] * f.p()[i * 8 + j];
                    est += xp * f.q()[j * 64 + c];
                }
                err += (exact - est) * (exact - est);
                norm += exact * exact;
            }
        }
        assertTrue(Math.sqrt(err / norm) < 0.2, "rank-8 relative error " + Math.sqrt(err / norm));
    }

    @Test
    void rankAboveTheWeightsSmallerSideNamesTheTensor() {
        TestWeights w = new TestWeights(CFG, DType.F32, 7);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> SvdPredictor.build(w, set(), set(0), 20, null, LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE));
        assertTrue(e.getMessage().contains("model.layers.0.self_attn.k_proj.weight") && e.getMessage().contains("20"), e.getMessage());
    }

    @Test
    void layerOutOfRange() {
        TestWeights w = new TestWeights(CFG, DType.F32, 6);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> SvdPredictor.build(w, set(3), set(), 4, null, LowRankSvd.Method.EXACT, SvdPredictor.Progress.NONE));
        assertTrue(e.getMessage().contains("layer 3"));
    }
}
