package org.sparselora.arcagi;

import java.nio.file.Path;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaModel;

/**
 * The one place {@code arc pretrain} trains the base model: a step on a batch, and the weights
 * saved as a HF checkpoint. {@link PretrainCommand} makes exactly one of these
 * ({@link #create}); everything else (data stream, time budget, metrics, plot, tokenizer files) is
 * independent of how the weights learn. The trainer is {@link FullBaseTrainer}: every parameter.
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

    /** The trainer {@code arc pretrain} uses, over the model's own weights. */
    static BaseTrainer create(LlamaModel model, PretrainSettings settings) {
        return new FullBaseTrainer(model, settings);
    }

    /** @param totalSteps steps planned (the schedule's length; a time budget may end the run earlier) */
    record PretrainSettings(double lr, int warmupSteps, int totalSteps, long seed) {}
}
