package org.sparselora.actors.pipeline;

import java.nio.file.Path;
import org.sparselora.engine.train.TrainerState;

/** Writes the trained adapter in its user-facing format (PEFT {@code adapter_model.safetensors} +
 *  {@code adapter_config.json}) into {@code dir} when a job stops. */
@FunctionalInterface
public interface AdapterExporter {
    void export(TrainerState state, Path dir) throws Exception;
}
