package org.sparselora.actors.pipeline;

import java.nio.file.Path;
import org.sparselora.engine.train.TrainerState;

/**
 * Writes what a job trained in its user-facing format into {@code <output_dir>/<directory()>} when
 * the job stops: LoRA mode the PEFT adapter ({@code adapter_model.safetensors} +
 * {@code adapter_config.json}) into {@code adapter/}, full mode a HF model directory into
 * {@code model/}.
 */
@FunctionalInterface
public interface AdapterExporter {
    void export(TrainerState state, Path dir) throws Exception;

    /** The directory under output_dir that {@link #export} writes. */
    default String directory() { return "adapter"; }

    /** An exporter writing into {@code <output_dir>/<directory>}. */
    static AdapterExporter into(String directory, AdapterExporter export) {
        return new AdapterExporter() {
            @Override public void export(TrainerState state, Path dir) throws Exception { export.export(state, dir); }

            @Override public String directory() { return directory; }
        };
    }
}
