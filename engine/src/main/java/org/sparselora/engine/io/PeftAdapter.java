package org.sparselora.engine.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.model.LlamaConfig;

/**
 * PEFT LoRA adapters on disk: {@code adapter_config.json} + {@code adapter_model.safetensors} with
 * PEFT's tensor names ({@code base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight}
 * (r, in) and {@code …lora_B.weight} (out, r)), so an adapter written here loads with
 * {@code PeftModel.from_pretrained} and one saved by PEFT loads here. Only what this engine can
 * apply is accepted: plain LoRA on the seven Llama projections, no bias, DoRA, per-module rank or
 * alpha patterns or extra saved modules; anything else is an error naming the file and the field.
 */
public final class PeftAdapter {

    public static final String CONFIG = "adapter_config.json";
    public static final String WEIGHTS = "adapter_model.safetensors";
    /** The seven projections LoRA can target, with the block each lives in. */
    public static final Map<String, String> MODULES;
    static {
        LinkedHashMap<String, String> m = new LinkedHashMap<>();
        for (String s : List.of("q_proj", "k_proj", "v_proj", "o_proj")) m.put(s, "self_attn");
        for (String s : List.of("gate_proj", "up_proj", "down_proj")) m.put(s, "mlp");
        MODULES = java.util.Collections.unmodifiableMap(m);
    }

    private static final Pattern KEY = Pattern.compile(
            "base_model\\.model\\.model\\.layers\\.(\\d+)\\.(self_attn|mlp)\\.([a-z_]+)\\.lora_([AB])\\.weight");
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private PeftAdapter() {}

    public static String loraAName(int layer, String module) { return name(layer, module, "A"); }

    public static String loraBName(int layer, String module) { return name(layer, module, "B"); }

    private static String name(int layer, String module, String ab) {
        String block = MODULES.get(module);
        if (block == null) throw new IllegalArgumentException("not a LoRA target module: " + module);
        return "base_model.model.model.layers." + layer + "." + block + "." + module + ".lora_" + ab + ".weight";
    }

    /** A parsed PEFT tensor name. */
    public record LoraKey(int layer, String module, boolean isA) {}

    /** Parses a PEFT LoRA tensor name, or returns null if it is not one. */
    public static LoraKey parseKey(String key) {
        Matcher m = KEY.matcher(key);
        if (!m.matches() || !m.group(2).equals(MODULES.get(m.group(3)))) return null;
        return new LoraKey(Integer.parseInt(m.group(1)), m.group(3), m.group(4).equals("A"));
    }

    /** (in, out) of a target projection in a model of this config. */
    public static int[] inOut(LlamaConfig c, String module) {
        int h = c.hiddenSize();
        return switch (module) {
            case "q_proj" -> new int[] {h, c.qDim()};
            case "k_proj", "v_proj" -> new int[] {h, c.kvDim()};
            case "o_proj" -> new int[] {c.qDim(), h};
            case "gate_proj", "up_proj" -> new int[] {h, c.intermediateSize()};
            case "down_proj" -> new int[] {c.intermediateSize(), h};
            default -> throw new IllegalArgumentException("not a LoRA target module: " + module);
        };
    }

    // ------------------------------------------------------------------ reading

    /** Reads a PEFT adapter directory; tensors are converted to fp32. */
    public static AdapterFiles read(Path dir) {
        Path cfgFile = dir.resolve(CONFIG);
        if (!Files.isRegularFile(cfgFile)) throw new FormatException(dir, "no " + CONFIG + " (is this a PEFT adapter directory?)");
        Path weights = dir.resolve(WEIGHTS);
        if (!Files.isRegularFile(weights)) {
            String hint = Files.isRegularFile(dir.resolve("adapter_model.bin"))
                    ? " (adapter_model.bin is a pickle; re-save it with safe_serialization=True)" : "";
            throw new FormatException(dir, "no " + WEIGHTS + hint);
        }
        JsonNode c;
        try {
            c = JSON.readTree(Files.readString(cfgFile));
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new FormatException(cfgFile, JsonErrors.describe(e));
        } catch (IOException e) {
            throw new FormatException(cfgFile, "cannot read: " + e.getMessage().lines().findFirst().orElse(""));
        }
        if (c == null || !c.isObject()) throw new FormatException(cfgFile, "not a JSON object");
        LinkedHashMap<String, float[]> tensors = new LinkedHashMap<>();
        LinkedHashMap<String, int[]> shapes = new LinkedHashMap<>();
        Set<String> modulesInFile = new LinkedHashSet<>();
        try (Safetensors st = Safetensors.open(weights)) {
            for (HostTensor t : st.tensors().values()) {
                LoraKey k = parseKey(t.name());
                if (k == null)
                    throw new FormatException(weights, "tensor '" + t.name() + "' is not a LoRA A/B weight of a Llama projection");
                if (!t.dtype().isFloating() || t.shape().length != 2)
                    throw new FormatException(weights, "tensor '" + t.name() + "' must be a 2-D float matrix, got "
                            + t.dtype() + " " + Arrays.toString(t.shape()));
                modulesInFile.add(k.module());
                tensors.put(t.name(), t.toFloats());
                shapes.put(t.name(), t.shape().clone());
            }
        }
        LoraSpec spec = parseConfig(cfgFile, c, modulesInFile);
        AdapterFiles a = new AdapterFiles(spec, tensors, shapes);
        checkPairs(weights, a);
        return a;
    }

