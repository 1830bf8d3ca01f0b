package org.sparselora.engine.sparse;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.SparsePlan;

class SparsityConfigTest {

    static LlamaConfig shape(int hidden, int inter, int layers, int heads, int kvHeads) {
        return new LlamaConfig("LlamaForCausalLM", hidden, inter, layers, heads, kvHeads, hidden / heads,
                32000, 4096, 1e-5f, 10000f, null, false, false, 1, 2);
    }

    static final LlamaConfig LLAMA3_8B = shape(4096, 14336, 32, 32, 8);
    static final LlamaConfig LLAMA2_7B = shape(4096, 11008, 32, 32, 32);
    static final LlamaConfig LLAMA2_13B = shape(5120, 13824, 40, 40, 40);

    /** The repository's configs/sparsity directory, found by walking up from the working directory. */
    static Path configDir() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            Path c = p.resolve("configs/sparsity");
            if (Files.isDirectory(c)) return c;
        }
        throw new AssertionError("configs/sparsity not found above " + Path.of("").toAbsolutePath());
    }

    static Set<Integer> range(int a, int b) {
        TreeSet<Integer> s = new TreeSet<>();
        for (int i = a; i <= b; i++) s.add(i);
        return s;
    }

    static Set<Integer> union(Set<Integer>... sets) {
        TreeSet<Integer> s = new TreeSet<>();
        for (Set<Integer> x : sets) s.addAll(x);
        return s;
    }

    record Expect(String file, LlamaConfig model, double start, double mlp, Set<Integer> mlpLayers,
                  double attn, Set<Integer> attnLayers) {}

    @Test
    void publishedConfigsMatchSpecTable() {
        Set<Integer> a14 = union(range(14, 19), range(21, 23), range(25, 29));
        Set<Integer> a17 = union(range(17, 19), range(21, 23), range(25, 29));
        List<Expect> expects = List.of(
                new Expect("llama3-8b-math10k", LLAMA3_8B, 0.05, 0.99, range(3, 30), 0.75, a14),
                new Expect("llama3-8b-csr", LLAMA3_8B, 0.05, 0.97, range(17, 30), 0.2, a17),
                new Expect("llama3.1-8b-codefeedback", LLAMA3_8B, 0.05, 0.99, range(3, 30), 0.4, a14),
                new Expect("llama3.1-8b-arc-agi", LLAMA3_8B, 0.10, 0.9, range(16, 29), 0, Set.of()),
                new Expect("llama2-7b-math10k", LLAMA2_7B, 0.05, 0.9, range(13, 29), 0.6, a17),
                new Expect("llama2-13b-math10k", LLAMA2_13B, 0.05, 0.97, range(13, 36), 0.25, range(17, 36)));
        Path dir = configDir();
        for (Expect e : expects) {
            SparsityConfig c = SparsityConfig.load(dir.resolve(e.file + ".yaml"));
            assertEquals(e.start, c.startStep(), 0, e.file);
            assertEquals(1.0, c.endStep(), 0, e.file);
            assertEquals(8, c.rank(), e.file);
            assertTrue(c.skipOutputTokens(), e.file);
            assertEquals(SparsePlan.FrozenGrad.SLICED, c.frozenGrad(), e.file);
            SparsityConfig.Resolved r = c.resolve(e.model);
            for (int l = 0; l < e.model.numLayers(); l++) {
                assertEquals(e.mlpLayers.contains(l) ? e.mlp : 0, r.mlpRatio()[l], 0, e.file + " mlp layer " + l);
                assertEquals(e.attnLayers.contains(l) ? e.attn : 0, r.attnRatio()[l], 0, e.file + " attn layer " + l);
            }
            // first and last layers stay dense in every published config
            assertFalse(r.mlpSparse(0) || r.attentionSparse(0) || r.mlpSparse(e.model.numLayers() - 1), e.file);
        }
        SparsityConfig dense = SparsityConfig.load(dir.resolve("llama3-8b-dense.yaml"));
        assertTrue(dense.denseMode());
        assertFalse(dense.resolve(LLAMA3_8B).anySparse());
        // every other config shipped beside them parses too
        try (var files = Files.list(dir)) {
            for (Path f : files.filter(f -> f.toString().endsWith(".yaml")).toList()) SparsityConfig.load(f);
        } catch (java.io.IOException ex) {
            throw new AssertionError(ex);
        }
    }

    @Test
    void keptCounts() {
        SparsityConfig.Resolved r = SparsityConfig.load(configDir().resolve("llama3-8b-math10k.yaml")).resolve(LLAMA3_8B);
        assertEquals(143, r.keptMlp(3));          // floor(14336·0.01)
        assertEquals(14336, r.keptMlp(0));
        assertEquals(256, r.keptKv(14));          // floor(1024·0.25); Q keeps 4x that
        assertEquals(1024, r.keptKv(13));
        assertEquals(3, SparsityConfig.kept(10, 0.7));   // 10·0.3 is 2.9999999999999996 in binary
        assertEquals(1, SparsityConfig.kept(10, 0.99));  // guard k >= 1
    }

    @Test
    void ourKeysAndDefaults() {
        SparsityConfig c = SparsityConfig.parse("""
                mode: svd_4
                skip_output_tokens: false
                sparse_output_tokens: 0.25
                frozen_grad: cut
                sparsity:
                  model.layers.1.self_attn: 0.5
                """, "t.yaml");
        assertEquals(SparsityConfig.DEFAULT_START_STEP, c.startStep());
        assertEquals(1.0, c.endStep());
        assertEquals(4, c.rank());
        assertFalse(c.skipOutputTokens());
        assertEquals(0.25, c.sparseOutputTokens());
        assertEquals(SparsePlan.FrozenGrad.CUT, c.frozenGrad());
        SparsityConfig.Resolved r = c.resolve(shape(64, 128, 2, 4, 2));
        assertEquals(0.5, r.attnRatio()[1]);
        assertEquals(0, r.mlpRatio()[1]);
        // a written config reads back equal
        SparsityConfig back = SparsityConfig.parse(c.toYaml(), "back");
        assertEquals(c.sparsity(), back.sparsity());
        assertEquals(c.frozenGrad(), back.frozenGrad());
        assertEquals(c.sparseOutputTokens(), back.sparseOutputTokens());
        assertEquals(c.rank(), back.rank());
    }

    @Test
    void writeIsAtomicAndRoundTrips(@TempDir Path dir) throws Exception {
        SparsityConfig c = SparsityConfig.load(configDir().resolve("llama2-13b-math10k.yaml"));
        Path out = dir.resolve("x.yaml");
        c.write(out);
        SparsityConfig back = SparsityConfig.load(out);
        assertEquals(c.sparsity(), back.sparsity());
        assertEquals(c.startStep(), back.startStep());
        try (var files = Files.list(dir)) { assertEquals(1, files.count(), "no temp file left behind"); }
    }

    static void assertError(String yaml, String... fragments) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> SparsityConfig.parse(yaml, "bad.yaml").resolve(shape(64, 128, 4, 4, 2)));
        for (String f : fragments)
            assertTrue(e.getMessage().contains(f), "message '" + e.getMessage() + "' should contain '" + f + "'");
        assertTrue(e.getMessage().startsWith("bad.yaml"), e.getMessage());
    }

    @Test
    void validationErrorsNameKeyAndValue() {
        assertError("sparsity:\n  layers.4.mlp: 0.5\n", "layers.4.mlp", "layer 4", "4 layers");
        assertError("sparsity:\n  layers.1.attn: 0.5\n", "layers.1.attn", "unknown module");
        assertError("sparsity:\n  layers.1.mlp: 1.0\n", "layers.1.mlp", "1.0", "[0, 1)");
        assertError("sparsity:\n  layers.1.mlp: -0.1\n", "layers.1.mlp", "-0.1");
        assertError("sparsity:\n  layers.1.mlp: lots\n", "layers.1.mlp", "lots", "not a number");
        assertError("mode: svd_0\n", "mode", "svd_0", "rank");
        assertError("mode: svd_-3\n", "mode", "svd_-3");
        assertError("mode: topk\n", "mode", "topk");
        assertError("start_step: 1.5\n", "start_step", "1.5");
        assertError("start_step: 0.5\nend_step: 0.2\n", "end_step", "0.2");
        assertError("frozen_grad: none\n", "frozen_grad", "none");
        assertError("sparse_output_tokens: 2\n", "sparse_output_tokens", "2");
        assertError("skip_output_tokens: maybe\n", "skip_output_tokens", "maybe");
        assertError("sparsty:\n  layers.1.mlp: 0.5\n", "unknown key", "sparsty");
        assertError("sparsity:\n  layers.1.mlp: 0.5\n  model.layers.1.mlp: 0.6\n", "listed twice");
        assertError("- a\n- b\n", "mapping");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> SparsityConfig.load(Path.of("/nonexistent/cfg.yaml")));
        assertTrue(e.getMessage().contains("/nonexistent/cfg.yaml"));
    }

    @Test
    void denseModeIgnoresRatios() {
        SparsityConfig c = SparsityConfig.parse("mode: dense\nsparsity:\n  layers.1.mlp: 0.5\n", "d");
        assertFalse(c.resolve(shape(64, 128, 2, 4, 2)).anySparse());
    }

    @Test
    void denseWarmupWindow() {
        DenseWarmup w = new DenseWarmup(0.05, 1.0, 100);
        assertEquals(5, w.firstSparseStep());
        assertFalse(w.sparseAt(4));
        assertTrue(w.sparseAt(5));
        assertTrue(w.sparseAt(99));
        assertEquals(95, w.sparseStepCount());
        DenseWarmup arc = new DenseWarmup(0.1, 1.0, 30);    // 0.1·30 = 3.0000000000000004
        assertEquals(3, arc.firstSparseStep());
        assertTrue(arc.sparseAt(3));
        DenseWarmup window = new DenseWarmup(0.25, 0.5, 10); // [2.5, 5) -> steps 3, 4
        assertEquals(List.of(3, 4), IntStream.range(0, 10).filter(window::sparseAt).boxed().toList());
        assertFalse(new DenseWarmup(0, 0, 10).sparseAt(0));
        assertThrows(IllegalArgumentException.class, () -> new DenseWarmup(0.6, 0.5, 10));
    }
}
