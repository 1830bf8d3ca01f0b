package org.sparselora.engine.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.model.LlamaConfig;

/** HF config.json, checkpoints (single/sharded, F32/BF16), PEFT adapters and the merging writer. */
class HfFormatsTest {

    @TempDir Path dir;

    static final LlamaConfig TINY = new LlamaConfig("LlamaForCausalLM", 16, 24, 2, 4, 2, 4, 37, 64, 1e-5f, 10000f,
            new LlamaConfig.RopeScaling("llama3", 8f, 1f, 4f, 32), false, false, 1, 2);

    /** An in-memory WeightSource of random weights for a config. */
    record MapSource(LlamaConfig config, Map<String, HostTensor> map) implements WeightSource {
        /** Random weights rounded to bf16-representable values (F32 and BF16 copies then agree exactly). */
        static MapSource randomBf16(LlamaConfig c, long seed) {
            MapSource m = random(c, seed);
            LinkedHashMap<String, HostTensor> out = new LinkedHashMap<>();
            m.map().forEach((k, t) -> {
                float[] v = t.toFloats();
                for (int i = 0; i < v.length; i++) v[i] = Dtypes.bf16ToFloat(Dtypes.floatToBf16(v[i]));
                out.put(k, new HostTensor(k, DType.F32, t.shape(), Dtypes.fromFloats(DType.F32, v)));
            });
            return new MapSource(c, out);
        }

        static MapSource random(LlamaConfig c, long seed) {
            Random rnd = new Random(seed);
            LinkedHashMap<String, HostTensor> m = new LinkedHashMap<>();
            for (Map.Entry<String, int[]> e : HfCheckpoint.expectedShapes(c).entrySet()) {
                int n = 1;
                for (int d : e.getValue()) n *= d;
                float[] v = new float[n];
                for (int i = 0; i < n; i++) v[i] = (float) rnd.nextGaussian();
                m.put(e.getKey(), new HostTensor(e.getKey(), DType.F32, e.getValue(), Dtypes.fromFloats(DType.F32, v)));
            }
            return new MapSource(c, m);
        }
        @Override public Set<String> names() { return map.keySet(); }
        @Override public HostTensor get(String name) { return map.get(name); }
    }

    private Path writeConfig(String json) throws IOException {
        Path d = Files.createTempDirectory(dir, "cfg");
        Files.writeString(d.resolve("config.json"), json);
        return d.resolve("config.json");
    }

    // ------------------------------------------------------------------ config.json

    @Test
    void readsLlama3ConfigWithRopeScaling() throws IOException {
        Path f = writeConfig("""
            {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
             "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
             "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
             "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 8192, "rope_type": "llama3"},
             "tie_word_embeddings": false, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
             "hidden_act": "silu", "attention_bias": false, "mlp_bias": false, "torch_dtype": "bfloat16"}""");
        LlamaConfig c = HfConfig.read(f);
        assertEquals(128, c.headDim());
        assertEquals(8, c.numKvHeads());
        assertEquals(500000f, c.ropeTheta());
        assertEquals(new LlamaConfig.RopeScaling("llama3", 8f, 1f, 4f, 8192), c.ropeScaling());
        assertEquals(128000, c.bosTokenId());
        assertEquals(128001, c.eosTokenId());
        assertFalse(c.tieWordEmbeddings());
        assertFalse(c.attentionBias());
        assertArrayEquals(new int[] {128001, 128008, 128009}, HfConfig.stopTokenIds(f.getParent()));
        Files.writeString(f.getParent().resolve("generation_config.json"), "{\"eos_token_id\": [128009, 7]}");
        assertArrayEquals(new int[] {128001, 128008, 128009, 7}, HfConfig.stopTokenIds(f.getParent()));
        // the older spelling "type" and a directory argument
        Path g = writeConfig(Files.readString(f).replace("\"rope_type\"", "\"type\""));
        assertEquals(c, HfConfig.read(g.getParent()));
    }

    @Test
    void readsTransformers5RopeParameters() throws IOException {
        LlamaConfig c = HfConfig.read(writeConfig("""
            {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 176, "head_dim": 16,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
             "max_position_embeddings": 256, "rms_norm_eps": 1e-05, "dtype": "float32",
             "rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}"""));
        assertEquals(10000f, c.ropeTheta());
        assertEquals(new LlamaConfig.RopeScaling("llama3", 8f, 1f, 4f, 32), c.ropeScaling());
        LlamaConfig q = HfConfig.read(writeConfig("""
            {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 176,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 308,
             "use_sliding_window": false, "sliding_window": null, "layer_types": ["full_attention", "full_attention"],
             "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}, "tie_word_embeddings": true}"""));
        assertEquals(1e6f, q.ropeTheta());
        assertNull(q.ropeScaling());
        assertEquals(0, q.slidingWindow());
    }

