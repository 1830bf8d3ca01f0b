package org.sparselora.actors.engine;

import java.util.LinkedHashMap;
import java.util.Map;
import org.sparselora.engine.model.LlamaConfig;

/**
 * The shapes of the models the published sparsity configs were made for (and of the 1B the GPU
 * benchmark uses), by name: {@code random:<preset>} timing models and {@code sparsity check --preset}
 * read them from here. Values are the models' Hugging Face {@code config.json}s.
 */
public final class ModelPresets {

    private static final Map<String, LlamaConfig> PRESETS = new LinkedHashMap<>();

    static {
        PRESETS.put("llama3-8b", new LlamaConfig("LlamaForCausalLM", 4096, 14336, 32, 32, 8, 128, 128256, 8192, 1e-5f, 500000f,
                null, false, false, 128000, 128001));
        PRESETS.put("llama3.1-8b", new LlamaConfig("LlamaForCausalLM", 4096, 14336, 32, 32, 8, 128, 128256, 131072, 1e-5f, 500000f,
                new LlamaConfig.RopeScaling("llama3", 8f, 1f, 4f, 8192), false, false, 128000, 128001));
        PRESETS.put("llama3.2-1b", new LlamaConfig("LlamaForCausalLM", 2048, 8192, 16, 32, 8, 64, 128256, 131072, 1e-5f, 500000f,
                new LlamaConfig.RopeScaling("llama3", 32f, 1f, 4f, 8192), true, false, 128000, 128001));
        PRESETS.put("llama2-7b", new LlamaConfig("LlamaForCausalLM", 4096, 11008, 32, 32, 32, 128, 32000, 4096, 1e-5f, 10000f,
                null, false, false, 1, 2));
        PRESETS.put("llama2-13b", new LlamaConfig("LlamaForCausalLM", 5120, 13824, 40, 40, 40, 128, 32000, 4096, 1e-5f, 10000f,
                null, false, false, 1, 2));
    }

    private ModelPresets() {}

    /** The preset's shape, or null for an unknown name. */
    public static LlamaConfig of(String name) { return PRESETS.get(name); }

    /** The names, comma-separated, for error messages and help. */
    public static String names() { return String.join(", ", PRESETS.keySet()); }
}
