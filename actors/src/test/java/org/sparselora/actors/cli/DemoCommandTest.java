package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code sparselora demo} end to end on a tiny base recipe and a few steps (seconds): both jobs go
 * through the pipeline and leave their files; the table and summary.json agree with each other and
 * with the runs' metrics.jsonl; fine-tuning lowers the held-out loss below the base model's. (That
 * exact match rises from 0 to ~1 needs the real base model and ~80 steps: the demo itself shows it.)
 */
class DemoCommandTest {

    @TempDir Path dir;

    private static final ObjectMapper JSON = new ObjectMapper();

    @AfterEach
    void dropPredictorFactors() throws IOException {
        // the provider caches SVD factors under ~/.cache/sparselora/predictors, named by model path: remove this test's
        String key = dir.toAbsolutePath().normalize().toString().replaceAll("[^A-Za-z0-9._-]", "_");
        Path pred = DemoCommand.defaultCache().resolve("predictors");
        if (!Files.isDirectory(pred)) return;
        try (Stream<Path> s = Files.list(pred)) {
            for (Path p : s.filter(p -> p.getFileName().toString().startsWith(key)).toList()) Files.deleteIfExists(p);
        }
    }

    @Test
    void runsBothJobsAndReportsConsistently() throws Exception {
        Path out = dir.resolve("out"), cache = dir.resolve("cache");
        int steps = 10;
        CliRunner.Result r = CliRunner.run("demo", "--out", out.toString(), "--cache", cache.toString(), "--steps", Integer.toString(steps),
                "--base-recipe", "2x10", "--batch-size", "8", "--train-examples", "256", "--eval-examples", "24");
        assertEquals(0, r.code(), r.err() + r.out());

        for (String f : List.of("data/shift_train.jsonl", "data/shift_eval.jsonl", "sparsity.yaml", "dense.yaml", "sparse.yaml", "summary.json",
                "dense/metrics.jsonl", "dense/checkpoint/checkpoint.pb", "dense/adapter/adapter_model.safetensors",
                "dense/adapter/adapter_config.json", "sparse/metrics.jsonl", "sparse/checkpoint/checkpoint.pb",
                "sparse/adapter/adapter_model.safetensors", "adapter/adapter_model.safetensors", "adapter/adapter_config.json"))
            assertTrue(Files.isRegularFile(out.resolve(f)), "missing " + f + "\n" + r.err());
        assertEquals(256, Files.readAllLines(out.resolve("data/shift_train.jsonl")).size());
        assertEquals(24, Files.readAllLines(out.resolve("data/shift_eval.jsonl")).size());
        // DIR/adapter is the SparseLoRA adapter, byte for byte, and differs from the dense one
        byte[] a = Files.readAllBytes(out.resolve("adapter/adapter_model.safetensors"));
        assertArrayEquals(Files.readAllBytes(out.resolve("sparse/adapter/adapter_model.safetensors")), a);
        assertTrue(!Arrays.equals(Files.readAllBytes(out.resolve("dense/adapter/adapter_model.safetensors")), a));
        // the base model directory is an ordinary model dir with the HF tokenizer next to the weights
        Path base = Path.of(JSON.readTree(Files.readString(out.resolve("dense.yaml")).replaceAll("(?m)^#.*$", "").lines()
                .filter(l -> l.startsWith("model:")).findFirst().map(l -> "\"" + l.substring(6).trim() + "\"").orElseThrow()).asText());
        assertTrue(base.startsWith(cache.toAbsolutePath()), base.toString());
        assertTrue(Files.isRegularFile(base.resolve("tokenizer.json")) && Files.isRegularFile(base.resolve("config.json")));

        List<JsonNode> dense = rows(out.resolve("dense/metrics.jsonl")), sparse = rows(out.resolve("sparse/metrics.jsonl"));
        assertEquals(steps, dense.size());
        assertEquals(steps, sparse.size());
        assertTrue(dense.stream().noneMatch(n -> n.get("sparse").asBoolean()));
        // start_step 0.1 of 10 steps: step 1 dense, steps 2..10 sparse, with fewer FLOPs than dense
        List<Integer> phase = sparse.stream().filter(n -> n.get("sparse").asBoolean()).map(n -> n.get("step").asInt()).toList();
        assertEquals(List.of(2, 3, 4, 5, 6, 7, 8, 9, 10), phase);
        for (JsonNode n : sparse.subList(1, steps)) assertTrue(n.get("flops").asLong() < n.get("dense_flops").asLong(), n.toString());
        // same seed, data and first (dense) step: the two runs start identically
        assertEquals(dense.get(0).get("loss").asDouble(), sparse.get(0).get("loss").asDouble(), 0.0);

        JsonNode s = JSON.readTree(out.resolve("summary.json").toFile());
        assertEquals(steps, s.get("steps").asInt());
        assertEquals("sparse steps", s.get("headline_phase").asText());
        JsonNode sp = s.get("phases").get(1);
        assertEquals("sparse steps", sp.get("name").asText());
        assertEquals(phase.size(), sp.get("step_numbers").size());
        double dMs = median(dense, phase), sMs = median(sparse, phase);
        assertEquals(dMs, sp.get("dense_ms_per_step").asDouble(), 1e-9);
        assertEquals(sMs, sp.get("sparse_ms_per_step").asDouble(), 1e-9);
        assertEquals(dMs / sMs, s.get("speedup").asDouble(), 1e-9);
        double sGf = mean(sparse, phase, "flops") / 1e9, sDgf = mean(sparse, phase, "dense_flops") / 1e9;
        assertEquals(sGf, sp.get("sparse_gflop_per_step").asDouble(), 1e-12);
        assertEquals(sDgf / sGf, s.get("flop_reduction").asDouble(), 1e-9);
        assertTrue(s.get("flop_reduction").asDouble() > 1.5, "the demo's sparse steps should need far fewer FLOPs: " + s);
        assertEquals(mean(dense, phase, "flops") / 1e9, sp.get("dense_gflop_per_step").asDouble(), 1e-12);
        assertEquals(out.resolve("adapter").toAbsolutePath().toString(), s.get("adapter").asText());
        JsonNode warm = s.get("phases").get(0);
        assertEquals("dense warm-up", warm.get("name").asText());
        assertEquals(1.0, warm.get("flop_reduction").asDouble(), 0.0);

        // learning happened: both adapters beat the base model on held-out words
        double baseLoss = s.get("base").get("eval_loss").asDouble();
        assertTrue(s.get("dense").get("eval_loss").asDouble() < baseLoss - 0.05, s.toString());
        assertTrue(s.get("sparse").get("eval_loss").asDouble() < baseLoss - 0.05, s.toString());

        // the printed tables carry the same numbers, the sparse steps in a row of their own
        String table = r.out();
        String sparseRow = table.lines().filter(l -> l.startsWith("sparse: 2-10 (9 steps)")).findFirst()
                .orElseThrow(() -> new AssertionError(table));
        assertTrue(sparseRow.contains(String.format(Locale.ROOT, "%.1f", dMs)) && sparseRow.contains(String.format(Locale.ROOT, "%.1f", sMs)), sparseRow);
        assertTrue(sparseRow.contains(String.format(Locale.ROOT, "%.2fx", dMs / sMs)), sparseRow);
        assertTrue(sparseRow.endsWith(String.format(Locale.ROOT, "%.2fx", sDgf / sGf)), sparseRow);
        assertTrue(table.lines().anyMatch(l -> l.startsWith("warm-up, dense: step 1 (1 step)")), table);
        assertTrue(table.contains(String.format(Locale.ROOT, "SparseLoRA on its 9 sparse steps: %.2fx fewer FLOPs and %.2fx the speed", sDgf / sGf, dMs / sMs)), table);
        assertTrue(table.contains(String.format(Locale.ROOT, "%.4f", s.get("sparse").get("eval_loss").asDouble())), table);
        assertTrue(table.contains(String.format(Locale.ROOT, "%.3f", s.get("base").get("exact_match").asDouble())), table);
        assertTrue(table.contains("device cpu") && r.err().contains("training on cpu (--device auto)"), r.err() + table);
        assertTrue(table.contains("adapter: " + out.resolve("adapter").toAbsolutePath()), table);
        assertTrue(r.err().contains("base model: built"), r.err());

        // a second run reuses the cached base model and overwrites its own outputs
        CliRunner.Result again = CliRunner.run("demo", "--out", out.toString(), "--cache", cache.toString(), "--steps", "2",
                "--base-recipe", "2x10", "--batch-size", "8", "--train-examples", "64", "--eval-examples", "8");
        assertEquals(0, again.code(), again.err());
        assertTrue(again.err().contains("base model: cached at " + base), again.err());
        assertEquals(2, rows(out.resolve("sparse/metrics.jsonl")).size());
    }

