package org.sparselora.engine.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.backend.DType;

/** The golden-fixture loader on a fixture built here in the exporter's layout. */
class GoldenFixturesTest {

    @TempDir Path dir;

    private Path buildFixture(boolean withAllGrads) throws IOException {
        Path f = dir.resolve("llama");
        HfFormatsTest.MapSource src = HfFormatsTest.MapSource.randomBf16(HfFormatsTest.TINY, 21);
        HfCheckpointWriter.write(src, null, f.resolve("model"), DType.F32, 0, null);
        HfCheckpointWriter.write(src, null, f.resolve("model-bf16-sharded"), DType.BF16, 3000, null);
        AdapterFiles a = HfFormatsTest.randomAdapter(HfFormatsTest.TINY, 2, List.of("q_proj", "v_proj"), false, 22);
        PeftAdapter.write(f.resolve("adapter"), a);
        org.sparselora.engine.tokenizer.TokenizerTest.wordLevel(f);
        Files.writeString(f.resolve("inputs.json"), "{\"input_ids\": [[1, 5, 7], [0, 1, 3]], \"labels\": [[-100, 5, 7], [-100, -100, 3]],"
                + " \"attention_mask\": [[1, 1, 1], [0, 1, 1]], \"position_ids\": [[0, 1, 2], [0, 0, 1]]}");
        Files.createDirectories(f.resolve("score"));
        Files.writeString(f.resolve("score/texts.jsonl"), "{\"text\": \"cat\"}\n{\"text\": \"on mat .\"}\n");
        Files.writeString(f.resolve("score/ids.jsonl"), "{\"index\": 0, \"ids\": [1, 4]}\n{\"index\": 1, \"ids\": [1, 6, 7, 8]}\n");
        Files.writeString(f.resolve("score/expected.jsonl"),
                "{\"index\": 0, \"tokens\": 2, \"loss\": 3.5}\n{\"index\": 1, \"tokens\": 4, \"loss\": 2.5}\n");
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        LinkedHashMap<String, int[]> s = new LinkedHashMap<>();
        t.put("logits", new float[2 * 3 * 37]);
        s.put("logits", new int[] {2, 3, 37});
        t.put("loss", new float[] {3.25f});
        s.put("loss", new int[] {1});
        t.put("logits_base", new float[2 * 3 * 37]);
        s.put("logits_base", new int[] {2, 3, 37});
        t.put("loss_base", new float[] {4.5f});
        s.put("loss_base", new int[] {1});
        for (String k : a.tensors().keySet()) {
            if (!withAllGrads && k.contains("v_proj")) continue;
            t.put("grad." + k, a.tensors().get(k));
            s.put("grad." + k, a.shapes().get(k));
        }
        Safetensors.writeFloats(f.resolve("expected.safetensors"), t, s, DType.F32, Map.of());
        return f;
    }

    @Test
    void loadsAllPieces() throws IOException {
        Path f = buildFixture(true);
        try (GoldenFixtures g = GoldenFixtures.open(f)) {
            assertEquals(HfFormatsTest.TINY, g.model().config());
            assertEquals(DType.BF16, g.shardedModel().get("model.norm.weight").dtype());
            assertArrayEquals(new int[][] {{1, 5, 7}, {0, 1, 3}}, g.inputIds());
            assertArrayEquals(new int[][] {{1, 1, 1}, {0, 1, 1}}, g.attentionMask());
            assertArrayEquals(new int[][] {{0, 1, 2}, {0, 0, 1}}, g.positionIds());
            assertEquals(4.5f, g.lossBase());
            assertArrayEquals(new int[] {2, 3, 37}, g.logitsBase().shape());
            assertEquals(List.of("cat", "on mat ."), g.scoreTexts());
            assertArrayEquals(new int[] {1, 6, 7, 8}, g.scoreIds().get(1));
            assertEquals(new GoldenFixtures.ScoreLine(0, 2, 3.5), g.scoreExpected(false).get(0));
            assertThrows(FormatException.class, () -> g.scoreExpected(true));
            assertArrayEquals(new int[][] {{-100, 5, 7}, {-100, -100, 3}}, g.labels());
            assertArrayEquals(new int[] {2, 3, 37}, g.logits().shape());
            assertEquals(3.25f, g.loss());
            assertEquals(g.adapter().tensors().keySet(), g.grads().keySet());
            String k = PeftAdapter.loraBName(1, "v_proj");
            assertArrayEquals(g.adapter().tensors().get(k), g.grads().get(k).toFloats());
            assertTrue(Files.isRegularFile(g.tokenizerJson()));
            GoldenFormatChecks.verify(g);
        }
    }

    @Test
    void formatChecksCatchATokenizerMismatch() throws IOException {
        Path f = buildFixture(true);
        Files.writeString(f.resolve("score/ids.jsonl"), "{\"index\": 0, \"ids\": [1, 5]}\n{\"index\": 1, \"ids\": [1, 6, 7, 8]}\n");
        try (GoldenFixtures g = GoldenFixtures.open(f)) {
            assertThrows(AssertionError.class, () -> GoldenFormatChecks.verify(g));
        }
    }

    @Test
    void incompleteFixturesFailNamingThePiece() throws IOException {
        Path f = buildFixture(false);
        FormatException e = assertThrows(FormatException.class, () -> GoldenFixtures.open(f));
        assertTrue(e.getMessage().contains("has 4 gradients for 8 adapter tensors"), e.getMessage());
        Files.delete(f.resolve("inputs.json"));
        e = assertThrows(FormatException.class, () -> GoldenFixtures.open(f));
        assertTrue(e.getMessage().contains("lacks inputs.json"), e.getMessage());
        assertThrows(IllegalStateException.class, () -> GoldenFixtures.fromClasspath("no-such-family"));
    }
}
