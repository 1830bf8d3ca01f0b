package org.sparselora.engine.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.sparselora.engine.model.LlamaConfig;

/**
 * HF {@code config.json} ⇄ {@link LlamaConfig} for the decoder families this engine runs:
 * {@code LlamaForCausalLM} (Llama 2 and 3.x, including {@code rope_scaling} of type
 * {@code llama3}), {@code MistralForCausalLM} and {@code Qwen2ForCausalLM} (q/k/v biases always on,
 * as transformers' Qwen2 attention hard-codes them). Defaults follow the transformers config
 * classes, so a minimal config reads as transformers would read it (including Mistral's default
 * {@code sliding_window} of 4096 when the key is absent, and Qwen2's {@code use_sliding_window} /
 * {@code max_window_layers}). Anything this engine would
 * compute differently (another architecture, activation, rope scaling type, MLP bias) is an error
 * naming the file and the value rather than a silently wrong model.
 */
public final class HfConfig {

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private HfConfig() {}

    /** Reads {@code config.json} (or a directory holding one). */
    public static LlamaConfig read(Path configOrDir) {
        Path file = Files.isDirectory(configOrDir) ? configOrDir.resolve("config.json") : configOrDir;
        if (!Files.isRegularFile(file)) throw new FormatException(file, "no config.json (is this a HF model directory?)");
        JsonNode root;
        try {
            root = JSON.readTree(Files.readString(file, StandardCharsets.UTF_8));
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new FormatException(file, JsonErrors.describe(e));
        } catch (IOException e) {
            throw new FormatException(file, "cannot read: " + firstLine(e.getMessage()));
        }
        if (root == null || !root.isObject()) throw new FormatException(file, "not a JSON object");
        return parse(file, root);
    }

    static LlamaConfig parse(Path file, JsonNode c) {
        String arch = architecture(file, c);
        int hidden = reqInt(file, c, "hidden_size");
        int heads = reqInt(file, c, "num_attention_heads");
        int layers = reqInt(file, c, "num_hidden_layers");
        int inter = reqInt(file, c, "intermediate_size");
        int vocab = reqInt(file, c, "vocab_size");
        int kvHeads = optInt(file, c, "num_key_value_heads", heads);
        if (hidden % heads != 0 && !has(c, "head_dim"))
            throw new FormatException(file, "hidden_size " + hidden + " is not divisible by num_attention_heads " + heads);
        int headDim = optInt(file, c, "head_dim", hidden / heads);
        if (heads % kvHeads != 0)
            throw new FormatException(file, "num_attention_heads " + heads + " is not a multiple of num_key_value_heads " + kvHeads);
        String act = c.path("hidden_act").asText("silu");
        if (!act.equals("silu"))
            throw new FormatException(file, "hidden_act '" + act + "' is not supported (only silu)");
        if (c.path("mlp_bias").asBoolean(false))
            throw new FormatException(file, "mlp_bias true is not supported");
        boolean qwen2 = arch.equals("Qwen2ForCausalLM");
        boolean attentionBias = qwen2 || c.path("attention_bias").asBoolean(false);
        // every supported family defaults to untied heads in transformers
        boolean tied = c.path("tie_word_embeddings").asBoolean(false);
        int maxPos = optInt(file, c, "max_position_embeddings", 2048);
        float eps = (float) optDouble(file, c, "rms_norm_eps", 1e-6);
        int window = slidingWindow(file, c, arch, layers);
        float theta;
        LlamaConfig.RopeScaling scaling;
        JsonNode rp = c.get("rope_parameters");
        if (rp != null && rp.isObject()) {
            // transformers 5 folds rope_theta and rope_scaling into one rope_parameters object
            // (per attention type for models that mix types: full attention is the one used here)
            if (!rp.has("rope_type") && !rp.has("rope_theta") && rp.has("full_attention")) rp = rp.get("full_attention");
            theta = (float) optDouble(file, rp, "rope_theta", 10000.0);
            scaling = rp.has("rope_type") || rp.has("type") ? ropeScaling(file, rp, maxPos) : null;
        } else {
            theta = (float) optDouble(file, c, "rope_theta", 10000.0);
            scaling = ropeScaling(file, c.get("rope_scaling"), maxPos);
        }
        // a non-positive or non-finite value here gives NaN activations, not an error, further on
        if (!(theta > 0 && Float.isFinite(theta))) throw new FormatException(file, "rope_theta must be a positive number, got " + theta);
        if (!(eps > 0 && Float.isFinite(eps))) throw new FormatException(file, "rms_norm_eps must be a positive number, got " + eps);
        return new LlamaConfig(arch, hidden, inter, layers, heads, kvHeads, headDim, vocab, maxPos, eps, theta,
                scaling, tied, attentionBias, tokenId(file, c, "bos_token_id"), tokenId(file, c, "eos_token_id"), window);
    }

