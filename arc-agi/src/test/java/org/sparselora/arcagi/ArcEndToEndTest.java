package org.sparselora.arcagi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.cli.Main;

/**
 * The two commands end to end on the CPU with a tiny model: {@code arc pretrain} on generated tasks
 * (more than the 80 the split holds out), then {@code arc solve} on two tasks — with and without
 * test-time training — and the files both write. The model is far too small to solve anything; the
 * test checks the whole path and its outputs, not a score.
 */
class ArcEndToEndTest {

    @TempDir
    Path dir;

    /** A task whose rule is "mirror left-right": 3 demonstrations and one test, small random grids. */
    static String mirrorTask(SplittableRandom r, int tests) {
        StringBuilder sb = new StringBuilder("{\"train\": [");
        for (int i = 0; i < 3 + tests; i++) {
            if (i == 3) sb.append("], \"test\": [");
            else if (i > 0) sb.append(", ");
            int[][] g = ArcTokenizerTest.randomGrid(r, 4);
            int[][] m = new int[g.length][];
            for (int y = 0; y < g.length; y++) {
                m[y] = new int[g[y].length];
                for (int x = 0; x < g[y].length; x++) m[y][x] = g[y][g[y].length - 1 - x];
            }
            sb.append("{\"input\": ").append(java.util.Arrays.deepToString(g)).append(", \"output\": ").append(java.util.Arrays.deepToString(m)).append('}');
        }
        return sb.append("]}").toString();
    }

    record Run(int code, String out, String err) {}

    static Run run(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        PrintStream o = System.out, e = System.err;
        System.setOut(new PrintStream(out, true));
        System.setErr(new PrintStream(err, true));
        try {
            return new Run(Main.run(args), out.toString(), err.toString());
        } finally {
            System.setOut(o);
            System.setErr(e);
        }
    }