    static final String MISTRAL = """
            {"architectures": ["MistralForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100""";
    static final String QWEN2 = """
            {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 176,
             "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 308""";

    int window(String json) throws IOException { return HfConfig.read(writeConfig(json)).slidingWindow(); }

    String windowError(String json) throws IOException {
        Path f = writeConfig(json);
        FormatException e = assertThrows(FormatException.class, () -> HfConfig.read(f));
        assertTrue(e.getMessage().startsWith(f.toString()), e.getMessage());
        return e.getMessage();
    }

    @Test
    void slidingWindowIsReadAsTransformersAppliesIt() throws IOException {
        // Mistral: the window whenever sliding_window is not null; absent = MistralConfig's default 4096
        assertEquals(0, window(MISTRAL + ", \"sliding_window\": null}"));
        assertEquals(32, window(MISTRAL + ", \"sliding_window\": 32}"));
        assertEquals(4096, window(MISTRAL + "}"));
        assertTrue(windowError(MISTRAL + ", \"sliding_window\": 0}").contains("sliding_window must be a positive integer, got 0"));
        assertTrue(windowError(MISTRAL + ", \"sliding_window\": \"4k\"}").contains("sliding_window"));
        // Qwen2: only with use_sliding_window, and then in layers >= max_window_layers (default 28)
        assertEquals(0, window(QWEN2 + ", \"sliding_window\": 16}"));
        assertEquals(0, window(QWEN2 + ", \"use_sliding_window\": false, \"sliding_window\": 16, \"max_window_layers\": 0}"));
        assertEquals(0, window(QWEN2 + ", \"use_sliding_window\": true, \"sliding_window\": 16}")); // 2 layers < 28
        assertEquals(16, window(QWEN2 + ", \"use_sliding_window\": true, \"sliding_window\": 16, \"max_window_layers\": 0}"));
        assertEquals(4096, window(QWEN2 + ", \"use_sliding_window\": true, \"max_window_layers\": 0}"));
        assertEquals(0, window(QWEN2 + ", \"use_sliding_window\": true, \"sliding_window\": null, \"max_window_layers\": 0}"));
        String mixed = windowError(QWEN2 + ", \"use_sliding_window\": true, \"sliding_window\": 16, \"max_window_layers\": 1}");
        assertTrue(mixed.contains("max_window_layers 1") && mixed.contains("per-layer sliding windows are not supported"), mixed);
        // an explicit layer_types list (transformers 5) decides
        assertEquals(8, window(QWEN2 + ", \"sliding_window\": 8, \"layer_types\": [\"sliding_attention\", \"sliding_attention\"]}"));
        assertEquals(0, window(MISTRAL + ", \"sliding_window\": 8, \"layer_types\": [\"full_attention\", \"full_attention\"]}"));
        assertTrue(windowError(QWEN2 + ", \"sliding_window\": 8, \"layer_types\": [\"full_attention\", \"sliding_attention\"]}")
                .contains("layer_types mixes"));
        assertTrue(windowError(QWEN2 + ", \"layer_types\": [\"sliding_attention\", \"sliding_attention\"]}")
                .contains("sliding_window is missing"));
        // Llama has no sliding window in transformers: the key is ignored
        assertEquals(0, window("""
            {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "sliding_window": 16}"""));
    }

    @Test
    void slidingWindowRoundTripsThroughConfigJson() throws IOException {
        Path out = dir.resolve("sw/config.json");
        for (String json : new String[] {MISTRAL + ", \"sliding_window\": 24}", MISTRAL + ", \"sliding_window\": null}",
                QWEN2 + ", \"use_sliding_window\": true, \"sliding_window\": 12, \"max_window_layers\": 0}", QWEN2 + "}"}) {
            LlamaConfig c = HfConfig.read(writeConfig(json));
            HfConfig.write(out, c, "float32", null);
            assertEquals(c, HfConfig.read(out), json);
        }
        LlamaConfig llamaWithWindow = TINY.withSlidingWindow(8);
        assertThrows(IllegalArgumentException.class, () -> HfConfig.write(out, llamaWithWindow, "float32", null));
    }

