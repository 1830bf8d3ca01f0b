package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.generate.Generator;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.tokenizer.Tokenizers;

/**
 * score, generate, predictor build and calibrate through the CLI entry point on the engine's golden
 * fixtures (tiny HF Llama and Qwen2 exported with transformers + PEFT): score must reproduce HF's
 * fp32 losses to 1e-4 relative for the F32 and the BF16-sharded checkpoint, with and without the
 * PEFT adapter; user errors exit 2 with one line naming the file and the problem.
 */
class EngineCommandsTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    /** The engine module's golden fixtures; missing ones fail the test (never skip). */
    static Path golden(String rel) {
        Path p = Path.of("..", "engine", "src", "test", "resources", "golden").resolve(rel).toAbsolutePath().normalize();
        if (!Files.exists(p)) fail("golden fixture missing: " + p + " (the actors tests read the engine module's fixtures; run from the actors module)");
        return p;
    }

    static List<JsonNode> jsonLines(String text) throws Exception {
        List<JsonNode> out = new ArrayList<>();
        for (String l : text.split("\n")) if (!l.isBlank()) out.add(JSON.readTree(l));
        return out;
    }

    @ParameterizedTest(name = "{0} {1} adapter={2}")
    @CsvSource({"llama,model,false", "llama,model,true", "llama,model-bf16-sharded,false", "llama,model-bf16-sharded,true",
            "qwen2,model,false", "qwen2,model,true", "qwen2,model-bf16-sharded,false", "qwen2,model-bf16-sharded,true"})
    void scoreMatchesHfTransformers(String family, String model, boolean adapter) throws Exception {
        List<String> args = new ArrayList<>(List.of("score", "--model", golden(family + "/" + model).toString(),
                "--data", golden(family + "/score/texts.jsonl").toString()));
        if (adapter) args.addAll(List.of("--adapter", golden(family + "/adapter").toString()));
        CliRunner.Result r = CliRunner.run(args.toArray(String[]::new));
        assertEquals(0, r.code(), r.err());
        List<JsonNode> got = jsonLines(r.out());
        List<JsonNode> want = jsonLines(Files.readString(golden(family + "/score/" + (adapter ? "expected_adapter.jsonl" : "expected.jsonl"))));
        assertEquals(want.size() + 1, got.size(), r.out());
        double sum = 0;
        for (int i = 0; i < want.size(); i++) {
            JsonNode g = got.get(i), w = want.get(i);
            assertEquals(List.of("index", "tokens", "loss"), iterable(g.fieldNames()), "field order of line " + i);
            assertEquals(i, g.get("index").asInt());
            assertEquals(w.get("tokens").asInt(), g.get("tokens").asInt(), "tokens of record " + i);
            double e = w.get("loss").asDouble();
            assertEquals(e, g.get("loss").asDouble(), 1e-4 * e, "loss of record " + i);
            sum += g.get("loss").asDouble();
        }
        JsonNode summary = got.get(want.size());
        assertEquals(List.of("records", "mean_loss"), iterable(summary.fieldNames()));
        assertEquals(want.size(), summary.get("records").asInt());
        assertEquals(sum / want.size(), summary.get("mean_loss").asDouble(), 1e-12);
    }

    private static List<String> iterable(java.util.Iterator<String> it) {
        List<String> l = new ArrayList<>();
        it.forEachRemaining(l::add);
        return l;
    }

    @Test
    void scoreSkipsMalformedLinesAndReportsTheirNumbers(@TempDir Path dir) throws Exception {
        List<String> texts = Files.readAllLines(golden("llama/score/texts.jsonl"));
        Path data = dir.resolve("mixed.jsonl");
        Files.write(data, List.of(texts.get(0), "{\"text\": \"unterminated", "", "{\"other\": \"x\"}", "[1, 2]", "{\"text\": 5}", texts.get(1)));
        CliRunner.Result r = CliRunner.run("score", "--model", golden("llama/model").toString(), "--data", data.toString(), "--max-tokens", "20");
        assertEquals(0, r.code(), r.err());
        for (String want : new String[] {"line 2: not valid JSON", "line 4: no \"text\" field", "line 5: not a JSON object", "line 6: \"text\" is not a string",
                "4 malformed lines skipped, 2 records scored"})
            assertTrue(r.err().contains(want), "stderr should say '" + want + "':\n" + r.err());
        assertFalse(r.err().contains("line 3"), "a blank line is not malformed");
        List<JsonNode> got = jsonLines(r.out());
        assertEquals(3, got.size(), r.out());
        assertEquals(1, got.get(1).get("index").asInt());
        assertEquals(20, got.get(0).get("tokens").asInt(), "--max-tokens truncates");
        assertEquals(2, got.get(2).get("records").asInt());
    }

    @Test
    void userErrorsAreOneLineNamingTheFile(@TempDir Path dir) throws Exception {
        String model = golden("llama/model").toString(), texts = golden("llama/score/texts.jsonl").toString();
        // missing model
        assertError(dir.resolve("nope").toString(), "no such file or directory", "score", "--model", dir.resolve("nope").toString(), "--data", texts);
        // missing data file
        assertError(dir.resolve("none.jsonl").toString(), "no such file", "score", "--model", model, "--data", dir.resolve("none.jsonl").toString());
        // bad tokenizer: not a tokenizer file, and a tokenizer.json that is not JSON
        Path txt = Files.writeString(dir.resolve("vocab.txt"), "a b c");
        assertError(txt.toString(), "unknown tokenizer file type", "generate", "--model", model, "--tokenizer", txt.toString(), "--prompt", "x", "--max-new-tokens", "2");
        Path badJson = Files.writeString(dir.resolve("tokenizer.json"), "{not json");
        CliRunner.Result bt = CliRunner.run("score", "--model", model, "--tokenizer", badJson.toString(), "--data", texts);
        assertEquals(2, bt.code());
        assertTrue(bt.err().startsWith("sparselora score: ") && bt.err().contains(badJson.toString()), bt.err());
        assertEquals(1, bt.err().strip().lines().count(), bt.err());
        // bad adapter: not an adapter directory, and an adapter for another model shape
        Path notAdapter = Files.createDirectories(dir.resolve("not-an-adapter"));
        assertError(notAdapter.toString(), "no adapter_config.json", "score", "--model", model, "--adapter", notAdapter.toString(), "--data", texts);
        Path wrongRank = Files.createDirectories(dir.resolve("wrong-rank"));
        Files.copy(golden("llama/adapter/adapter_model.safetensors"), wrongRank.resolve("adapter_model.safetensors"));
        Files.writeString(wrongRank.resolve("adapter_config.json"),
                Files.readString(golden("llama/adapter/adapter_config.json")).replaceFirst("\"r\": 4", "\"r\": 8"));
        assertError(wrongRank.toString(), "shape", "score", "--model", model, "--adapter", wrongRank.toString(), "--data", texts);
        // unknown architecture
        Path gpt2 = Files.createDirectories(dir.resolve("gpt2"));
        String cfg = Files.readString(golden("llama/model/config.json")).replace("LlamaForCausalLM", "GPT2LMHeadModel");
        Files.writeString(gpt2.resolve("config.json"), cfg);
        Files.copy(golden("llama/model/model.safetensors"), gpt2.resolve("model.safetensors"));
        assertError(gpt2.resolve("config.json").toString(), "unknown architecture 'GPT2LMHeadModel'", "predictor", "build", "--model", gpt2.toString());
        // llama2.c checkpoint without a tokenizer
        Path bin = Files.write(dir.resolve("model.bin"), new byte[64]);
        assertError(bin.toString(), "", "generate", "--model", bin.toString(), "--prompt", "", "--max-new-tokens", "1");
        // bad option values
        assertError("--device cuda:99", "", "score", "--model", model, "--data", texts, "--device", "cuda:99");   // no such GPU here, nor on a GPU machine
        assertError("--device 'tpu'", "expected cpu, cuda or cuda:<n>", "score", "--model", model, "--data", texts, "--device", "tpu");
        assertError("--device 'cuda:x'", "expected cpu, cuda or cuda:<n>", "score", "--model", model, "--data", texts, "--device", "cuda:x");
        assertError("--device 'cuda:0,0'", "runs on one device", "generate", "--model", model, "--prompt", "", "--max-new-tokens", "1", "--device", "cuda:0,0");
        assertError("--target-flops", "must be >= 1", "calibrate", "--model", model, "--data", texts, "--target-flops", "0.5", "--out", dir.resolve("c.yaml").toString());
    }

    private static void assertError(String names, String problem, String... args) {
        CliRunner.Result r = CliRunner.run(args);
        String cmd = args[0].equals("predictor") ? "predictor build" : args[0];
        assertEquals(2, r.code(), "exit code of " + String.join(" ", args) + "\nstdout: " + r.out() + "\nstderr: " + r.err());
        // progress lines may come first (calibrate, predictor build); the error is the one last line
        List<String> errLines = r.err().strip().lines().toList();
        String line = errLines.get(errLines.size() - 1);
        assertEquals(1, errLines.stream().filter(l -> l.startsWith("sparselora")).count(), "one error line: " + r.err());
        assertTrue(line.startsWith("sparselora " + cmd + ": "), line);
        assertTrue(line.contains(names), "should name " + names + ": " + line);
        assertTrue(line.contains(problem), "should say " + problem + ": " + line);
        assertEquals("", r.out(), "nothing on stdout");
    }

    @Test
    void generateGreedyEqualsTheGenerator() throws Exception {
        Path model = golden("llama/model");
        String prompt = "Once upon a time";
        CliRunner.Result r = CliRunner.run("generate", "--model", model.toString(), "--prompt", prompt, "--max-new-tokens", "24");
        assertEquals(0, r.code(), r.err());
        try (HfCheckpoint src = HfCheckpoint.open(model); Tokenizer tok = Tokenizers.load(model); CpuBackend be = new CpuBackend();
             LlamaWeights w = LlamaWeights.upload(be, src)) {
            int[] ids = tok.encode(prompt, true);
            assertEquals(tok.bosId(), ids[0], "the prompt starts with BOS");
            int[] gen = new Generator(new LlamaModel(be, w), null).generate(ids, Generator.Options.greedy(24, tok.eosId()));
            assertTrue(gen.length > 0);
            int[] all = java.util.Arrays.copyOf(ids, ids.length + gen.length);
            System.arraycopy(gen, 0, all, ids.length, gen.length);
            String full = tok.decode(all), head = tok.decode(ids);
            assertTrue(full.startsWith(head));
            assertEquals(full.substring(head.length()) + "\n", r.out());
        }
        // sampling is seeded: the same seed gives the same text, and an empty prompt starts from BOS
        String[] sample = {"generate", "--model", model.toString(), "--prompt", "", "--max-new-tokens", "16", "--temperature", "0.9", "--top-p", "0.9", "--seed", "5"};
        CliRunner.Result a = CliRunner.run(sample), b = CliRunner.run(sample);
        assertEquals(0, a.code(), a.err());
        assertEquals(a.out(), b.out());
        // with the PEFT adapter: the Generator with the same LoRA weights
        CliRunner.Result withAdapter = CliRunner.run("generate", "--model", model.toString(), "--adapter", golden("llama/adapter").toString(),
                "--prompt", prompt, "--max-new-tokens", "24");
        assertEquals(0, withAdapter.code(), withAdapter.err());
        try (HfCheckpoint src = HfCheckpoint.open(model); Tokenizer tok = Tokenizers.load(model); CpuBackend be = new CpuBackend();
             LlamaWeights w = LlamaWeights.upload(be, src);
             org.sparselora.engine.lora.LoraAdapter lora = ModelFiles.openAdapter(be, src.config(), golden("llama/adapter"))) {
            int[] ids = tok.encode(prompt, true);
            int[] gen = new Generator(new LlamaModel(be, w), lora).generate(ids, Generator.Options.greedy(24, tok.eosId()));
            int[] all = java.util.Arrays.copyOf(ids, ids.length + gen.length);
            System.arraycopy(gen, 0, all, ids.length, gen.length);
            assertEquals(tok.decode(all).substring(tok.decode(ids).length()) + "\n", withAdapter.out());
        }
        CliRunner.Result missing = CliRunner.run("generate", "--model", model.toString(), "--prompt", "x");
        assertEquals(2, missing.code());
        assertTrue(missing.err().startsWith("Missing required option: '--max-new-tokens=N'"), missing.err());
    }

    @Test
    void predictorBuildWritesTheCacheAndReusesIt(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("pred.safetensors");
        String model = golden("llama/model").toString();
        CliRunner.Result first = CliRunner.run("predictor", "build", "--model", model, "--rank", "4", "--layers", "0-1", "--out", out.toString());
        assertEquals(0, first.code(), first.err());
        assertTrue(Files.size(out) > 0);
        assertTrue(first.out().contains("built: 10 projections factored"), first.out());
        assertTrue(first.err().contains("svd layer 2/2, projection 10/10: layers.1.v_proj (factored)"), first.err());
        CliRunner.Result second = CliRunner.run("predictor", "build", "--model", model, "--rank", "4", "--out", out.toString());
        assertEquals(0, second.code(), second.err());
        assertTrue(second.out().contains("cached: all 10 projections reused"), second.out());
        // another rank is stale for every entry: rebuilt, never used
        CliRunner.Result other = CliRunner.run("predictor", "build", "--model", model, "--rank", "2", "--layers", "1", "--out", out.toString());
        assertEquals(0, other.code(), other.err());
        assertTrue(other.out().contains("built: 5 projections factored"), other.out());
        // a sparsity config selects the layers
        Path cfg = Files.writeString(dir.resolve("s.yaml"), "mode: svd_4\nsparsity:\n  layers.1.mlp: 0.5\n");
        CliRunner.Result byCfg = CliRunner.run("predictor", "build", "--model", model, "--sparsity", cfg.toString(), "--out", dir.resolve("p2.safetensors").toString());
        assertEquals(0, byCfg.code(), byCfg.err());
        assertTrue(byCfg.out().contains("rank 4, 1 layers (1 MLP, 0 attention): built: 2 projections factored"), byCfg.out());
        assertError("--layers '0-7'", "out of range", "predictor", "build", "--model", model, "--layers", "0-7", "--out", out.toString());
        assertError("--layers 'x'", "not a layer number", "predictor", "build", "--model", model, "--layers", "x", "--out", out.toString());
        CliRunner.Result help = CliRunner.run("predictor", "build", "--help");
        assertEquals(0, help.code());
        assertTrue(help.out().startsWith("Usage: sparselora predictor build"), help.out());
        CliRunner.Result none = CliRunner.run("predictor");
        assertEquals(2, none.code());
        assertTrue(none.err().contains("a subcommand is required"), none.err());
    }

    @Test
    void calibrateWritesAConfigMeetingTheTarget(@TempDir Path dir) throws Exception {
        Path data = dir.resolve("alpaca.jsonl");
        List<String> lines = new ArrayList<>();
        String[] things = {"apples", "robots", "boats", "stars", "birds", "books", "trees", "cups"};
        for (int i = 0; i < 8; i++)
            lines.add(JSON.writeValueAsString(java.util.Map.of("instruction", "Count the " + things[i] + " in the little story and say how many there are.",
                    "input", "Once upon a time there were " + (i + 2) + " " + things[i] + " on the hill.", "output", "There are " + (i + 2) + " " + things[i] + ".")));
        Files.write(data, lines);
        Path out = dir.resolve("calibrated.yaml");
        CliRunner.Result r = CliRunner.run("calibrate", "--model", golden("llama/model").toString(), "--data", data.toString(), "--target-flops", "1.02",
                "--out", out.toString(), "--batches", "2", "--max-tokens", "96", "--all-layers", "--mlp-ratios", "0.5,0.9", "--attention-ratios", "0.5",
                "--predictor-cache", dir.resolve("pred.safetensors").toString());
        assertEquals(0, r.code(), r.err());
        SparsityConfig cfg = SparsityConfig.load(out);
        assertFalse(cfg.sparsity().isEmpty(), Files.readString(out));
        assertEquals(8, cfg.rank());
        assertTrue(r.out().contains("predicted") && r.out().contains("measured"), r.out());
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("reached ([0-9.]+)x").matcher(r.out());
        assertTrue(m.find(), r.out());
        assertTrue(Double.parseDouble(m.group(1)) >= 1.02, r.out());
        assertTrue(r.err().contains("calibrate 7/7"), "dense + 2 layers x (2 MLP + 1 attention) measured:\n" + r.err());
        // out of reach: one clear line, nothing written
        Path none = dir.resolve("none.yaml");
        assertError("target FLOP reduction 50.000x", "out of reach", "calibrate", "--model", golden("llama/model").toString(), "--data", data.toString(),
                "--target-flops", "50", "--out", none.toString(), "--batches", "1", "--all-layers", "--predictor-cache", dir.resolve("pred.safetensors").toString());
        assertFalse(Files.exists(none));
    }
}
