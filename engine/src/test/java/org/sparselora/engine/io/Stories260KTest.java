package org.sparselora.engine.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.generate.Generator;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Batch;

/**
 * The real {@code stories260K} llama2.c checkpoint reproduces llama2.c's reference: greedy ids from
 * BOS and the logits at position 0 (facts from {@code shared/data/README.md}). Needs the shared
 * data directory ({@code -Dsparselora.shared=DIR}); a missing directory fails, never skips.
 */
@Tag("shared-data")
class Stories260KTest {

    static Path sharedData() {
        String prop = System.getProperty("sparselora.shared");
        Path dir = Path.of(prop != null ? prop : "../shared").toAbsolutePath().normalize();
        Path data = dir.resolve("data");
        if (!Files.isDirectory(data))
            throw new AssertionError("shared data directory not found: " + data + " — pass the directory holding data/ with -Dsparselora.shared=DIR");
        return data;
    }

    static final int[] EXPECTED = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337};

    @Test
    void greedyFromBosMatchesLlama2c() {
        Path bin = sharedData().resolve("models/stories260K/stories260K.bin");
        assertTrue(Files.isRegularFile(bin), "missing " + bin);
        try (CpuBackend be = new CpuBackend(2); Llama2cCheckpoint ck = Llama2cCheckpoint.open(bin)) {
            assertEquals(64, ck.config().hiddenSize());
            assertEquals(5, ck.config().numLayers());
            assertEquals(4, ck.config().numKvHeads());
            LlamaModel m = new LlamaModel(be, LlamaWeights.upload(be, ck));
            int[] got = new Generator(m, null).generate(new int[] {1}, Generator.Options.greedy(20, -1));
            assertArrayEquals(EXPECTED, got);
            // position-0 logits through the cached path and through the batch forward
            float[] logits = m.forwardCached(new int[] {1}, 0, m.newKvCache(4), null);
            assertEquals(8.4043, logits[1], 1e-3);
            assertEquals(403, argmax(logits));
            assertEquals(17.0235, logits[403], 1e-3);
            Batch b = new Batch(1, 1, new int[] {1}, new int[] {403}, new int[] {0}, new int[] {0});
            float[] full = m.evaluate(b, null, null, true).logits();
            assertEquals(17.0235, full[403], 1e-3);
        }
    }

    static int argmax(float[] x) {
        int b = 0;
        for (int i = 1; i < x.length; i++) if (x[i] > x[b]) b = i;
        return b;
    }
}