    private static LoraSpec parseConfig(Path f, JsonNode c, Set<String> modulesInFile) {
        String type = c.path("peft_type").asText("LORA");
        if (!type.equals("LORA")) throw new FormatException(f, "peft_type '" + type + "' is not supported (only LORA)");
        expect(f, c, "bias", "none");
        if (c.has("task_type") && !c.get("task_type").isNull()) expect(f, c, "task_type", "CAUSAL_LM");
        if (c.path("fan_in_fan_out").asBoolean(false)) throw new FormatException(f, "fan_in_fan_out true is not supported");
        if (c.path("use_dora").asBoolean(false)) throw new FormatException(f, "use_dora true is not supported");
        for (String k : List.of("rank_pattern", "alpha_pattern"))
            if (c.has(k) && !c.get(k).isNull() && !c.get(k).isEmpty())
                throw new FormatException(f, k + " is not supported (one rank and alpha for every module)");
        // PEFT fields that change which weights an adapter touches, or how: ignoring one would load a different adapter
        for (String k : UNSUPPORTED)
            if (isSet(c.get(k))) throw new FormatException(f, k + " is set (" + abbreviate(c.get(k)) + "), which is not supported: refusing rather than ignoring it");
        JsonNode mts = c.get("modules_to_save");
        if (mts != null && !mts.isNull() && !mts.isEmpty()) throw new FormatException(f, "modules_to_save is not supported: " + mts);
        JsonNode rn = c.get("r");
        if (rn == null || !rn.isIntegralNumber() || rn.asInt() <= 0) throw new FormatException(f, "r must be a positive integer, got " + rn);
        JsonNode alpha = c.get("lora_alpha");
        if (alpha != null && !alpha.isNumber()) throw new FormatException(f, "lora_alpha must be a number, got " + alpha);
        JsonNode dropout = c.get("lora_dropout");
        if (dropout != null && !dropout.isNull() && !dropout.isNumber())
            throw new FormatException(f, "lora_dropout must be a number, got " + dropout);
        List<String> targets = new ArrayList<>();
        JsonNode tm = c.get("target_modules");
        if (tm != null && tm.isArray()) {
            for (JsonNode t : tm) {
                // PEFT matches a target by the last component of the module path
                String s = t.asText();
                String shortName = s.substring(s.lastIndexOf('.') + 1);
                if (!MODULES.containsKey(shortName))
                    throw new FormatException(f, "target module '" + s + "' is not one of " + MODULES.keySet());
                if (!targets.contains(shortName)) targets.add(shortName);
            }
        } else if (tm != null && tm.isTextual()) {
            // a regex in PEFT: the tensors present say which modules it matched
            for (String m : MODULES.keySet()) if (modulesInFile.contains(m)) targets.add(m);
        } else {
            throw new FormatException(f, "target_modules must be a list or a string, got " + tm);
        }
        for (String m : modulesInFile)
            if (!targets.contains(m)) throw new FormatException(f, "the weights hold LoRA tensors for " + m + ", which target_modules does not list");
        JsonNode base = c.get("base_model_name_or_path");
        return new LoraSpec(rn.asInt(), alpha == null ? 8f : (float) alpha.asDouble(),
                dropout == null || dropout.isNull() ? 0f : (float) dropout.asDouble(), targets,
                c.path("use_rslora").asBoolean(false), base == null || base.isNull() ? null : base.asText());
    }

    static final List<String> UNSUPPORTED = List.of("layer_replication", "layers_to_transform", "layers_pattern", "exclude_modules",
            "alora_invocation_tokens", "trainable_token_indices", "target_parameters", "megatron_config", "use_qalora", "lora_bias");

    /** null, false, "", [] and {} mean "not used" in PEFT configs. */
    private static boolean isSet(JsonNode v) {
        if (v == null || v.isNull()) return false;
        if (v.isBoolean()) return v.booleanValue();
        if (v.isContainerNode() || v.isTextual()) return !v.isEmpty() && !(v.isTextual() && v.asText().isEmpty());
        return true;
    }

    private static String abbreviate(JsonNode v) {
        String s = v.toString();
        return s.length() > 60 ? s.substring(0, 60) + "…" : s;
    }