    /** Mistral's default when config.json has no {@code sliding_window} key (transformers' MistralConfig). */
    static final int MISTRAL_DEFAULT_WINDOW = 4096;
    /** Qwen2's defaults (transformers' Qwen2Config): the window, and the first layer index that uses it. */
    static final int QWEN2_DEFAULT_WINDOW = 4096, QWEN2_DEFAULT_MAX_WINDOW_LAYERS = 28;

    /**
     * The sliding window as transformers applies it (0 = none). An explicit {@code layer_types}
     * list decides which layers slide; otherwise Mistral slides in every layer whenever
     * {@code sliding_window} is not null (absent = 4096), Qwen2 only with {@code use_sliding_window}
     * and then in layers ≥ {@code max_window_layers}, Llama never. One window for all layers is
     * supported; a model that mixes windowed and full layers is an error naming the field.
     */
    private static int slidingWindow(Path file, JsonNode c, String arch, int layers) {
        JsonNode types = c.get("layer_types");
        if (types != null && !types.isNull()) {
            if (!types.isArray() || types.size() != layers)
                throw new FormatException(file, "layer_types must be a list of " + layers + " entries, got " + types);
            int sliding = 0;
            for (JsonNode t : types) {
                switch (t.asText()) {
                    case "sliding_attention" -> sliding++;
                    case "full_attention" -> { }
                    default -> throw new FormatException(file, "layer_types entry '" + t.asText()
                            + "' is not supported (full_attention or sliding_attention)");
                }
            }
            if (sliding == 0) return 0;
            if (sliding != layers)
                throw new FormatException(file, "layer_types mixes full_attention and sliding_attention layers ("
                        + sliding + " of " + layers + " sliding): per-layer sliding windows are not supported");
            if (!has(c, "sliding_window")) throw new FormatException(file, "layer_types has sliding_attention layers but sliding_window is missing or null");
            return positiveInt(file, c.get("sliding_window"), "sliding_window");
        }
        switch (arch) {
            case "MistralForCausalLM" -> {
                if (!c.has("sliding_window")) return MISTRAL_DEFAULT_WINDOW;
                return c.get("sliding_window").isNull() ? 0 : positiveInt(file, c.get("sliding_window"), "sliding_window");
            }
            case "Qwen2ForCausalLM" -> {
                JsonNode use = c.get("use_sliding_window");
                if (use == null || use.isNull() || (use.isBoolean() && !use.asBoolean())) return 0;
                if (!use.isBoolean()) throw new FormatException(file, "use_sliding_window must be true or false, got " + use);
                int window;
                if (!c.has("sliding_window")) window = QWEN2_DEFAULT_WINDOW;
                else if (c.get("sliding_window").isNull()) return 0;
                else window = positiveInt(file, c.get("sliding_window"), "sliding_window");
                JsonNode mwl = c.get("max_window_layers");
                int first = mwl == null || mwl.isNull() ? QWEN2_DEFAULT_MAX_WINDOW_LAYERS : nonNegativeInt(file, mwl, "max_window_layers");
                if (first >= layers) return 0;       // no layer index reaches max_window_layers: full attention everywhere
                if (first > 0)
                    throw new FormatException(file, "use_sliding_window true with max_window_layers " + first + " of " + layers
                            + " layers mixes full and sliding-window layers: per-layer sliding windows are not supported");
                return window;
            }
            default -> { return 0; } // Llama has no sliding window in transformers
        }
    }

