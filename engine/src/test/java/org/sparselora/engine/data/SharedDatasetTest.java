package org.sparselora.engine.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.io.SharedData;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.tokenizer.Tokenizers;
import org.sparselora.engine.model.Batch;

/** The real datasets in shared/data read, tokenized with tok512 and batched. */
@Tag("shared-data")
class SharedDatasetTest {

    @Test
    void gsm8kOriginalAndLlmAdaptersCopyReadCompletely() {
        DatasetReader.Dataset g = DatasetReader.read(SharedData.file("gsm8k/train.jsonl"), null, DatasetReader.Options.DEFAULT);
        assertEquals(DatasetFormat.GSM8K, g.format());
        assertEquals(7473, g.examples().size());
        assertNull(g.report());
        DatasetReader.Dataset a = DatasetReader.read(SharedData.file("gsm8k/train_llm_adapters_format.json"), null,
                DatasetReader.Options.DEFAULT);
        assertEquals(DatasetFormat.ALPACA, a.format());
        assertEquals(7473, a.examples().size());
        assertNull(a.report());
        // the derived copy's answer is GSM8K's final number without commas
        for (int i = 0; i < 50; i++) assertEquals(g.examples().get(i).answer(), a.examples().get(i).answer(), "record " + i);
        assertTrue(a.examples().get(0).response().endsWith("The answer is " + a.examples().get(0).answer() + "."));
    }

    @Test
    void shakespeareTextBatchesWithTok512() {
        DatasetReader.Dataset d = DatasetReader.read(SharedData.file("pretrain/tinyshakespeare.jsonl"), DatasetFormat.TEXT,
                DatasetReader.Options.DEFAULT);
        assertEquals(7222, d.examples().size());
        try (Tokenizer tok = Tokenizers.load(SharedData.file("tokenizers/llama2c-tok512/tok512.bin"))) {
            List<TokenizedExample> ids = ExampleTokenizer.tokenizeAll(tok, d.examples().subList(0, 16));
            for (TokenizedExample t : ids) {
                assertArrayEquals(new int[] {1}, t.prompt());          // BOS only: loss on all text
                assertEquals(2, t.response()[t.response().length - 1]);
            }
            Batcher b = new Batcher(ids, new Batcher.Options(4, 64, 7, true, false, false), tok);
            Batch batch = b.next();
            assertEquals(4, batch.batch());
            assertTrue(batch.seqLen() <= 64);
            assertTrue(batch.outputTokenCount() > 0);
            // the text of a row round-trips through the tokenizer
            TokenizedExample first = ids.get(0);
            int[] all = new int[first.length()];
            System.arraycopy(first.prompt(), 0, all, 0, first.prompt().length);
            System.arraycopy(first.response(), 0, all, first.prompt().length, first.response().length);
            assertEquals(d.examples().get(0).response(), tok.decode(all));
        }
    }
}
