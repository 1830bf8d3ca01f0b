package org.sparselora.engine.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.tokenizer.Tokenizers;

/**
 * The format half of the golden test, for the test that holds the engine against a HF/PEFT
 * fixture to call first: the F32 and sharded BF16 checkpoints hold the same config and values
 * (the exporter makes the weights bf16-representable), our tokenizer gives exactly HF's ids for the
 * score texts and decodes them back, and the PEFT adapter survives a Java write/read unchanged.
 * Checked on the real exported fixtures (transformers 5.17, PEFT 0.21) before they were committed.
 */
public final class GoldenFormatChecks {

    private GoldenFormatChecks() {}

    public static void verify(GoldenFixtures g) {
        assertEquals(g.model().config(), g.shardedModel().config(), "model/ vs model-bf16-sharded/ config");
        for (String n : g.model().names())
            assertArrayEquals(g.model().get(n).toFloats(), g.shardedModel().get(n).toFloats(), "F32 vs BF16 values of " + n);
        try (Tokenizer t = Tokenizers.load(g.tokenizerJson())) {
            List<String> texts = g.scoreTexts();
            List<int[]> ids = g.scoreIds();
            List<GoldenFixtures.ScoreLine> expected = g.scoreExpected(false);
            assertEquals(texts.size(), ids.size(), "score texts vs ids");
            for (int i = 0; i < texts.size(); i++) {
                int[] mine = t.encode(texts.get(i), true);
                assertArrayEquals(ids.get(i), mine, "tokenizer(text) of score text " + i);
                assertEquals(expected.get(i).tokens(), mine.length, "token count of score text " + i);
                assertEquals(texts.get(i), t.decode(mine), "decode of score text " + i);
            }
        }
        Path tmp;
        try {
            tmp = Files.createTempDirectory("golden-adapter");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        try {
            PeftAdapter.write(tmp.resolve("adapter"), g.adapter());
            AdapterFiles back = PeftAdapter.read(tmp.resolve("adapter"));
            assertEquals(g.adapter().spec(), back.spec());
            assertEquals(g.adapter().tensors().keySet(), back.tensors().keySet());
            for (String k : back.tensors().keySet())
                assertArrayEquals(g.adapter().tensors().get(k), back.tensors().get(k), "adapter tensor " + k);
        } finally {
            AtomicFiles.deleteQuietly(tmp);
        }
    }
}