    private static String architecture(Path file, JsonNode c) {
        JsonNode a = c.get("architectures");
        String arch;
        if (a != null && a.isArray() && !a.isEmpty()) {
            arch = a.get(0).asText();
        } else {
            // configs saved without `architectures` still name the family
            arch = switch (c.path("model_type").asText("")) {
                case "llama" -> "LlamaForCausalLM";
                case "mistral" -> "MistralForCausalLM";
                case "qwen2" -> "Qwen2ForCausalLM";
                default -> throw new FormatException(file, "no architectures and unknown model_type '"
                        + c.path("model_type").asText("") + "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
            };
        }
        if (!arch.equals("LlamaForCausalLM") && !arch.equals("MistralForCausalLM") && !arch.equals("Qwen2ForCausalLM"))
            throw new FormatException(file, "unknown architecture '" + arch
                    + "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
        return arch;
    }

    private static LlamaConfig.RopeScaling ropeScaling(Path file, JsonNode r, int maxPos) {
        if (r == null || r.isNull()) return null;
        if (!r.isObject()) throw new FormatException(file, "rope_scaling must be an object or null");
        String type = r.has("rope_type") ? r.get("rope_type").asText() : r.path("type").asText("");
        if (type.equals("default")) return null;
        if (!type.equals("llama3"))
            throw new FormatException(file, "rope_scaling type '" + type + "' is not supported (only llama3)");
        float factor = (float) reqDouble(file, r, "rope_scaling.factor", "factor");
        float low = (float) reqDouble(file, r, "rope_scaling.low_freq_factor", "low_freq_factor");
        float high = (float) reqDouble(file, r, "rope_scaling.high_freq_factor", "high_freq_factor");
        int orig = r.has("original_max_position_embeddings") ? r.get("original_max_position_embeddings").asInt() : maxPos;
        if (factor <= 0 || low <= 0 || high <= low || orig <= 0)
            throw new FormatException(file, "rope_scaling values out of range: " + r);
        return new LlamaConfig.RopeScaling("llama3", factor, low, high, orig);
    }

    /** {@code eos_token_id} may be a list (Llama 3.1): the first one is the primary EOS. */
    private static int tokenId(Path file, JsonNode c, String key) {
        JsonNode n = c.get(key);
        if (n == null || n.isNull()) return -1;
        if (n.isArray()) return n.isEmpty() ? -1 : n.get(0).asInt();
        if (!n.canConvertToInt()) throw new FormatException(file, key + " is not an integer: " + n);
        return n.asInt();
    }

    /**
     * Every id that ends generation for a model directory: {@code eos_token_id} of
     * {@code config.json} and of {@code generation_config.json}, each an int or a list (Llama 3.1
     * Instruct stops on three). Empty when neither names one.
     */
    public static int[] stopTokenIds(Path dir) {
        java.util.LinkedHashSet<Integer> ids = new java.util.LinkedHashSet<>();
        for (String f : new String[] {"config.json", "generation_config.json"}) {
            Path p = dir.resolve(f);
            if (!Files.isRegularFile(p)) continue;
            JsonNode n;
            try {
                n = JSON.readTree(Files.readString(p, StandardCharsets.UTF_8)).path("eos_token_id");
            } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
                throw new FormatException(p, JsonErrors.describe(e));
            } catch (IOException e) {
                throw new FormatException(p, "cannot read: " + firstLine(e.getMessage()));
            }
            if (n.isArray()) n.forEach(x -> ids.add(x.asInt()));
            else if (n.canConvertToInt()) ids.add(n.asInt());
        }
        return ids.stream().mapToInt(Integer::intValue).toArray();
    }

    private static boolean has(JsonNode c, String k) { return c.has(k) && !c.get(k).isNull(); }

    private static int reqInt(Path file, JsonNode c, String k) {
        if (!has(c, k)) throw new FormatException(file, "missing field " + k);
        return positiveInt(file, c.get(k), k);
    }

    private static int optInt(Path file, JsonNode c, String k, int dflt) {
        return has(c, k) ? positiveInt(file, c.get(k), k) : dflt;
    }

    private static int positiveInt(Path file, JsonNode n, String k) {
        if (!n.isIntegralNumber() || !n.canConvertToInt() || n.asInt() <= 0)
            throw new FormatException(file, k + " must be a positive integer, got " + n);
        return n.asInt();
    }

    private static int nonNegativeInt(Path file, JsonNode n, String k) {
        if (!n.isIntegralNumber() || !n.canConvertToInt() || n.asInt() < 0)
            throw new FormatException(file, k + " must be a non-negative integer, got " + n);
        return n.asInt();
    }

    private static double optDouble(Path file, JsonNode c, String k, double dflt) {
        if (!has(c, k)) return dflt;
        if (!c.get(k).isNumber()) throw new FormatException(file, k + " must be a number, got " + c.get(k));
        return c.get(k).asDouble();
    }

    private static double reqDouble(Path file, JsonNode c, String label, String k) {
        if (!has(c, k) || !c.get(k).isNumber()) throw new FormatException(file, "missing or non-numeric " + label);
        return c.get(k).asDouble();
    }

    private static String firstLine(String s) { return s == null ? "" : s.lines().findFirst().orElse(""); }

    // ------------------------------------------------------------------ writing

    /** The config as transformers writes it for this family; {@code torchDtype} e.g. "float32". */
    public static ObjectNode toJson(LlamaConfig cfg, String torchDtype) {
        ObjectNode o = JSON.createObjectNode();
        String modelType = switch (cfg.architecture()) {
            case "MistralForCausalLM" -> "mistral";
            case "Qwen2ForCausalLM" -> "qwen2";
            default -> "llama";
        };
        o.putArray("architectures").add(cfg.architecture() == null ? "LlamaForCausalLM" : cfg.architecture());
        o.put("model_type", modelType);
        o.put("hidden_size", cfg.hiddenSize());
        o.put("intermediate_size", cfg.intermediateSize());
        o.put("num_hidden_layers", cfg.numLayers());
        o.put("num_attention_heads", cfg.numHeads());
        o.put("num_key_value_heads", cfg.numKvHeads());
        o.put("head_dim", cfg.headDim());
        o.put("vocab_size", cfg.vocabSize());
        o.put("max_position_embeddings", cfg.maxPositions());
        o.put("rms_norm_eps", (double) cfg.rmsNormEps());
        o.put("rope_theta", (double) cfg.ropeTheta());
        if (cfg.ropeScaling() == null) {
            o.putNull("rope_scaling");
        } else {
            LlamaConfig.RopeScaling r = cfg.ropeScaling();
            ObjectNode rs = o.putObject("rope_scaling");
            rs.put("rope_type", r.type());
            rs.put("factor", (double) r.factor());
            rs.put("low_freq_factor", (double) r.lowFreqFactor());
            rs.put("high_freq_factor", (double) r.highFreqFactor());
            rs.put("original_max_position_embeddings", r.originalMaxPositions());
        }
        o.put("tie_word_embeddings", cfg.tieWordEmbeddings());
        if (!modelType.equals("qwen2")) o.put("attention_bias", cfg.attentionBias());
        if (modelType.equals("llama")) o.put("mlp_bias", false);
        o.put("hidden_act", "silu");
        if (cfg.bosTokenId() >= 0) o.put("bos_token_id", cfg.bosTokenId()); else o.putNull("bos_token_id");
        if (cfg.eosTokenId() >= 0) o.put("eos_token_id", cfg.eosTokenId()); else o.putNull("eos_token_id");
        switch (modelType) {
            case "mistral" -> {
                if (cfg.hasSlidingWindow()) o.put("sliding_window", cfg.slidingWindow()); else o.putNull("sliding_window");
            }
            case "qwen2" -> {
                o.put("use_sliding_window", cfg.hasSlidingWindow());
                if (cfg.hasSlidingWindow()) {
                    o.put("sliding_window", cfg.slidingWindow());
                    o.put("max_window_layers", 0); // every layer slides
                } else {
                    o.putNull("sliding_window");
                }
            }
            default -> {
                if (cfg.hasSlidingWindow())
                    throw new IllegalArgumentException("a " + cfg.architecture() + " config cannot carry sliding window "
                            + cfg.slidingWindow() + " (only MistralForCausalLM and Qwen2ForCausalLM have one)");
            }
        }
        o.put("torch_dtype", torchDtype);
        return o;
    }

    /** Writes {@code config.json} atomically; {@code extra} fields (e.g. from the source) are added. */
    public static void write(Path file, LlamaConfig cfg, String torchDtype, Map<String, Object> extra) {
        ObjectNode o = toJson(cfg, torchDtype);
        if (extra != null) extra.forEach((k, v) -> o.set(k, JSON.valueToTree(v)));
        AtomicFiles.writeFile(file, tmp -> Files.writeString(tmp, JSON.writeValueAsString(o) + "\n"));
    }
}
