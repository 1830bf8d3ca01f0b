package org.sparselora.engine.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.FormatException;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.io.HfCheckpointWriter;

/** A full-parameter run's {@code model/} directory: the trained masters as an HF checkpoint, sharded, with the tokenizer. */
class FullCheckpointTest {
    static final CpuBackend be = new CpuBackend(2);

    @TempDir Path dir;

    @AfterAll
    static void close() { be.close(); }

    static FullTrainer trained(boolean tied) {
        PointwiseLlama m = new PointwiseLlama(be, 40, 16, 1, tied, !tied, 11);
        FullTrainer t = new FullTrainer(m, null, FullTrainerTest.opt(1e-2f, 0.1f, 1f), false);
        for (int s = 0; s < 2; s++) t.applyUpdate(s, t.computeGradients(FullTrainerTest.batch(40, 2, 5, s), s, false).outputTokens());
        return t;
    }

    @Test
    void shardedCheckpointLoadsBackWithTheTrainedTensorsAndACorrectIndex() throws IOException {
        try (FullTrainer t = trained(false)) {
            Path out = dir.resolve("model");
            long limit = 3000;   // embedding and head 2560 bytes each, the layer ~7 kB: a few shards
            HfCheckpointWriter.writeTrained(t.weights(), out, DType.F32, limit, null);
            assertFalse(Files.exists(out.resolve(HfCheckpoint.SINGLE)));
            JsonNode index = new ObjectMapper().readTree(out.resolve(HfCheckpoint.INDEX).toFile());
            JsonNode map = index.get("weight_map");
            Set<String> shards = new HashSet<>();
            long total = 0;
            TrainerState st = t.state();
            for (String n : t.names()) {
                assertTrue(map.has(n), "index maps " + n);
                shards.add(map.get(n).asText());
                total += 4L * st.tensors().get(n).length;
            }
            assertEquals(t.names().size(), map.size(), "nothing else in the index");
            assertEquals(total, index.get("metadata").get("total_size").asLong());
            assertTrue(shards.size() >= 3, "shards: " + shards);
            String of = String.format("-of-%05d\\.safetensors", shards.size());
            for (String s : shards) {
                assertTrue(s.matches("model-\\d{5}" + of), s);
                assertTrue(Files.size(out.resolve(s)) < limit + 1000, s + " respects the limit (plus its header)");
            }
            try (HfCheckpoint ck = HfCheckpoint.open(out)) {
                assertEquals(t.model().config(), ck.config());
                for (String n : t.names()) assertArrayEquals(st.tensors().get(n), ck.get(n).toFloats(), n);
            }
        }
    }

    @Test
    void smallModelsAreOneFileAndTiedHeadsAreNotWrittenTwice() {
        try (FullTrainer t = trained(true)) {
            Path out = dir.resolve("tied");
            HfCheckpointWriter.writeTrained(t.weights(), out, DType.F32, HfCheckpointWriter.DEFAULT_MAX_SHARD_BYTES, null);
            assertTrue(Files.isRegularFile(out.resolve(HfCheckpoint.SINGLE)));
            assertFalse(Files.exists(out.resolve(HfCheckpoint.INDEX)));
            try (HfCheckpoint ck = HfCheckpoint.open(out)) {
                assertFalse(ck.has("lm_head.weight"));
                assertArrayEquals(t.state().tensors().get("model.embed_tokens.weight"), ck.lmHead().toFloats());
            }
        }
    }

    @Test
    void tokenizerFilesComeAlong() throws IOException {
        Path tokDir = Files.createDirectories(dir.resolve("tok"));
        Files.writeString(tokDir.resolve("tokenizer.json"), "{\"model\": {}}");
        Files.writeString(tokDir.resolve("tokenizer_config.json"), "{}");
        Files.writeString(tokDir.resolve("unrelated.txt"), "x");
        Path bin = Files.write(dir.resolve("tok512.bin"), new byte[] {1, 2, 3});
        try (FullTrainer t = trained(true)) {
            Path a = dir.resolve("a"), b = dir.resolve("b"), c = dir.resolve("c");
            HfCheckpointWriter.writeTrained(t.weights(), a, DType.F32, 0, tokDir.resolve("tokenizer.json"));
            assertEquals("{\"model\": {}}", Files.readString(a.resolve("tokenizer.json")));
            assertTrue(Files.isRegularFile(a.resolve("tokenizer_config.json")));
            assertFalse(Files.exists(a.resolve("unrelated.txt")));
            HfCheckpointWriter.writeTrained(t.weights(), b, DType.F32, 0, bin);
            assertArrayEquals(new byte[] {1, 2, 3}, Files.readAllBytes(b.resolve("tokenizer.bin")));
            HfCheckpointWriter.writeTrained(t.weights(), c, DType.F32, 0, tokDir);
            assertTrue(Files.isRegularFile(c.resolve("tokenizer.json")));
            // a bad tokenizer path fails before anything is written; an existing directory stays as it was
            FormatException e = assertThrows(FormatException.class,
                    () -> HfCheckpointWriter.writeTrained(t.weights(), a, DType.F32, 0, dir.resolve("missing.json")));
            assertTrue(e.getMessage().contains("missing.json"), e.getMessage());
            Path txt = Files.writeString(dir.resolve("vocab.txt"), "x");
            assertThrows(RuntimeException.class, () -> HfCheckpointWriter.writeTrained(t.weights(), a, DType.F32, 0, txt));
            assertTrue(Files.isRegularFile(a.resolve("tokenizer_config.json")), "the failed write left the old directory");
            try (var ls = Files.list(dir)) {
                assertTrue(ls.noneMatch(p -> p.getFileName().toString().startsWith(".a.")), "no temporary directory is left");
            }
        }
    }
}
