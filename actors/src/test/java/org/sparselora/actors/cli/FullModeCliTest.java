package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.pipeline.MetricsLog;
import org.sparselora.engine.io.HfCheckpoint;

/**
 * {@code sparselora train} in {@code mode: full} as a user runs it, on the tiny-1m preset drawn at
 * random with the golden tokenizer and a small text file: progress and metrics as in LoRA mode, the
 * trained model written to {@code OUTPUT_DIR/model/} (a HF directory with the tokenizer) that
 * {@code score}, {@code generate} and a LoRA {@code train} load; {@code --stop-after} + {@code --resume}
 * ends with the uninterrupted run's weights, byte for byte.
 */
class FullModeCliTest {

    @TempDir
    static Path dir;
    static Path data;

    @BeforeAll
    static void setUp() throws Exception {
        StringBuilder b = new StringBuilder();
        String[] words = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"};
        for (int i = 0; i < 30; i++) {
            StringBuilder t = new StringBuilder();
            for (int k = 0; k < 12; k++) t.append(words[(i * 7 + k * 3) % words.length]).append(' ');
            b.append("{\"text\": \"").append(t.toString().strip()).append("\"}\n");
        }
        data = Files.writeString(dir.resolve("text.jsonl"), b.toString());
    }

    static Path job(String name, int steps, int workers, int checkpointEvery) throws Exception {
        Path f = dir.resolve(name + ".yaml");
        Files.writeString(f, """
                name: %s
                mode: full
                model: random:tiny-1m
                tokenizer: %s
                data: {path: %s, format: text}
                optimizer: {lr: 0.01, weight_decay: 0.1}
                schedule: {type: cosine, warmup_steps: 1}
                steps: %d
                batch_size: 2
                seq_len: 16
                workers: %d
                output_dir: %s
                checkpoint_every: %d
                seed: 3
                """.formatted(name, EngineCommandsTest.golden("llama/tokenizer.json"), data, steps, workers, dir.resolve("out-" + name), checkpointEvery));
        return f;
    }

    @Test
    void fullModeTrainsShowsProgressAndWritesALoadableModel() throws Exception {
        CliRunner.Result r = CliRunner.run("train", "--config", job("full", 4, 1, 0).toString());
        assertEquals(0, r.code(), r.out() + r.err());
        assertTrue(r.out().startsWith("finished at step 4, loss "), r.out());
        assertTrue(r.err().contains("tok/s") && r.err().contains("loss ") && r.err().contains("4/4"), r.err());
        Path out = dir.resolve("out-full");
        assertEquals(4, Files.readAllLines(out.resolve(MetricsLog.FILE)).size());
        assertTrue(Files.size(out.resolve("loss.svg")) > 0);
        assertFalse(Files.exists(out.resolve("adapter")), "full mode writes no adapter");
        Path m = out.resolve("model");
        for (String f : List.of("config.json", "model.safetensors", "tokenizer.json")) assertTrue(Files.isRegularFile(m.resolve(f)), f);
        try (HfCheckpoint ck = HfCheckpoint.open(m)) {
            assertEquals(128, ck.config().hiddenSize());
            assertEquals(300, ck.config().vocabSize(), "the preset takes the tokenizer's vocabulary");
        }

        CliRunner.Result score = CliRunner.run("score", "--model", m.toString(), "--data", data.toString());
        assertEquals(0, score.code(), score.err());
        assertTrue(score.out().contains("\"mean_loss\""), score.out());

        CliRunner.Result gen = CliRunner.run("generate", "--model", m.toString(), "--prompt", "the cat", "--max-new-tokens", "5");
        assertEquals(0, gen.code(), gen.err());

        Path lora = dir.resolve("lora.yaml");
        Files.writeString(lora, """
                name: lora-on-full
                model: %s
                data: {path: %s, format: text}
                lora: {r: 4, alpha: 8, targets: [q, v]}
                steps: 2
                batch_size: 2
                seq_len: 16
                output_dir: %s
                """.formatted(m, data, dir.resolve("out-lora")));
        CliRunner.Result t = CliRunner.run("train", "--config", lora.toString());
        assertEquals(0, t.code(), t.out() + t.err());
        assertTrue(Files.isRegularFile(dir.resolve("out-lora/adapter/adapter_model.safetensors")));
    }

    @Test
    void stopAfterAndResumeEndWithTheUninterruptedWeightsByteForByte() throws Exception {
        assertEquals(0, CliRunner.run("train", "--config", job("ref", 6, 1, 0).toString()).code());
        byte[] expected = Files.readAllBytes(dir.resolve("out-ref/model/model.safetensors"));

        Path j = job("parts", 6, 1, 0);
        CliRunner.Result first = CliRunner.run("train", "--config", j.toString(), "--stop-after", "3");
        assertEquals(0, first.code(), first.out() + first.err());
        assertTrue(Files.exists(dir.resolve("out-parts/checkpoint/checkpoint.pb")));
        CliRunner.Result rest = CliRunner.run("train", "--config", j.toString(), "--resume");
        assertEquals(0, rest.code(), rest.out() + rest.err());
        assertTrue(rest.out().startsWith("finished at step 6"), rest.out());
        assertArrayEquals(expected, Files.readAllBytes(dir.resolve("out-parts/model/model.safetensors")), "resumed weights differ");
        assertEquals(6, Files.readAllLines(dir.resolve("out-parts").resolve(MetricsLog.FILE)).size(), "every step once");
    }

    @Test
    void twoWorkersSumTheirGradientsThroughTheExchange() throws Exception {
        CliRunner.Result r = CliRunner.run("train", "--config", job("two", 3, 2, 0).toString());
        assertEquals(0, r.code(), r.out() + r.err());
        assertTrue(Files.isRegularFile(dir.resolve("out-two/model/model.safetensors")));
    }
}
