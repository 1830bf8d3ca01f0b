package org.sparselora.engine.io;

import java.util.List;

/**
 * The fields of a PEFT {@code adapter_config.json} this engine uses, as a plain record (the
 * trainer's {@code lora.LoraConfig} is mapped to and from it by the caller). The fixed fields of
 * the format ({@code peft_type LORA}, {@code bias none}, {@code task_type CAUSAL_LM},
 * {@code fan_in_fan_out false}) are checked on read and written as such.
 *
 * @param targetModules short module names: {@code q_proj k_proj v_proj o_proj gate_proj up_proj down_proj}
 */
public record LoraSpec(int r, float loraAlpha, float loraDropout, List<String> targetModules, boolean useRslora,
                       String baseModelNameOrPath) {

    public LoraSpec {
        if (r <= 0) throw new IllegalArgumentException("LoRA rank r must be positive, got " + r);
        targetModules = List.copyOf(targetModules);
    }

    /** PEFT's scaling: alpha/r, or alpha/√r with rsLoRA. */
    public float scaling() {
        return useRslora ? (float) (loraAlpha / Math.sqrt(r)) : loraAlpha / r;
    }
}
