package org.sparselora.actors.engine;

import java.nio.file.Files;
import java.nio.file.Path;
import org.sparselora.actors.job.JobSpecException;
import org.sparselora.engine.io.HfConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Batch;

/**
 * Random-init base models and synthetic timing batches for jobs that measure speed, not learning
 * (issue 6's scaling run): {@code model: random:<preset>} with the presets {@code llama3-8b} and
 * {@code llama3.2-1b} (the shapes of StepBenchmark's {@code 8b}/{@code 1b}), or
 * {@code random:<config.json>} for any HF Llama config; the weights are drawn on each worker's
 * backend by {@code LlamaWeights.random} (bf16 on the GPU, never through the host) with the same
 * seed on every worker. {@link #batch} is StepBenchmark's timing batch: uniform random tokens,
 * positions 0…seq−1, no padding, the loss on each row's last {@code outputTokens} positions (target =
 * the next token of the row, the last one a fresh draw).
 */
public final class RandomModel {
    public static final String PREFIX = "random:";

    private RandomModel() {}

    public static boolean isRandom(String model) { return model.startsWith(PREFIX); }

    /** The config a {@code random:} model names; a bad name or file fails naming the {@code model} field. */
    public static LlamaConfig config(String model) {
        String what = model.substring(PREFIX.length());
        return switch (what) {
            case "llama3-8b" -> new LlamaConfig("LlamaForCausalLM", 4096, 14336, 32, 32, 8, 128, 128256, 8192, 1e-5f, 500000f,
                    null, false, false, 128000, 128001);
            case "llama3.2-1b" -> new LlamaConfig("LlamaForCausalLM", 2048, 8192, 16, 32, 8, 64, 128256, 131072, 1e-5f, 500000f,
                    new LlamaConfig.RopeScaling("llama3", 32f, 1f, 4f, 8192), true, false, 128000, 128001);
            default -> {
                Path p = Path.of(what);
                if (what.isEmpty() || !Files.isRegularFile(p) && !Files.isRegularFile(p.resolve("config.json")))
                    throw new JobSpecException("model", "'" + model + "': expected random:llama3-8b, random:llama3.2-1b or random:<HF config.json>"
                            + (what.isEmpty() ? "" : " (" + what + ": no such file)"));
                try {
                    yield HfConfig.read(p);
                } catch (RuntimeException e) {
                    throw new JobSpecException("model", "'" + model + "': " + e.getMessage());
                }
            }
        };
    }

    /** Validates the name (and the config file it names). */
    public static void check(String model) { config(model); }

    /** The timing batch of StepBenchmark ({@link Batch#synthetic}) for this model's vocabulary. */
    public static Batch batch(LlamaConfig cfg, int rows, int seq, int outputTokens, long seed) {
        return Batch.synthetic(cfg.vocabSize(), rows, seq, outputTokens, seed);
    }
}
