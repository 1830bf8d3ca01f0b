package org.sparselora.arcagi;

import java.nio.file.Path;
import org.sparselora.engine.model.Batch;

/**
 * The one place {@code arc pretrain} trains the base model: a step on a batch, and the weights
 * saved as a HF checkpoint. {@link PretrainCommand} makes exactly one of these
 * ({@link #create}); everything else (data stream, time budget, metrics, plot, tokenizer files) is
 * independent of how the weights learn.
 *
 * <p>FULL-PARAMETER TRAINING PLUGS IN HERE: the engine's trainer trains LoRA adapters only, so until
 * its full-parameter mode exists the implementation is {@link ReloraTrainer} (LoRA merged into the
 * weights every cycle, then a fresh adapter; embeddings and norms stay at their initial values).
 * See arc-agi/PRETRAIN-PLUGIN.md for what a full-parameter implementation needs.
 */
public interface BaseTrainer extends AutoCloseable {

    /** One optimizer step on {@code batch} (step is 0-based); the mean loss over its loss tokens. */
    double step(Batch batch, int step);

    /** The learning rate the step used (for the metrics). */
    double lr(int step);

    /** Writes the current weights as a HF checkpoint ({@code config.json} + {@code model.safetensors}) into {@code dir}. */
    void save(Path dir);

    /** What the trainer is, for the log and metrics. */
    String describe();

    @Override
    void close();

    /** The trainer {@code arc pretrain} uses. */
    static BaseTrainer create(org.sparselora.engine.model.LlamaModel model, org.sparselora.engine.model.LlamaWeights weights,
                              PretrainSettings settings) {
        return new ReloraTrainer(model, weights, settings);
    }

    /**
     * @param totalSteps steps planned (the schedule's length; a time budget may end the run earlier)
     * @param rank       ReLoRA's adapter rank (unused by a full-parameter trainer)
     * @param cycle      ReLoRA's steps between merges
     */
    record PretrainSettings(double lr, int warmupSteps, int totalSteps, int rank, int cycle, long seed) {}
}