    @Test
    void readsMistralAndQwen2Defaults() throws IOException {
        LlamaConfig m = HfConfig.read(writeConfig("""
            {"architectures": ["MistralForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100, "sliding_window": 4096}"""));
        assertEquals(8, m.numKvHeads());     // defaults to num_attention_heads
        assertEquals(8, m.headDim());        // hidden / heads
        assertEquals(10000f, m.ropeTheta());
        assertNull(m.ropeScaling());
        assertEquals(-1, m.bosTokenId());
        assertEquals(4096, m.slidingWindow());
        LlamaConfig q = HfConfig.read(writeConfig("""
            {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 128, "head_dim": 32,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
             "tie_word_embeddings": true, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}"""));
        assertTrue(q.attentionBias());
        assertTrue(q.tieWordEmbeddings());
        assertEquals(32, q.headDim());
        assertEquals(1e-6f, q.rmsNormEps());
        // written and re-read: the same config
        Path out = dir.resolve("w/config.json");
        HfConfig.write(out, TINY, "float32", null);
        assertEquals(TINY, HfConfig.read(out));
        HfConfig.write(out, q, "float32", null);
        assertEquals(q, HfConfig.read(out));
    }

    @Test
    void configErrorsNameFileAndValue() throws IOException {
        Path f = writeConfig("""
            {"architectures": ["GPT2LMHeadModel"], "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}""");
        FormatException e = assertThrows(FormatException.class, () -> HfConfig.read(f));
        assertTrue(e.getMessage().startsWith(f.toString()) && e.getMessage().contains("unknown architecture 'GPT2LMHeadModel'"),
                e.getMessage());
        Path g = writeConfig("""
            {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
             "rope_scaling": {"type": "yarn", "factor": 4.0}}""");
        e = assertThrows(FormatException.class, () -> HfConfig.read(g));
        assertTrue(e.getMessage().contains("'yarn'"), e.getMessage());
        Path h = writeConfig("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64}");
        e = assertThrows(FormatException.class, () -> HfConfig.read(h));
        assertTrue(e.getMessage().contains("missing field num_attention_heads"), e.getMessage());
        Path bad = writeConfig("{not json");
        assertTrue(assertThrows(FormatException.class, () -> HfConfig.read(bad)).getMessage().contains("invalid JSON"));
        Path none = dir.resolve("nothing");
        Files.createDirectories(none);
        assertTrue(assertThrows(FormatException.class, () -> HfConfig.read(none)).getMessage().contains("no config.json"));
    }

    // ------------------------------------------------------------------ checkpoints

    @Test
    void singleF32CheckpointRoundTrips() {
        MapSource src = MapSource.random(TINY, 1);
        Path out = dir.resolve("ckpt");
        HfCheckpointWriter.write(src, null, out, DType.F32, 0, null);
        assertTrue(Files.isRegularFile(out.resolve("model.safetensors")));
        try (HfCheckpoint ck = HfCheckpoint.open(out)) {
            assertEquals(TINY, ck.config());
            assertEquals(src.names(), ck.names());
            for (String n : src.names()) assertArrayEquals(src.get(n).toFloats(), ck.get(n).toFloats(), n);
            assertEquals(DType.F32, ck.get("model.norm.weight").dtype());
            assertArrayEquals(src.get("lm_head.weight").toFloats(), ck.lmHead().toFloats());
        }
    }

    @Test
    void shardedBf16CheckpointRoundTrips() throws IOException {
        MapSource src = MapSource.random(TINY, 2);
        Path out = dir.resolve("sharded");
        HfCheckpointWriter.write(src, null, out, DType.BF16, 2000, null);
        Map<String, String> wm = HfCheckpointWriter.weightMap(out);
        long shardCount = wm.values().stream().distinct().count();
        assertTrue(shardCount > 2, "several shards: " + shardCount);
        assertTrue(wm.values().stream().allMatch(s -> s.matches("model-\\d{5}-of-" + String.format("%05d", shardCount) + "\\.safetensors")));
        try (HfCheckpoint ck = HfCheckpoint.open(out)) {
            assertEquals(DType.BF16, ck.get("model.embed_tokens.weight").dtype());
            for (String n : src.names()) {
                float[] want = src.get(n).toFloats();
                float[] got = ck.get(n).toFloats();
                for (int i = 0; i < want.length; i++)
                    assertEquals(Dtypes.bf16ToFloat(Dtypes.floatToBf16(want[i])), got[i], 0f, n);
            }
        }
        // F16 checkpoints read back as stored too
        Path f16 = dir.resolve("f16");
        HfCheckpointWriter.write(src, null, f16, DType.F16, 0, null);
        try (HfCheckpoint ck = HfCheckpoint.open(f16)) {
            assertEquals(DType.F16, ck.get("model.norm.weight").dtype());
            float[] want = src.get("model.norm.weight").toFloats();
            float[] got = ck.get("model.norm.weight").toFloats();
            for (int i = 0; i < want.length; i++) assertEquals(Float.float16ToFloat(Float.floatToFloat16(want[i])), got[i], 0f);
        }
        // an index naming a missing shard is an error naming the index and the shard
        Files.delete(out.resolve(wm.get("model.norm.weight")));
        FormatException e = assertThrows(FormatException.class, () -> HfCheckpoint.open(out));
        assertTrue(e.getMessage().contains(HfCheckpoint.INDEX) && e.getMessage().contains(wm.get("model.norm.weight")), e.getMessage());
    }

