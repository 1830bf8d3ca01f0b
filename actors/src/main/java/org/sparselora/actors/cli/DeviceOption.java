package org.sparselora.actors.cli;

import org.sparselora.engine.backend.Backend;
import picocli.CommandLine.Option;

/** {@code --device} of the commands that run the model on one device (score, eval, generate, calibrate). */
final class DeviceOption {

    @Option(names = "--device", defaultValue = "cpu", paramLabel = "cpu|cuda[:N]", description = "backend (default: ${DEFAULT-VALUE})")
    String device;

    /** The backend it names (see {@link ModelFiles#backend}); close when done. */
    Backend backend() {
        return ModelFiles.backend(device);
    }
}
