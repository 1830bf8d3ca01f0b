package org.sparselora.actors.engine;

import java.nio.file.Files;
import java.nio.file.Path;
import org.sparselora.actors.job.JobSpecException;
import org.sparselora.engine.io.HfConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.RandomWeights;

/**
 * Random-init base models and synthetic timing batches for jobs that measure speed, not learning
 * (issue 6's scaling run): {@code model: random:<preset>} with the presets of {@link ModelPresets}
 * ({@code llama3-8b} and {@code llama3.2-1b} are the shapes of StepBenchmark's {@code 8b}/{@code 1b}), or
 * {@code random:<config.json>} for any HF Llama config; the weights are drawn on each worker's
 * backend by {@code LlamaWeights.random} (bf16 on the GPU, never through the host) with the same
 * seed on every worker. {@link #batch} is StepBenchmark's timing batch: uniform random tokens,
 * positions 0…seq−1, no padding, the loss on each row's last {@code outputTokens} positions (target =
 * the next token of the row, the last one a fresh draw).
 *
 * <p>Pretraining from scratch: the presets {@code tiny-1m}, {@code small-8m} and {@code base-30m}
 * ({@link RandomWeights#preset}) are small Llama shapes whose vocabulary is the job's tokenizer's
 * ({@link #config(String, int, int, int)}); without a tokenizer they take Llama 2's 32000 / 1 / 2.
 */
public final class RandomModel {
    public static final String PREFIX = "random:";

    private RandomModel() {}

    public static boolean isRandom(String model) { return model.startsWith(PREFIX); }

    /** The config a {@code random:} model names; a bad name or file fails naming the {@code model} field. */
    public static LlamaConfig config(String model) { return config(model, 32000, 1, 2); }

    /** {@link #config(String)} with a preset's vocabulary and special ids taken from the tokenizer. */
    public static LlamaConfig config(String model, int vocabSize, int bosId, int eosId) {
        String what = model.substring(PREFIX.length());
        LlamaConfig preset = RandomWeights.preset(what, vocabSize, bosId, eosId);   // the small pretraining presets
        if (preset == null) preset = ModelPresets.of(what);                          // the published model shapes
        if (preset != null) return preset;
        Path p = Path.of(what);
        if (what.isEmpty() || !Files.isRegularFile(p) && !Files.isRegularFile(p.resolve("config.json")))
            throw new JobSpecException("model", "'" + model + "': expected random:<preset> (" + ModelPresets.names() + ", " + RandomWeights.PRESET_NAMES
                    + ") or random:<HF config.json>" + (what.isEmpty() ? "" : " (" + what + ": no such file)"));
        try {
            return HfConfig.read(p);
        } catch (RuntimeException e) {
            throw new JobSpecException("model", "'" + model + "': " + e.getMessage());
        }
    }

    /** Validates the name (and the config file it names). */
    public static void check(String model) { config(model); }

    /** The timing batch of StepBenchmark ({@link Batch#synthetic}) for this model's vocabulary. */
    public static Batch batch(LlamaConfig cfg, int rows, int seq, int outputTokens, long seed) {
        return Batch.synthetic(cfg.vocabSize(), rows, seq, outputTokens, seed);
    }
}
