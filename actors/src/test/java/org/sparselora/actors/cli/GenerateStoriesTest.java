package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * {@code sparselora generate} on llama2.c's stories260K from an empty prompt (BOS alone), greedy:
 * the text llama2.c prints. Reads {@code <sparselora.shared>/data} (default {@code ../shared});
 * a missing directory or file fails the test with the path to pass, it never skips.
 */
@Tag("shared-data")
class GenerateStoriesTest {

    static Path shared(String rel) {
        String prop = System.getProperty("sparselora.shared");
        Path base = Path.of(prop != null && !prop.isBlank() ? prop : "../shared").toAbsolutePath().normalize();
        Path data = base.resolve("data");
        if (!Files.isDirectory(data))
            fail("shared data directory not found: " + data + " (pass -Dsparselora.shared=DIR where DIR/data holds the shared models)");
        Path p = data.resolve(rel);
        if (!Files.exists(p)) fail("shared data file missing: " + p + " (pass -Dsparselora.shared=DIR)");
        return p;
    }

    @Test
    void greedyFromBosReproducesLlama2c() {
        CliRunner.Result r = CliRunner.run("generate", "--model", shared("models/stories260K/stories260K.bin").toString(),
                "--tokenizer", shared("tokenizers/llama2c-tok512/tok512.bin").toString(), "--prompt", "", "--max-new-tokens", "200");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().startsWith("Once upon a time, there was a little girl named Lily. She loved to play outside in the park."), r.out());
    }
}