    private static void expect(Path f, JsonNode c, String key, String value) {
        String v = c.path(key).asText(value);
        if (!v.equals(value)) throw new FormatException(f, key + " '" + v + "' is not supported (only " + value + ")");
    }

    /** Every A has its B, ranks agree with r, and the inner dimensions line up. */
    private static void checkPairs(Path where, AdapterFiles a) {
        int r = a.spec().r();
        for (Map.Entry<String, int[]> e : a.shapes().entrySet()) {
            LoraKey k = parseKey(e.getKey());
            int[] s = e.getValue();
            String partner = k.isA() ? loraBName(k.layer(), k.module()) : loraAName(k.layer(), k.module());
            if (!a.shapes().containsKey(partner))
                throw new FormatException(where, "tensor '" + e.getKey() + "' has no partner '" + partner + "'");
            int rankDim = k.isA() ? s[0] : s[1];
            if (rankDim != r)
                throw new FormatException(where, "tensor '" + e.getKey() + "' has shape " + Arrays.toString(s)
                        + " but r is " + r);
            if (a.tensors().get(e.getKey()).length != s[0] * s[1])
                throw new FormatException(where, "tensor '" + e.getKey() + "' has " + a.tensors().get(e.getKey()).length
                        + " values for shape " + Arrays.toString(s));
        }
    }

    /**
     * Checks the adapter against the model it is applied to: every LoRA matrix has the model's
     * in/out dimensions and every layer index exists. Errors name {@code where} and the tensor.
     */
    public static void validate(Path where, AdapterFiles a, LlamaConfig c) {
        checkPairs(where, a);
        for (Map.Entry<String, int[]> e : a.shapes().entrySet()) {
            LoraKey k = parseKey(e.getKey());
            if (k == null) throw new FormatException(where, "tensor '" + e.getKey() + "' is not a PEFT LoRA name");
            if (k.layer() >= c.numLayers())
                throw new FormatException(where, "tensor '" + e.getKey() + "' is for layer " + k.layer()
                        + " but the model has " + c.numLayers() + " layers");
            int[] io = inOut(c, k.module());
            int[] expected = k.isA() ? new int[] {a.spec().r(), io[0]} : new int[] {io[1], a.spec().r()};
            if (!Arrays.equals(e.getValue(), expected))
                throw new FormatException(where, "tensor '" + e.getKey() + "' has shape " + Arrays.toString(e.getValue())
                        + " but the model needs " + Arrays.toString(expected));
        }
    }

    // ------------------------------------------------------------------ writing

    /** The {@code adapter_config.json} content PEFT writes for this spec. */
    public static ObjectNode configJson(LoraSpec s) {
        ObjectNode o = JSON.createObjectNode();
        o.putObject("alpha_pattern");
        o.putNull("auto_mapping");
        if (s.baseModelNameOrPath() == null) o.putNull("base_model_name_or_path");
        else o.put("base_model_name_or_path", s.baseModelNameOrPath());
        o.put("bias", "none");
        o.put("fan_in_fan_out", false);
        o.put("inference_mode", true);
        o.put("init_lora_weights", true);
        o.putNull("layers_pattern");
        o.putNull("layers_to_transform");
        o.put("lora_alpha", (double) s.loraAlpha());
        o.put("lora_dropout", (double) s.loraDropout());
        o.putNull("modules_to_save");
        o.put("peft_type", "LORA");
        o.put("r", s.r());
        o.putObject("rank_pattern");
        o.putNull("revision");
        var tm = o.putArray("target_modules");
        s.targetModules().forEach(tm::add);
        o.put("task_type", "CAUSAL_LM");
        o.put("use_dora", false);
        o.put("use_rslora", s.useRslora());
        return o;
    }

    /**
     * Writes the adapter directory (config + F32 safetensors). Both files are written into a fresh
     * temporary directory that then replaces {@code dir} whole, so a reader never sees a new config
     * with old weights; other files in an existing {@code dir} are not kept.
     */
    public static void write(Path dir, AdapterFiles a) {
        for (String t : a.spec().targetModules())
            if (!MODULES.containsKey(t)) throw new IllegalArgumentException("not a LoRA target module: " + t);
        for (String k : a.tensors().keySet())
            if (parseKey(k) == null) throw new IllegalArgumentException("not a PEFT LoRA tensor name: " + k);
        checkPairs(dir, a);
        String json;
        try {
            json = JSON.writeValueAsString(configJson(a.spec())) + "\n";
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        AtomicFiles.writeDirectory(dir, tmp -> {
            Files.writeString(tmp.resolve(CONFIG), json);
            Safetensors.writeFloats(tmp.resolve(WEIGHTS), a.tensors(), a.shapes(), DType.F32, Map.of("format", "pt"));
        });
    }
}
