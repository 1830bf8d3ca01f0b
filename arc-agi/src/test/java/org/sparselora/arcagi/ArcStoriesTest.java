package org.sparselora.arcagi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.cli.Main;

/**
 * The whole ARC test-time-training loop on real data from ../shared/data: a real ARC-AGI task,
 * the pretrained stories260K model (far too small to solve it: the test checks the loop — data,
 * training through the pipeline, adapter, two attempts, scoring — not the score).
 */
@Tag("shared-data")
class ArcStoriesTest {

    @TempDir
    Path dir;

    @Test
    void theArcCommandRunsTestTimeTrainingOnARealTask() throws Exception {
        Path shared = Path.of(System.getProperty("sparselora.shared", "../shared")).toAbsolutePath().normalize().resolve("data");
        Path model = shared.resolve("models/stories260K/stories260K.bin"), task = shared.resolve("arc-agi/training/6150a2bd.json");
        if (!Files.isRegularFile(model) || !Files.isRegularFile(task))
            throw new IllegalStateException("shared data missing under " + shared + ": pass -Dsparselora.shared=<dir holding data/>");
        java.io.ByteArrayOutputStream buf = new java.io.ByteArrayOutputStream();
        java.io.PrintStream old = System.out;
        System.setOut(new java.io.PrintStream(buf, true));
        int code;
        try {
            code = Main.run("arc", "--model", model.toString(), "--tokenizer", shared.resolve("tokenizers/llama2c-tok512/tok512.bin").toString(),
                    "--tasks", task.toString(), "--steps", "4", "--batch-size", "2", "--seq-len", "256", "--lora-r", "4", "--lr", "1e-3",
                    "--max-new-tokens", "24", "--out", dir.toString());
        } finally {
            System.setOut(old);
        }
        String out = buf.toString();
        assertEquals(0, code, out);
        String[] lines = out.strip().split("\n");
        assertTrue(lines[0].startsWith("{\"task\":\"6150a2bd\""), out);
        assertTrue(lines[0].contains("\"attempts\":[[") && lines[0].contains("\"solved\":["), out);
        assertTrue(lines[lines.length - 1].matches("\\{\"tasks\":1,\"tests\":1,\"pass@2\":[01](\\.0)?}"), out);
        assertTrue(Files.exists(dir.resolve("6150a2bd/run/checkpoint/checkpoint.pb")));
        assertEquals(4, Files.readAllLines(dir.resolve("6150a2bd/run/metrics.jsonl")).size());
    }
}
