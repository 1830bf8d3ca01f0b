package org.sparselora.engine.tokenizer;

import java.nio.file.Files;
import java.nio.file.Path;
import org.sparselora.engine.io.FormatException;

/**
 * Picks the tokenizer implementation for a path: a llama2.c {@code tokenizer.bin} (any
 * {@code .bin} file), a HF {@code tokenizer.json}, or a model directory holding one of them.
 */
public final class Tokenizers {

    private Tokenizers() {}

    public static Tokenizer load(Path path) {
        if (Files.isDirectory(path)) {
            if (Files.isRegularFile(path.resolve("tokenizer.json"))) return HfTokenizer.load(path.resolve("tokenizer.json"));
            if (Files.isRegularFile(path.resolve("tokenizer.bin"))) return Llama2cTokenizer.load(path.resolve("tokenizer.bin"));
            String hint = Files.isRegularFile(path.resolve("tokenizer.model"))
                    ? " (only a SentencePiece tokenizer.model is there: convert it to tokenizer.json with transformers)" : "";
            throw new FormatException(path, "no tokenizer.json or tokenizer.bin in this directory" + hint);
        }
        if (!Files.isRegularFile(path)) throw new FormatException(path, "tokenizer file not found");
        String name = path.getFileName().toString();
        if (name.endsWith(".json")) return HfTokenizer.load(path);
        if (name.endsWith(".bin")) return Llama2cTokenizer.load(path);
        throw new FormatException(path, "unknown tokenizer file type (expected tokenizer.json or a llama2.c .bin)");
    }
}
