package org.sparselora.engine.io;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A LoRA adapter in memory, as read from or written to a PEFT directory. {@code tensors} are keyed
 * by PEFT's on-disk names ({@link PeftAdapter#loraAName}, {@link PeftAdapter#loraBName}), fp32,
 * row-major: {@code lora_A} is (r, in), {@code lora_B} is (out, r), with the shape in {@code shapes}.
 */
public record AdapterFiles(LoraSpec spec, LinkedHashMap<String, float[]> tensors, Map<String, int[]> shapes) {}
