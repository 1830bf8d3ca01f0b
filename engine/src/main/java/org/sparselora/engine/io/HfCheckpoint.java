package org.sparselora.engine.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import org.sparselora.engine.model.LlamaConfig;

/**
 * A HF checkpoint directory as a {@link WeightSource}: {@code config.json} plus either one
 * {@code model.safetensors} or the shards listed in {@code model.safetensors.index.json}. Every
 * shard is memory-mapped (tensors stay slices of the files: F32, BF16 or F16 as stored; the model
 * converts when it uploads), so opening an 8B checkpoint costs no heap. On open, every tensor the
 * config implies is checked for presence and shape, so a mismatched checkpoint fails with the
 * tensor's name, the expected and the actual shape instead of a wrong answer later.
 */
public final class HfCheckpoint implements WeightSource {

    public static final String SINGLE = "model.safetensors";
    public static final String INDEX = "model.safetensors.index.json";

    private final Path dir;
    private final LlamaConfig config;
    private final List<Safetensors> shards;
    private final Map<String, HostTensor> tensors;

    private HfCheckpoint(Path dir, LlamaConfig config, List<Safetensors> shards, Map<String, HostTensor> tensors) {
        this.dir = dir;
        this.config = config;
        this.shards = shards;
        this.tensors = tensors;
    }

    /** Opens and validates a HF model directory. */
    public static HfCheckpoint open(Path dir) {
        if (!Files.isDirectory(dir)) throw new FormatException(dir, "not a directory (expected a HF model directory)");
        LlamaConfig config = HfConfig.read(dir.resolve("config.json"));
        List<Safetensors> shards = new ArrayList<>();
        try {
            LinkedHashMap<String, HostTensor> all = new LinkedHashMap<>();
            Path index = dir.resolve(INDEX);
            Path single = dir.resolve(SINGLE);
            if (Files.isRegularFile(index)) {
                Map<String, String> weightMap = readIndex(index);
                TreeMap<String, Safetensors> byFile = new TreeMap<>();
                for (String file : new java.util.TreeSet<>(weightMap.values())) {
                    Path p = dir.resolve(file);
                    if (!p.normalize().startsWith(dir.normalize()) || !Files.isRegularFile(p))
                        throw new FormatException(index, "shard '" + file + "' listed in weight_map does not exist");
                    Safetensors st = Safetensors.open(p);
                    shards.add(st);
                    byFile.put(file, st);
                }
                for (Map.Entry<String, String> e : weightMap.entrySet()) {
                    Safetensors st = byFile.get(e.getValue());
                    if (!st.has(e.getKey()))
                        throw new FormatException(st.path(), "tensor '" + e.getKey() + "' listed in " + INDEX + " is not in this shard");
                    all.put(e.getKey(), st.get(e.getKey()));
                }
            } else if (Files.isRegularFile(single)) {
                Safetensors st = Safetensors.open(single);
                shards.add(st);
                all.putAll(st.tensors());
            } else {
                throw new FormatException(dir, "no " + SINGLE + " or " + INDEX + " in the model directory");
            }
            validate(dir, config, all);
            return new HfCheckpoint(dir, config, List.copyOf(shards), Collections.unmodifiableMap(all));
        } catch (RuntimeException e) {
            shards.forEach(Safetensors::close);
            throw e;
        }
    }