    @Test
    void pretrainThenSolveWithAndWithoutTestTimeTraining() throws Exception {
        SplittableRandom r = new SplittableRandom(11);
        Path arc1 = Files.createDirectories(dir.resolve("arc1")), arc2 = Files.createDirectories(dir.resolve("arc2")),
                tasks = Files.createDirectories(dir.resolve("tasks"));
        for (int i = 0; i < 84; i++) Files.writeString(arc1.resolve(String.format("%08x.json", i * 7919)), mirrorTask(r, 1));
        for (int i = 0; i < 3; i++) Files.writeString(arc2.resolve(String.format("f%07x.json", i)), mirrorTask(r, 1));
        Files.writeString(tasks.resolve("aaaa0001.json"), mirrorTask(r, 1));
        Files.writeString(tasks.resolve("aaaa0002.json"), mirrorTask(r, 2));

        Path model = dir.resolve("model");
        Run p = run("arc", "pretrain", "--arc1", arc1.toString(), "--arc2", arc2.toString(), "--out", model.toString(), "--preset", "tiny",
                "--steps", "4", "--seq-len", "256", "--batch-size", "2", "--log-every", "2", "--seed", "3");
        assertEquals(0, p.code(), p.err());
        assertTrue(p.err().contains("step 4/4"), p.err());
        for (String f : new String[] {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.jsonl", "loss.svg",
                "split.json", "pretrain.json"})
            assertTrue(Files.isRegularFile(model.resolve(f)), f);
        ObjectMapper m = new ObjectMapper();
        assertEquals(4, Files.readAllLines(model.resolve("metrics.jsonl")).size());
        JsonNode split = m.readTree(model.resolve("split.json").toFile());
        assertEquals(80, split.get("validation").size());
        assertEquals(4 + 3, split.get("train").size());
        assertEquals(4, m.readTree(model.resolve("pretrain.json").toFile()).get("steps").asInt());
        // a time budget ends the run early and still saves a model
        Path quick = dir.resolve("quick");
        Run q = run("arc", "pretrain", "--arc1", arc1.toString(), "--out", quick.toString(), "--preset", "tiny", "--steps", "100000",
                "--minutes", "0.0001", "--seq-len", "128", "--batch-size", "1");
        assertEquals(0, q.code(), q.err());
        int quickSteps = m.readTree(quick.resolve("pretrain.json").toFile()).get("steps").asInt();
        assertTrue(quickSteps >= 1 && quickSteps < 100000, "steps " + quickSteps);
        assertTrue(Files.isRegularFile(quick.resolve("model.safetensors")) && !Files.exists(quick.resolve(".weights-tmp")));
        // pretraining again into the same directory is refused, nothing overwritten
        Run again = run("arc", "pretrain", "--arc1", arc1.toString(), "--out", model.toString(), "--preset", "tiny", "--steps", "1");
        assertTrue(again.code() != 0 && again.err().contains("already holds a model"), again.err());

        Path out = dir.resolve("solve");
        Run s = run("arc", "solve", "--model", model.toString(), "--tasks", tasks.toString(), "--out", out.toString(), "--ttt-steps", "2",
                "--ttt-examples", "6", "--batch-size", "2", "--lora-r", "2", "--augmentations", "3", "--max-len", "256", "--lr", "1e-3");
        assertEquals(0, s.code(), s.err());
        assertTrue(s.out().contains("aaaa0001") && s.out().contains("aaaa0002") && s.out().contains("over 2 tasks"), s.out());
        JsonNode sub = m.readTree(out.resolve("submission.json").toFile());
        assertEquals(1, sub.get("aaaa0001").size());
        assertEquals(2, sub.get("aaaa0002").size(), "one entry per test input");
        for (JsonNode t : sub) for (JsonNode e : t) assertTrue(e.get("attempt_1").isArray() && e.get("attempt_2").isArray());
        JsonNode res = m.readTree(out.resolve("results.json").toFile());
        assertEquals(2, res.get("task_count").asInt());
        assertEquals(3, res.get("tests").asInt());
        JsonNode t1 = res.get("tasks").get("aaaa0001");
        assertTrue(t1.get("final_loss").isNumber() && t1.get("final_loss").asDouble() > 0, t1.toString());
        assertEquals(6, t1.get("ttt_examples").asInt());
        assertTrue(t1.get("ttt_seconds").asDouble() > 0 && t1.get("inference_seconds").asDouble() > 0);

        // SparseLoRA: the same training with layer 0's MLP half sparse from step 1 changes the last step's loss
        Path yaml = dir.resolve("sparse.yaml");
        Files.writeString(yaml, "start_step: 0.5\nend_step: 1.0\nmode: svd_4\nskip_output_tokens: true\nsparsity:\n  layers.0.mlp: 0.5\n");
        Path sparse = dir.resolve("solve-sparse");
        Run sp = run("arc", "solve", "--model", model.toString(), "--tasks", tasks.resolve("aaaa0001.json").toString(), "--out", sparse.toString(),
                "--ttt-steps", "2", "--ttt-examples", "6", "--batch-size", "2", "--lora-r", "2", "--augmentations", "1", "--max-len", "256", "--lr", "1e-3",
                "--sparsity", yaml.toString());
        assertEquals(0, sp.code(), sp.err());
        double sparseLoss = m.readTree(sparse.resolve("results.json").toFile()).get("tasks").get("aaaa0001").get("final_loss").asDouble();
        assertTrue(Double.isFinite(sparseLoss) && sparseLoss != t1.get("final_loss").asDouble(), sparseLoss + " vs " + t1);
        Files.writeString(yaml, "mode: svd_4\nsparsity:\n  layers.5.mlp: 0.5\n");
        Run bad = run("arc", "solve", "--model", model.toString(), "--tasks", tasks.toString(), "--out", dir.resolve("solve-bad").toString(),
                "--sparsity", yaml.toString());
        assertTrue(bad.code() != 0 && bad.err().contains("layer 5 does not exist"), bad.err());
        assertFalse(Files.exists(dir.resolve("solve-bad/results.json")));

        Path base = dir.resolve("solve-base");
        Run b = run("arc", "solve", "--model", model.toString(), "--tasks", tasks.resolve("aaaa0001.json").toString(), "--out", base.toString(),
                "--no-ttt", "--augmentations", "2", "--max-len", "256");
        assertEquals(0, b.code(), b.err());
        JsonNode rb = m.readTree(base.resolve("results.json").toFile()).get("tasks").get("aaaa0001");
        assertTrue(rb.get("final_loss").isNull() && rb.get("ttt_examples").asInt() == 0, rb.toString());

        // a task whose prompt does not fit the length limit is reported and scored 0, not cut
        Path tight = dir.resolve("solve-tight");
        Run tl = run("arc", "solve", "--model", model.toString(), "--tasks", tasks.resolve("aaaa0001.json").toString(), "--out", tight.toString(),
                "--no-ttt", "--augmentations", "2", "--max-len", "20");
        assertEquals(0, tl.code(), tl.err());
        JsonNode rt = m.readTree(tight.resolve("results.json").toFile()).get("tasks").get("aaaa0001");
        assertTrue(rt.get("error").asText().contains("no augmented prompt fits 20 tokens"), rt.toString());
        assertEquals(0.0, rt.get("score").asDouble());
    }

    @Test
    void aTextModelIsRefusedByName() throws Exception {
        Path model = Files.createDirectories(dir.resolve("text-model"));
        Files.writeString(model.resolve("config.json"), "{}");
        org.sparselora.actors.demo.DemoTokenizerFiles.ensure(model);
        Files.writeString(dir.resolve("t.json"), mirrorTask(new SplittableRandom(1), 1));
        Run s = run("arc", "solve", "--model", model.toString(), "--tasks", dir.resolve("t.json").toString(), "--out", dir.resolve("o").toString());
        assertTrue(s.code() != 0, s.err());
        assertTrue(s.err().contains("not the ARC grid tokenizer"), s.err());
        assertFalse(Files.exists(dir.resolve("o/submission.json")));
    }
}
