package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.generate.Generator;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.io.PeftAdapter;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.tokenizer.Tokenizers;

/**
 * eval and merge through the CLI on the tiny golden Llama: eval's accuracy counts exactly the
 * records whose expected answer is the model's own greedy answer (half of them here), skips records
 * it cannot evaluate; merge writes a checkpoint whose logits equal base + adapter.
 */
class EvalMergeCommandsTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;

    static Path golden(String rel) { return EngineCommandsTest.golden(rel); }

    /** The model's greedy continuation of each prompt, as eval decodes it. */
    static List<String> greedy(Path model, Path adapter, List<String> prompts, int n) {
        List<String> out = new ArrayList<>();
        try (CpuBackend be = new CpuBackend(); HfCheckpoint src = HfCheckpoint.open(model); Tokenizer tok = Tokenizers.load(model.getParent());
             LlamaWeights w = LlamaWeights.upload(be, src);
             LoraAdapter lora = adapter == null ? null : LoraAdapter.fromPeft(be, src.config(), PeftAdapter.read(adapter), adapter)) {
            Generator g = new Generator(new LlamaModel(be, w), lora);
            for (String p : prompts) out.add(tok.decode(g.generate(tok.encode(p, true), Generator.Options.greedy(n, tok.eosId()))));
        }
        return out;
    }

    @Test
    void exactAccuracyCountsTheModelsOwnAnswers() throws Exception {
        Path model = golden("llama/model");
        List<String> prompts = List.of("The cat", "A dog", "Once upon", "Hello there");
        List<String> answers = greedy(model, golden("llama/adapter"), prompts, 6);
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < prompts.size(); i++) {
            String completion = i % 2 == 0 ? answers.get(i) : answers.get(i) + " not this";
            lines.add(JSON.writeValueAsString(java.util.Map.of("prompt", prompts.get(i), "completion", completion)));
        }
        Path data = Files.write(dir.resolve("d.jsonl"), lines);
        Path out = dir.resolve("eval.json");
        CliRunner.Result r = CliRunner.run("eval", "--model", model.toString(), "--tokenizer", golden("llama/tokenizer.json").toString(),
                "--adapter", golden("llama/adapter").toString(), "--data", data.toString(), "--task", "exact", "--max-new-tokens", "6",
                "--out", out.toString());
        assertEquals(0, r.code(), r.err());
        String[] outLines = r.out().strip().split("\n");
        assertEquals(prompts.size() + 1, outLines.length, r.out());
        for (int i = 0; i < prompts.size(); i++) assertEquals(i % 2 == 0, JSON.readTree(outLines[i]).get("correct").asBoolean(), outLines[i]);
        JsonNode s = JSON.readTree(outLines[prompts.size()]);
        assertEquals(4, s.get("evaluated").asInt());
        assertEquals(0.5, s.get("accuracy").asDouble(), 0);
        JsonNode file = JSON.readTree(out.toFile());
        assertEquals(0.5, file.get("accuracy").asDouble(), 0);
        assertEquals(4, file.get("records").size());
    }

    @Test
    void badTaskAndMissingAnswersAreClear() throws Exception {
        Path model = golden("llama/model");
        Path data = Files.write(dir.resolve("g.jsonl"), List.of("{\"question\": \"1+1?\", \"answer\": \"two\\n#### 2\"}"));
        CliRunner.Result bad = CliRunner.run("eval", "--model", model.toString(), "--tokenizer", golden("llama/tokenizer.json").toString(),
                "--data", data.toString(), "--task", "bleu");
        assertEquals(2, bad.code());
        assertTrue(bad.err().contains("unknown eval task 'bleu'"), bad.err());
        assertFalse(bad.err().contains("Exception"), bad.err());
        CliRunner.Result ok = CliRunner.run("eval", "--model", model.toString(), "--tokenizer", golden("llama/tokenizer.json").toString(),
                "--data", data.toString(), "--task", "gsm8k", "--max-new-tokens", "3");
        assertEquals(0, ok.code(), ok.err());
        String[] outLines = ok.out().strip().split("\n");
        JsonNode s = JSON.readTree(outLines[outLines.length - 1]);
        assertEquals(1, s.get("evaluated").asInt());
        assertEquals("gsm8k", s.get("task").asText());
    }

    @Test
    void mergedCheckpointEqualsBasePlusAdapter() throws Exception {
        Path model = golden("llama/model"), adapter = golden("llama/adapter");
        Path out = dir.resolve("merged");
        CliRunner.Result r = CliRunner.run("merge", "--model", model.toString(), "--adapter", adapter.toString(), "--out", out.toString(), "--dtype", "f32");
        assertEquals(0, r.code(), r.err());
        assertTrue(Files.isRegularFile(out.resolve("config.json")));
        int[] ids = {1, 5, 9, 13, 2, 7};
        float[] want, got;
        try (CpuBackend be = new CpuBackend(); HfCheckpoint src = HfCheckpoint.open(model); LlamaWeights w = LlamaWeights.upload(be, src);
             LoraAdapter lora = LoraAdapter.fromPeft(be, src.config(), PeftAdapter.read(adapter), adapter);
             LlamaModel.KvCache c = new LlamaModel(be, w).newKvCache(16)) {
            want = new LlamaModel(be, w).forwardCached(ids, 0, c, lora);
        }
        try (CpuBackend be = new CpuBackend(); HfCheckpoint src = HfCheckpoint.open(out); LlamaWeights w = LlamaWeights.upload(be, src);
             LlamaModel.KvCache c = new LlamaModel(be, w).newKvCache(16)) {
            got = new LlamaModel(be, w).forwardCached(ids, 0, c, null);
        }
        assertEquals(want.length, got.length);
        for (int i = 0; i < want.length; i++) assertEquals(want[i], got[i], 1e-4f * (1 + Math.abs(want[i])), "logit " + i);
        // a second merge into the now non-empty directory is refused, and leaves it as it was
        byte[] before = Files.readAllBytes(out.resolve("model.safetensors"));
        CliRunner.Result again = CliRunner.run("merge", "--model", model.toString(), "--adapter", adapter.toString(), "--out", out.toString());
        assertEquals(2, again.code());
        assertTrue(again.err().contains("not empty"), again.err());
        assertArrayEquals(before, Files.readAllBytes(out.resolve("model.safetensors")));
    }
}
