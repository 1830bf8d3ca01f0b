package org.sparselora.actors.cli;

import java.nio.file.Path;
import picocli.CommandLine.Option;

/** The optional {@code --adapter} of the commands that run the base model with or without a PEFT adapter (score, eval, generate). */
final class AdapterOption {

    @Option(names = "--adapter", paramLabel = "DIR", description = "PEFT adapter directory (adapter_config.json + adapter_model.safetensors)")
    Path dir;
}
