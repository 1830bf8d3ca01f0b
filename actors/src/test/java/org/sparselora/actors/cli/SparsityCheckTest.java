package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.engine.ModelPresets;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.sparse.FlopCount;
import org.sparselora.engine.sparse.SparsityConfig;

/** {@code sparselora sparsity check}: every published config validates; the figures are the FLOP model's. */
class SparsityCheckTest {

    @TempDir
    Path tmp;

    static Path configDir() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            Path c = p.resolve("configs/sparsity");
            if (Files.isDirectory(c)) return c;
        }
        throw new AssertionError("configs/sparsity not found");
    }

    @Test
    void everyShippedConfigChecksAgainstItsModel() throws Exception {
        try (var files = Files.list(configDir())) {
            for (Path f : files.filter(p -> p.toString().endsWith(".yaml")).sorted().toList()) {
                String name = f.getFileName().toString();
                String preset = name.startsWith("llama2-13b") ? "llama2-13b" : name.startsWith("llama2-7b") ? "llama2-7b"
                        : name.startsWith("llama3.1-8b") ? "llama3.1-8b" : "llama3-8b";
                CliRunner.Result r = CliRunner.run("sparsity", "check", f.toString(), "--preset", preset);
                assertEquals(0, r.code(), name + ": " + r.err());
                assertTrue(r.out().startsWith(f + ": valid"), r.out());
            }
        }
    }

    @Test
    void printsTheSparseLayersPerKindAndTheFlopModelsReduction() {
        Path cfg = configDir().resolve("llama3-8b-math10k.yaml");
        CliRunner.Result r = CliRunner.run("sparsity", "check", cfg.toString(), "--preset", "llama3-8b", "--seq-len", "256", "--batch", "2",
                "--output-tokens", "64");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("mlp:       28 sparse layers: 3-30 at 0.99 (keeps 143 of 14336 channels)"), r.out());
        assertTrue(r.out().contains("attention: 14 sparse layers: 14-19, 21-23, 25-29 at 0.75 (keeps 256 of 1024 KV channels)"), r.out());
        assertTrue(r.out().contains("384 of 512 tokens on the kept channels"), r.out());
        // the printed MLP figure is FlopCount's: 384 sparse tokens, 128 dense (the output tokens)
        var shape = ModelPresets.of("llama3-8b");
        SparsityConfig c = SparsityConfig.load(cfg);
        var mlp = EnumSet.of(Projection.GATE, Projection.UP, Projection.DOWN);
        long dense = FlopCount.frozen(shape, null, mlp, 0, 512, c.frozenGrad());
        long sparse = FlopCount.frozen(shape, c.resolve(shape), mlp, 384, 128, c.frozenGrad());
        assertTrue(sparse < dense / 2, "28 of 32 MLPs run 3 in 4 tokens on 1% of their channels");
        String expect = String.format(Locale.ROOT, "mlp        dense %.3e  sparse step %.3e  %.2fx fewer on a sparse step",
                (double) dense, (double) sparse, (double) dense / sparse);
        assertTrue(r.out().contains(expect), expect + "\n" + r.out());
        // glue: two MLP ratios, and skip_output_tokens false puts every token on the kept channels
        r = CliRunner.run("sparsity", "check", configDir().resolve("llama3-8b-glue.yaml").toString(), "--preset", "llama3-8b",
                "--output-tokens", "16");
        assertTrue(r.out().contains("mlp:       15 sparse layers: 17-30 at 0.95 (keeps 716 of 14336 channels); 31 at 0.5"), r.out());
        assertTrue(r.out().contains("512 of 512 tokens"), r.out());
    }

    @Test
    void withoutAModelOnlyTheFileIsChecked() {
        CliRunner.Result r = CliRunner.run("sparsity", "check", configDir().resolve("llama3.1-8b-arc-agi.yaml").toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("mlp:       14 sparse layers: 16-29 at 0.9"), r.out());
        assertTrue(r.out().contains("attention: none sparse"), r.out());
        assertFalse(r.out().contains("FLOPs of one"), r.out());
    }

    @Test
    void aBadFileOrShapeFailsWithOneLineNamingIt() throws Exception {
        Path bad = tmp.resolve("bad.yaml");
        Files.writeString(bad, "ffn_sparsity: ffn=0.9x3\nsparsity:\n  layers.1.mlp: 0.9\n");
        for (List<String> args : List.of(
                List.of("sparsity", "check", bad.toString()),
                List.of("sparsity", "check", configDir().resolve("llama2-13b-math10k.yaml").toString(), "--preset", "llama3-8b"),
                List.of("sparsity", "check", bad.toString(), "--preset", "llama9"),
                List.of("sparsity", "check", tmp.resolve("missing.yaml").toString()))) {
            CliRunner.Result r = CliRunner.run(args.toArray(String[]::new));
            assertEquals(2, r.code(), args + ": " + r.out());
            assertTrue(r.err().startsWith("sparselora sparsity check: "), r.err());
            assertEquals(1, r.err().strip().lines().count(), r.err());
            assertEquals("", r.out(), "nothing printed before the error");
        }
        CliRunner.Result r = CliRunner.run("sparsity", "check", bad.toString());
        assertTrue(r.err().contains("bad.yaml: ffn_sparsity = 'ffn=0.9x3' does not match"), r.err());
        r = CliRunner.run("sparsity", "check", configDir().resolve("llama2-13b-math10k.yaml").toString(), "--preset", "llama3-8b");
        assertTrue(r.err().contains("layer 32 does not exist"), r.err());
    }
}
