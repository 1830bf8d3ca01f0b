package org.sparselora.engine.train;

import java.util.LinkedHashMap;

/**
 * Everything needed to resume training bit-for-bit: the number of updates applied, and named fp32
 * tensors — LoRA parameters (PEFT names) and their AdamW moments ({@code name + ".exp_avg"},
 * {@code name + ".exp_avg_sq"}).
 */
public record TrainerState(int step, LinkedHashMap<String, float[]> tensors) {}
