package org.sparselora.engine.io;

import java.nio.file.Path;

/**
 * A file (checkpoint, adapter, tokenizer, dataset) that cannot be used as given. The message is one
 * line that names the file and what is wrong with it, so the CLI can print it as is. It extends
 * {@link IllegalArgumentException} because the file is the caller's input (and {@link WeightSource}
 * documents that type for a missing key).
 */
public class FormatException extends IllegalArgumentException {

    public FormatException(Path file, String problem) {
        super(file + ": " + problem);
    }

    public FormatException(Path file, String problem, Throwable cause) {
        super(file + ": " + problem, cause);
    }
}