    @Test
    void tiedQwen2WithBiasesNeedsNoLmHead() {
        LlamaConfig qwen = new LlamaConfig("Qwen2ForCausalLM", 16, 24, 1, 4, 2, 4, 30, 64, 1e-6f, 1e6f, null, true, true, -1, 29);
        MapSource src = MapSource.random(qwen, 3);
        assertFalse(src.has("lm_head.weight"));
        assertTrue(src.has("model.layers.0.self_attn.k_proj.bias"));
        Path out = dir.resolve("qwen");
        HfCheckpointWriter.write(src, null, out, DType.F32, 0, null);
        try (HfCheckpoint ck = HfCheckpoint.open(out)) {
            assertEquals(qwen, ck.config());
            assertArrayEquals(src.get("model.embed_tokens.weight").toFloats(), ck.lmHead().toFloats());
        }
    }

    @Test
    void wrongShapeAndMissingTensorsAreNamed() {
        Path out = dir.resolve("bad");
        HfCheckpointWriter.write(MapSource.random(TINY, 4), null, out, DType.F32, 0, null);
        // rewrite the weights with one tensor transposed and one missing
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        LinkedHashMap<String, int[]> shapes = new LinkedHashMap<>();
        HfCheckpoint.expectedShapes(TINY).forEach((k, s) -> {
            int n = 1;
            for (int d : s) n *= d;
            t.put(k, new float[n]);
            shapes.put(k, s);
        });
        shapes.put("model.layers.1.self_attn.k_proj.weight", new int[] {16, 8});
        Safetensors.writeFloats(out.resolve("model.safetensors"), t, shapes, DType.F32, null);
        FormatException e = assertThrows(FormatException.class, () -> HfCheckpoint.open(out));
        assertTrue(e.getMessage().contains("'model.layers.1.self_attn.k_proj.weight' has shape [16, 8]")
                && e.getMessage().contains("implies [8, 16]"), e.getMessage());
        t.remove("model.layers.0.mlp.up_proj.weight");
        t.remove("lm_head.weight");
        shapes.put("model.layers.1.self_attn.k_proj.weight", new int[] {8, 16});
        Safetensors.writeFloats(out.resolve("model.safetensors"), t, shapes, DType.F32, null);
        e = assertThrows(FormatException.class, () -> HfCheckpoint.open(out));
        assertTrue(e.getMessage().contains("2 tensor(s) missing") && e.getMessage().contains("model.layers.0.mlp.up_proj.weight")
                && e.getMessage().contains("lm_head.weight"), e.getMessage());
        Path empty = dir.resolve("empty");
        HfConfig.write(empty.resolve("config.json"), TINY, "float32", null);
        e = assertThrows(FormatException.class, () -> HfCheckpoint.open(empty));
        assertTrue(e.getMessage().contains("no model.safetensors"), e.getMessage());
    }

    // ------------------------------------------------------------------ PEFT

