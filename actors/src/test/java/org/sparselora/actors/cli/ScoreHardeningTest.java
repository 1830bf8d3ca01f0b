package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.io.Safetensors;

/**
 * {@code score} never reports a number it did not compute: a record too short to score is listed
 * as skipped and left out of the mean (not averaged in as 0), a line with content after its JSON
 * object is reported with its number, and a NaN loss (weights with a NaN) is exit status 1.
 */
class ScoreHardeningTest {

    static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;

    private static List<JsonNode> lines(String out) throws Exception {
        List<JsonNode> l = new java.util.ArrayList<>();
        for (String s : out.strip().split("\n")) l.add(JSON.readTree(s));
        return l;
    }

    @Test
    void shortRecordsAreSkippedNotAveragedInAndTrailingGarbageIsReported() throws Exception {
        String real = Files.readAllLines(EngineCommandsTest.golden("llama/score/texts.jsonl")).get(0);
        Path data = Files.write(dir.resolve("d.jsonl"), List.of("{\"text\": \"\"}", real, real + " trailing"));
        CliRunner.Result r = CliRunner.run("score", "--model", EngineCommandsTest.golden("llama/model").toString(), "--data", data.toString(), "--max-tokens", "20");
        assertEquals(0, r.code(), r.err());
        List<JsonNode> got = lines(r.out());
        assertEquals(3, got.size(), r.out());
        assertTrue(got.get(0).has("skipped") && !got.get(0).has("loss"), r.out());
        double only = got.get(1).get("loss").asDouble();
        assertEquals(1, got.get(2).get("records").asInt());
        assertEquals(1, got.get(2).get("skipped").asInt());
        assertEquals(only, got.get(2).get("mean_loss").asDouble(), 0, "the mean is the one real record's loss");
        assertTrue(r.err().contains("line 3: not valid JSON"), r.err());
        assertTrue(r.err().contains("line 1: 1 token(s), nothing to predict"), r.err());
    }

    @Test
    void aNonFiniteLossIsAnErrorUnlessAllowed() throws Exception {
        Path model = Files.createDirectories(dir.resolve("nan-model"));
        Path golden = EngineCommandsTest.golden("llama/model");
        try (var files = Files.list(golden)) {
            for (Path f : files.toList()) if (!f.getFileName().toString().equals("model.safetensors")) Files.copy(f, model.resolve(f.getFileName()));
        }
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        Map<String, int[]> shapes = new LinkedHashMap<>();
        try (Safetensors st = Safetensors.open(golden.resolve("model.safetensors"))) {
            for (HostTensor x : st.tensors().values()) {
                t.put(x.name(), x.toFloats());
                shapes.put(x.name(), x.shape());
            }
        }
        t.get("model.norm.weight")[0] = Float.NaN;
        Safetensors.writeFloats(model.resolve("model.safetensors"), t, shapes, DType.F32, Map.of("format", "pt"));
        Path data = Files.write(dir.resolve("d.jsonl"), List.of(Files.readAllLines(EngineCommandsTest.golden("llama/score/texts.jsonl")).get(0)));
        CliRunner.Result r = CliRunner.run("score", "--model", model.toString(), "--data", data.toString(), "--max-tokens", "20");
        assertEquals(1, r.code(), r.out() + r.err());
        assertTrue(r.err().contains("not a finite number") && r.err().contains("--allow-nonfinite"), r.err());
        assertFalse(r.err().contains("\tat "), r.err());
        CliRunner.Result ok = CliRunner.run("score", "--model", model.toString(), "--data", data.toString(), "--max-tokens", "20", "--allow-nonfinite");
        assertEquals(0, ok.code(), ok.err());
    }
}