    @Test
    void badOptionsAreOneClearError() {
        CliRunner.Result r = CliRunner.run("demo", "--out", dir.resolve("o").toString(), "--steps", "0");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("--steps must be at least 1, got 0"), r.err());
        CliRunner.Result b = CliRunner.run("demo", "--out", dir.resolve("o").toString(), "--base-recipe", "3by40");
        assertEquals(2, b.code());
        assertTrue(b.err().contains("--base-recipe must be CYCLESxSTEPS"), b.err());
        CliRunner.Result m = CliRunner.run("demo", "--out", dir.resolve("o").toString(), "--mlp-sparsity", "1");
        assertEquals(2, m.code());
        assertTrue(m.err().contains("--mlp-sparsity and --attn-sparsity must be in [0, 1), got 1.0"), m.err());
        CliRunner.Result d = CliRunner.run("demo", "--out", dir.resolve("o").toString(), "--device", "gpu");
        assertEquals(2, d.code());
        assertTrue(d.err().contains("--device must be auto, or cpu, cuda") && d.err().contains("got 'gpu'"), d.err());
        assertTrue(!Files.exists(dir.resolve("o")), "nothing is written for bad options");
    }

    private static List<JsonNode> rows(Path f) throws IOException {
        return Files.readAllLines(f).stream().filter(l -> !l.isBlank()).map(l -> {
            try {
                return JSON.readTree(l);
            } catch (IOException e) {
                throw new AssertionError(f + ": " + l, e);
            }
        }).toList();
    }

    private static double median(List<JsonNode> run, List<Integer> phase) {
        double[] v = run.stream().filter(n -> phase.contains(n.get("step").asInt())).mapToDouble(n -> n.get("ms").asDouble()).sorted().toArray();
        return v.length % 2 == 1 ? v[v.length / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
    }

    private static double mean(List<JsonNode> run, List<Integer> phase, String field) {
        return run.stream().filter(n -> phase.contains(n.get("step").asInt())).mapToDouble(n -> n.get(field).asDouble()).average().orElseThrow();
    }
}