    private static Map<String, String> readIndex(Path index) {
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(Files.readString(index));
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new FormatException(index, JsonErrors.describe(e));
        } catch (IOException e) {
            throw new FormatException(index, "cannot read: " + e.getMessage().lines().findFirst().orElse(""));
        }
        JsonNode wm = root == null ? null : root.get("weight_map");
        if (wm == null || !wm.isObject()) throw new FormatException(index, "missing weight_map object");
        LinkedHashMap<String, String> out = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = wm.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (!e.getValue().isTextual())
                throw new FormatException(index, "weight_map entry '" + e.getKey() + "' is not a file name");
            out.put(e.getKey(), e.getValue().textValue());
        }
        return out;
    }

    /**
     * The tensors a checkpoint of this config holds, with their HF names and shapes (out, in) in
     * HF's order. {@code lm_head.weight} is listed only for untied heads.
     */
    public static LinkedHashMap<String, int[]> expectedShapes(LlamaConfig c) {
        LinkedHashMap<String, int[]> m = new LinkedHashMap<>();
        int h = c.hiddenSize(), q = c.qDim(), kv = c.kvDim(), i = c.intermediateSize();
        m.put("model.embed_tokens.weight", new int[] {c.vocabSize(), h});
        for (int l = 0; l < c.numLayers(); l++) {
            String p = "model.layers." + l + ".";
            m.put(p + "input_layernorm.weight", new int[] {h});
            m.put(p + "self_attn.q_proj.weight", new int[] {q, h});
            m.put(p + "self_attn.k_proj.weight", new int[] {kv, h});
            m.put(p + "self_attn.v_proj.weight", new int[] {kv, h});
            if (c.attentionBias()) {
                m.put(p + "self_attn.q_proj.bias", new int[] {q});
                m.put(p + "self_attn.k_proj.bias", new int[] {kv});
                m.put(p + "self_attn.v_proj.bias", new int[] {kv});
            }
            m.put(p + "self_attn.o_proj.weight", new int[] {h, q});
            m.put(p + "post_attention_layernorm.weight", new int[] {h});
            m.put(p + "mlp.gate_proj.weight", new int[] {i, h});
            m.put(p + "mlp.up_proj.weight", new int[] {i, h});
            m.put(p + "mlp.down_proj.weight", new int[] {h, i});
        }
        m.put("model.norm.weight", new int[] {h});
        if (!c.tieWordEmbeddings()) m.put("lm_head.weight", new int[] {c.vocabSize(), h});
        return m;
    }

    private static final java.util.regex.Pattern LAYER_NAME = java.util.regex.Pattern.compile("model\\.layers\\.([0-9]+)\\.");

    static void validate(Path where, LlamaConfig config, Map<String, HostTensor> all) {
        // tensors of layers beyond num_hidden_layers would be silently dropped: the model would not be the checkpoint's
        int deepest = -1;
        for (String name : all.keySet()) {
            var m = LAYER_NAME.matcher(name);
            if (m.lookingAt()) {
                try {
                    deepest = Math.max(deepest, Integer.parseInt(m.group(1)));
                } catch (NumberFormatException huge) {
                    deepest = Integer.MAX_VALUE;
                }
            }
        }
        if (deepest >= config.numLayers())
            throw new FormatException(where, "the checkpoint has tensors for layer " + (deepest == Integer.MAX_VALUE ? "(huge index)" : deepest)
                    + " but config.json says num_hidden_layers " + config.numLayers() + " (layers 0.." + (config.numLayers() - 1) + ")");
        List<String> missing = new ArrayList<>();
        for (Map.Entry<String, int[]> e : expectedShapes(config).entrySet()) {
            HostTensor t = all.get(e.getKey());
            if (t == null) { missing.add(e.getKey()); continue; }
            if (!Arrays.equals(t.shape(), e.getValue()))
                throw new FormatException(where, "tensor '" + e.getKey() + "' has shape " + Arrays.toString(t.shape())
                        + " but config.json implies " + Arrays.toString(e.getValue()));
            if (!t.dtype().isFloating())
                throw new FormatException(where, "tensor '" + e.getKey() + "' has dtype " + t.dtype() + ", expected a float type");
        }
        if (!missing.isEmpty()) {
            int shown = Math.min(missing.size(), 8);
            throw new FormatException(where, missing.size() + " tensor(s) missing from the checkpoint: "
                    + String.join(", ", missing.subList(0, shown)) + (missing.size() > shown ? ", ..." : ""));
        }
        // a tied checkpoint may still carry lm_head.weight (some exporters write it): it must match
        HostTensor head = all.get("lm_head.weight");
        if (head != null && config.tieWordEmbeddings()
                && !Arrays.equals(head.shape(), new int[] {config.vocabSize(), config.hiddenSize()}))
            throw new FormatException(where, "tensor 'lm_head.weight' has shape " + Arrays.toString(head.shape())
                    + " but config.json implies " + Arrays.toString(new int[] {config.vocabSize(), config.hiddenSize()}));
    }

    public Path dir() { return dir; }

    @Override public LlamaConfig config() { return config; }

    @Override public Set<String> names() { return tensors.keySet(); }

    @Override
    public HostTensor get(String name) {
        HostTensor t = tensors.get(name);
        if (t == null) throw new FormatException(dir, "no tensor named '" + name + "' in the checkpoint");
        return t;
    }

    /** The head weight: {@code lm_head.weight}, or the embedding when tied. */
    public HostTensor lmHead() {
        return config.tieWordEmbeddings() ? get("model.embed_tokens.weight") : get("lm_head.weight");
    }

    @Override
    public void close() { shards.forEach(Safetensors::close); }
}
