package org.sparselora.engine.sparse;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
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

    record Expect(String file, LlamaConfig model, double start, boolean skipOutput, Map<Integer, Double> mlp,
                  Map<Integer, Double> attn) {}

    static Map<Integer, Double> at(double ratio, Set<Integer> layers) {
        Map<Integer, Double> m = new TreeMap<>();
        for (int l : layers) m.put(l, ratio);
        return m;
    }

    static Map<Integer, Double> plus(Map<Integer, Double> a, Map<Integer, Double> b) {
        Map<Integer, Double> m = new TreeMap<>(a);
        m.putAll(b);
        return m;
    }

    /** The twelve configs the reference publishes, loaded as shipped (summary keys, ratio-0 entries, quoted mode, True/False). */
    @Test
    void everyPublishedConfigLoadsAsShipped() {
        Set<Integer> a14 = union(range(14, 19), range(21, 23), range(25, 29));
        Set<Integer> a11 = union(range(17, 19), range(21, 23), range(25, 29));
        Map<Integer, Double> none = Map.of();
        List<Expect> expects = List.of(
                new Expect("llama3-8b-math10k", LLAMA3_8B, 0.05, true, at(0.99, range(3, 30)), at(0.75, a14)),
                new Expect("llama3-8b-csr", LLAMA3_8B, 0.05, true, at(0.97, range(17, 30)), at(0.2, a11)),
                new Expect("llama3-8b-glue", LLAMA3_8B, 0.05, false, plus(at(0.95, range(17, 30)), at(0.5, Set.of(31))), at(0.75, range(17, 29))),
                new Expect("llama3.1-8b-codefeedback", LLAMA3_8B, 0.05, true, at(0.99, range(3, 30)), at(0.4, a14)),
                new Expect("llama3.1-8b-arc-agi", LLAMA3_8B, 0.10, true, at(0.9, range(16, 29)), none),
                new Expect("llama2-7b-math10k", LLAMA2_7B, 0.05, true, at(0.9, range(13, 29)), at(0.6, a11)),
                new Expect("llama2-7b-csr", LLAMA2_7B, 0.05, true, at(0.9, range(13, 29)), at(0.5, a11)),
                new Expect("llama2-7b-codefeedback", LLAMA2_7B, 0.05, true, at(0.99, range(3, 30)), at(0.25, a14)),
                new Expect("llama2-13b-math10k", LLAMA2_13B, 0.05, true, at(0.97, range(13, 36)), at(0.25, range(17, 36))),
                new Expect("llama2-13b-csr", LLAMA2_13B, 0.10, true, at(0.97, range(13, 36)), at(0.2, range(17, 36))));
        Path dir = configDir();
        for (Expect e : expects) {
            SparsityConfig c = SparsityConfig.load(dir.resolve(e.file + ".yaml"));
            assertEquals(e.start, c.startStep(), 0, e.file);
            assertEquals(1.0, c.endStep(), 0, e.file);
            assertEquals(8, c.rank(), e.file);
            assertEquals(e.skipOutput, c.skipOutputTokens(), e.file);
            assertEquals(SparsePlan.FrozenGrad.SLICED, c.frozenGrad(), e.file);
            // the reference lists every layer, dense ones with ratio 0
            assertEquals(2 * e.model.numLayers(), c.sparsity().size(), e.file);
            SparsityConfig.Resolved r = c.resolve(e.model);
            for (int l = 0; l < e.model.numLayers(); l++) {
                assertEquals(e.mlp.getOrDefault(l, 0.0), r.mlpRatio()[l], 0, e.file + " mlp layer " + l);
                assertEquals(e.attn.getOrDefault(l, 0.0), r.attnRatio()[l], 0, e.file + " attn layer " + l);
            }
            assertFalse(r.mlpSparse(0) || r.attentionSparse(0), e.file + ": layer 0 stays dense");
        }
        for (var dense : List.of(Map.entry("llama2-7b-dense", LLAMA2_7B), Map.entry("llama2-13b-dense", LLAMA2_13B),
                Map.entry("llama3-8b-dense", LLAMA3_8B))) {
            SparsityConfig c = SparsityConfig.load(dir.resolve(dense.getKey() + ".yaml"));
            assertTrue(c.denseMode(), dense.getKey());
            assertFalse(c.anySparseLayer(), dense.getKey());
            assertFalse(c.resolve(dense.getValue()).anySparse(), dense.getKey());
        }
        // every file shipped there is one of these or one of our own (the ARC base models'), and each of
        // the reference's files carries its attribution
        List<String> ours = List.of("arc-base.yaml", "arc-small.yaml", "llama3-8b-dense.yaml");
        try (var files = Files.list(dir)) {
            List<String> names = files.map(f -> f.getFileName().toString()).filter(f -> f.endsWith(".yaml")).sorted().toList();
            assertEquals(15, names.size(), names.toString());
            for (String n : names) {
                String text = Files.readString(dir.resolve(n));
                if (!ours.contains(n))
                    assertTrue(text.startsWith("# Published SparseLoRA config") && text.contains("configs/sparsity/" + n), n);
                else
                    assertTrue(SparsityConfig.load(dir.resolve(n)) != null, n);
            }
        } catch (java.io.IOException ex) {
            throw new AssertionError(ex);
        }
    }

    @Test
    void summariesMustMatchThePerLayerValues() {
        String layers = "sparsity:\n  layers.0.mlp: 0\n  layers.1.mlp: 0.9\n  layers.2.mlp: 0.9\n  layers.3.mlp: 0.5\n"
                + "  layers.1.self_attn: 0.25\n  layers.2.self_attn: 0\n";
        SparsityConfig ok = SparsityConfig.parse("ffn_sparsity: \"ffn=0.9x2-0.5x1\"\nqkvo_sparsity: \"qkv=0.25x1\"\n" + layers, "ok.yaml");
        assertEquals(0.5, ok.resolve(shape(64, 128, 4, 4, 2)).mlpRatio()[3]);
        // the order of the groups does not matter
        SparsityConfig.parse("ffn_sparsity: ffn=0.5x1-0.9x2\n" + layers, "ok.yaml");
        assertError("ffn_sparsity: \"ffn=0.9x3\"\n" + layers, "ffn_sparsity", "ffn=0.9x3", "does not match",
                "2 at 0.9 + 1 at 0.5", "3 at 0.9");
        assertError("qkvo_sparsity: \"qkv=0\"\n" + layers, "qkvo_sparsity", "qkv=0", "1 at 0.25 self_attn", "says no");
        assertError("qkvo_sparsity: \"qkv=0.25x1\"\nsparsity:\n  layers.1.self_attn: 0.3\n", "does not match");
        assertError("ffn_sparsity: \"qkv=0.9x2\"\n" + layers, "ffn_sparsity", "'ffn=<ratio>x<layers>");
        assertError("ffn_sparsity: \"ffn=0.9\"\n" + layers, "ffn_sparsity", "without its layer count");
        assertError("ffn_sparsity: \"ffn=lots\"\n" + layers, "ffn_sparsity", "'lots'");
        assertError("ffn_sparsity: 3\n" + layers, "ffn_sparsity", "not a string");
        // "qkv=0" with no sparse attention, and no summary at all, are both fine
        SparsityConfig.parse("qkvo_sparsity: qkv=0\nsparsity:\n  layers.1.mlp: 0.5\n", "ok.yaml");
    }

    @Test
    void theConstructorValidatesWhoeverBuildsAConfig() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new SparsityConfig(0.5, 0.2, 8, true, 0,
                SparsePlan.FrozenGrad.SLICED, Map.of(), "job"));
        assertTrue(e.getMessage().startsWith("job: end_step = 0.2"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new SparsityConfig(0, 1, 8, true, 0,
                SparsePlan.FrozenGrad.SLICED, Map.of("layers.1.mlp", 1.5), "job"));
        assertTrue(e.getMessage().contains("sparsity.layers.1.mlp = 1.5"), e.getMessage());
    }

    @Test
    void denseModeOrNoRatioMeansNoSparseStep() {
        assertFalse(DenseWarmup.of(SparsityConfig.parse("mode: dense\nsparsity:\n  layers.1.mlp: 0.5\n", "d"), 10).anySparse());
        assertFalse(DenseWarmup.of(SparsityConfig.parse("sparsity:\n  layers.1.mlp: 0\n", "d"), 10).anySparse());
        DenseWarmup w = DenseWarmup.of(SparsityConfig.parse("start_step: 0.2\nsparsity:\n  layers.1.mlp: 0.5\n", "d"), 10);
        assertEquals(List.of(2, 3, 4, 5, 6, 7, 8, 9), IntStream.range(0, 10).filter(w::sparseAt).boxed().toList());
        assertEquals(8, w.sparseStepCount());
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
        assertError("sparsty:\n  layers.1.mlp: 0.5\n", "unknown key", "sparsty", "ffn_sparsity");
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
        DenseWarmup w = DenseWarmup.of(0.05, 1.0, 100);
        assertEquals(5, w.firstSparseStep());
        assertFalse(w.sparseAt(4));
        assertTrue(w.sparseAt(5));
        assertTrue(w.sparseAt(99));
        assertEquals(95, w.sparseStepCount());
        DenseWarmup arc = DenseWarmup.of(0.1, 1.0, 30);    // 0.1·30 = 3.0000000000000004
        assertEquals(3, arc.firstSparseStep());
        assertTrue(arc.sparseAt(3));
        DenseWarmup window = DenseWarmup.of(0.25, 0.5, 10); // [2.5, 5) -> steps 3, 4
        assertEquals(List.of(3, 4), IntStream.range(0, 10).filter(window::sparseAt).boxed().toList());
        assertFalse(DenseWarmup.of(0, 0, 10).sparseAt(0));
        assertThrows(IllegalArgumentException.class, () -> DenseWarmup.of(0.6, 0.5, 10));
    }
}
