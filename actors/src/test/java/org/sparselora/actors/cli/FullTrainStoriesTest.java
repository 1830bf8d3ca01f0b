package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Full-parameter fine-tuning on real data: llama2.c's stories260K (trained on children's stories)
 * trained in {@code mode: full} on Tiny Shakespeare packed as plain text, on the CPU. The last
 * {@value #HELD_OUT} documents of the file are held out (never trained on); their mean loss, scored
 * by {@code sparselora score}, must fall from the base model to the trained {@code OUTPUT_DIR/model}.
 */
@Tag("shared-data")
class FullTrainStoriesTest {
    static final int HELD_OUT = 200;

    @TempDir
    Path dir;

    @Test
    void fullFineTuningLowersTheHeldOutLoss() throws Exception {
        Path model = GenerateStoriesTest.shared("models/stories260K/stories260K.bin");
        Path tok = GenerateStoriesTest.shared("tokenizers/llama2c-tok512/tok512.bin");
        List<String> docs = Files.readAllLines(GenerateStoriesTest.shared("pretrain/tinyshakespeare.jsonl"));
        docs.removeIf(String::isBlank);
        Path train = Files.write(dir.resolve("train.jsonl"), docs.subList(0, docs.size() - HELD_OUT));
        Path held = Files.write(dir.resolve("held.jsonl"), docs.subList(docs.size() - HELD_OUT, docs.size()));

        double before = meanLoss(CliRunner.run("score", "--model", model.toString(), "--tokenizer", tok.toString(), "--data", held.toString()));
        Path job = Files.writeString(dir.resolve("job.yaml"), """
                name: stories-shakespeare-full
                mode: full
                model: %s
                tokenizer: %s
                data: {path: %s, format: text}
                optimizer: {lr: 0.002, weight_decay: 0.1}
                schedule: {type: cosine, warmup_steps: 10}
                steps: 60
                batch_size: 8
                seq_len: 256
                output_dir: %s
                seed: 1
                """.formatted(model, tok, train, dir.resolve("out")));
        CliRunner.Result t = CliRunner.run("train", "--config", job.toString());
        assertEquals(0, t.code(), t.out() + t.err());
        Path trained = dir.resolve("out/model");
        double after = meanLoss(CliRunner.run("score", "--model", trained.toString(), "--data", held.toString()));
        System.out.printf("stories260K full fine-tuning on Tiny Shakespeare: held-out (last %d documents) mean loss %.4f -> %.4f; %s%n",
                HELD_OUT, before, after, t.out().strip());
        assertTrue(after < before - 0.3, "held-out loss " + before + " -> " + after);
    }

    static double meanLoss(CliRunner.Result r) throws Exception {
        assertEquals(0, r.code(), r.err());
        String[] lines = r.out().strip().split("\n");
        return new ObjectMapper().readTree(lines[lines.length - 1]).get("mean_loss").asDouble();
    }
}