    static AdapterFiles randomAdapter(LlamaConfig c, int r, List<String> targets, boolean rslora, long seed) {
        Random rnd = new Random(seed);
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        LinkedHashMap<String, int[]> s = new LinkedHashMap<>();
        for (int l = 0; l < c.numLayers(); l++) {
            for (String m : targets) {
                int[] io = PeftAdapter.inOut(c, m);
                float[] a = new float[r * io[0]];
                float[] b = new float[io[1] * r];
                for (int i = 0; i < a.length; i++) a[i] = (float) rnd.nextGaussian();
                for (int i = 0; i < b.length; i++) b[i] = (float) rnd.nextGaussian();
                t.put(PeftAdapter.loraAName(l, m), a);
                s.put(PeftAdapter.loraAName(l, m), new int[] {r, io[0]});
                t.put(PeftAdapter.loraBName(l, m), b);
                s.put(PeftAdapter.loraBName(l, m), new int[] {io[1], r});
            }
        }
        return new AdapterFiles(new LoraSpec(r, 2f * r, 0.05f, targets, rslora, "tiny-llama"), t, s);
    }

    @Test
    void peftAdapterRoundTripsWithPeftNames() throws IOException {
        AdapterFiles a = randomAdapter(TINY, 4, List.of("q_proj", "v_proj", "down_proj"), false, 5);
        Path out = dir.resolve("adapter");
        PeftAdapter.write(out, a);
        try (Stream<Path> s = Files.list(out)) {
            assertEquals(Set.of("adapter_config.json", "adapter_model.safetensors"),
                    Set.copyOf(s.map(p -> p.getFileName().toString()).toList()));
        }
        try (Safetensors st = Safetensors.open(out.resolve(PeftAdapter.WEIGHTS))) {
            assertTrue(st.has("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
            assertArrayEquals(new int[] {4, 16}, st.get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").shape());
            assertEquals("pt", st.metadata().get("format"));
        }
        String json = Files.readString(out.resolve(PeftAdapter.CONFIG));
        for (String field : List.of("\"peft_type\" : \"LORA\"", "\"task_type\" : \"CAUSAL_LM\"", "\"bias\" : \"none\"",
                "\"fan_in_fan_out\" : false", "\"r\" : 4", "\"lora_alpha\" : 8.0", "\"base_model_name_or_path\" : \"tiny-llama\""))
            assertTrue(json.contains(field), field + " in " + json);
        AdapterFiles back = PeftAdapter.read(out);
        assertEquals(a.spec(), back.spec());
        assertEquals(a.tensors().keySet(), back.tensors().keySet());
        for (String k : a.tensors().keySet()) {
            assertArrayEquals(a.tensors().get(k), back.tensors().get(k), k);
            assertArrayEquals(a.shapes().get(k), back.shapes().get(k), k);
        }
        PeftAdapter.validate(out, back, TINY);
        // rewriting replaces the directory whole and leaves no temp dirs behind
        PeftAdapter.write(out, randomAdapter(TINY, 2, List.of("k_proj"), true, 6));
        assertEquals(2, PeftAdapter.read(out).spec().r());
        try (Stream<Path> s = Files.list(dir)) {
            assertEquals(List.of(out), s.toList());
        }
        assertEquals(new PeftAdapter.LoraKey(1, "down_proj", false),
                PeftAdapter.parseKey("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
        assertNull(PeftAdapter.parseKey("base_model.model.model.layers.1.self_attn.down_proj.lora_B.weight"));
    }

    @Test
    void readsAPeftWrittenConfig() throws IOException {
        // adapter_config.json as PEFT 0.13 writes it (extra fields it has and we ignore)
        AdapterFiles a = randomAdapter(TINY, 8, List.of("q_proj", "k_proj"), false, 7);
        Path out = dir.resolve("peft");
        PeftAdapter.write(out, a);
        Files.writeString(out.resolve(PeftAdapter.CONFIG), """
            {"alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": null, "bias": "none",
             "eva_config": null, "exclude_modules": null, "fan_in_fan_out": false, "inference_mode": true,
             "init_lora_weights": true, "layer_replication": null, "layers_pattern": null, "layers_to_transform": null,
             "loftq_config": {}, "lora_alpha": 16, "lora_bias": false, "lora_dropout": 0.0, "megatron_config": null,
             "megatron_core": "megatron.core", "modules_to_save": null, "peft_type": "LORA", "r": 8,
             "rank_pattern": {}, "revision": null, "target_modules": ["k_proj", "q_proj"], "task_type": "CAUSAL_LM",
             "use_dora": false, "use_rslora": true}""");
        AdapterFiles back = PeftAdapter.read(out);
        assertEquals(new LoraSpec(8, 16f, 0f, List.of("k_proj", "q_proj"), true, null), back.spec());
        assertEquals(16f / (float) Math.sqrt(8), back.spec().scaling(), 1e-6f);
    }

    @Test
    void badAdaptersAreRejectedWithTheFileNamed() throws IOException {
        AdapterFiles a = randomAdapter(TINY, 4, List.of("q_proj"), false, 8);
        Path out = dir.resolve("bad-adapter");
        PeftAdapter.write(out, a);
        String good = Files.readString(out.resolve(PeftAdapter.CONFIG));
        Files.writeString(out.resolve(PeftAdapter.CONFIG), good.replace("\"bias\" : \"none\"", "\"bias\" : \"all\""));
        FormatException e = assertThrows(FormatException.class, () -> PeftAdapter.read(out));
        assertTrue(e.getMessage().contains(PeftAdapter.CONFIG) && e.getMessage().contains("bias 'all'"), e.getMessage());
        Files.writeString(out.resolve(PeftAdapter.CONFIG), good.replace("\"r\" : 4", "\"r\" : 8"));
        e = assertThrows(FormatException.class, () -> PeftAdapter.read(out));
        assertTrue(e.getMessage().contains("but r is 8"), e.getMessage());
        Files.writeString(out.resolve(PeftAdapter.CONFIG), good.replace("[ \"q_proj\" ]", "[ \"lm_head\" ]"));
        e = assertThrows(FormatException.class, () -> PeftAdapter.read(out));
        assertTrue(e.getMessage().contains("'lm_head'"), e.getMessage());
        Files.writeString(out.resolve(PeftAdapter.CONFIG), good);
        // a model whose q_proj is a different size
        LlamaConfig wider = new LlamaConfig("LlamaForCausalLM", 32, 24, 2, 4, 2, 8, 37, 64, 1e-5f, 1e4f, null, false, false, 1, 2);
        e = assertThrows(FormatException.class, () -> PeftAdapter.validate(out, PeftAdapter.read(out), wider));
        assertTrue(e.getMessage().contains("q_proj.lora_A.weight' has shape [4, 16] but the model needs [4, 32]"), e.getMessage());
        Files.delete(out.resolve(PeftAdapter.WEIGHTS));
        e = assertThrows(FormatException.class, () -> PeftAdapter.read(out));
        assertTrue(e.getMessage().contains("no adapter_model.safetensors"), e.getMessage());
    }

    @Test
    void mergedCheckpointEqualsWPlusScaledBA() {
        MapSource src = MapSource.random(TINY, 9);
        AdapterFiles a = randomAdapter(TINY, 3, List.of("q_proj", "o_proj", "gate_proj", "down_proj"), false, 10);
        float s = a.spec().scaling();
        Path out = dir.resolve("merged");
        HfCheckpointWriter.write(src, a, out, DType.F32, 0, null);
        try (HfCheckpoint ck = HfCheckpoint.open(out)) {
            for (String n : src.names()) {
                float[] w = src.get(n).toFloats();
                float[] got = ck.get(n).toFloats();
                PeftAdapter.LoraKey key = null;
                String[] p = n.split("\\.");
                if (p.length == 6 && p[5].equals("weight") && a.spec().targetModules().contains(p[4]))
                    key = new PeftAdapter.LoraKey(Integer.parseInt(p[2]), p[4], true);
                if (key == null) {
                    assertArrayEquals(w, got, n);   // untouched
                    continue;
                }
                float[] A = a.tensors().get(PeftAdapter.loraAName(key.layer(), key.module()));
                float[] B = a.tensors().get(PeftAdapter.loraBName(key.layer(), key.module()));
                int[] shape = src.get(n).shape();
                int out_ = shape[0], in = shape[1], r = 3;
                for (int o = 0; o < out_; o++)
                    for (int i = 0; i < in; i++) {
                        double ref = w[o * in + i];
                        for (int k = 0; k < r; k++) ref += (double) s * B[o * r + k] * A[k * in + i];
                        assertEquals(ref, got[o * in + i], 1e-4 * (1 + Math.abs(ref)), n + " [" + o + "," + i + "]");
                    }
            }
        }
        // an adapter for another model shape is refused before anything is written
        LlamaConfig other = new LlamaConfig("LlamaForCausalLM", 16, 40, 2, 4, 2, 4, 37, 64, 1e-5f, 1e4f, null, false, false, 1, 2);
        AdapterFiles wrong = randomAdapter(other, 3, List.of("down_proj"), false, 11);
        Path out2 = dir.resolve("merged2");
        assertThrows(FormatException.class, () -> HfCheckpointWriter.write(src, wrong, out2, DType.F32, 0, null));
        assertFalse(Files.exists(out2));
    }
}
