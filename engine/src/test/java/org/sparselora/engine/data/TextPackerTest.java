package org.sparselora.engine.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.model.Batch;

/** Packing plain-text documents into full sequences for pretraining. */
class TextPackerTest {

    @TempDir Path dir;

    static List<int[]> docs(int... lengths) {
        List<int[]> out = new ArrayList<>();
        int next = 100;
        for (int len : lengths) {
            int[] d = new int[len];
            for (int i = 0; i < len; i++) d[i] = next++;
            out.add(d);
        }
        return out;
    }

    @Test
    void jsonlDocumentsBecomeOneStreamWithEosBetweenThem() throws IOException {
        Path f = dir.resolve("t.jsonl");
        Files.writeString(f, "{\"text\": \"a b c\"}\n{\"text\": \"d e\"}\n{\"text\": \"f g h i\"}\n");
        var ds = DatasetReader.read(f, DatasetFormat.TEXT, DatasetReader.Options.DEFAULT);
        var tok = new DatasetTest.WordTokenizer(0);
        TextPacker p = new TextPacker(tok, ds.examples(), new TextPacker.Options(1, 4, 0, false));
        // BOS a b c EOS BOS d e EOS BOS f g h i EOS = 15 tokens: (15 − 1) / 4 = 3 sequences, 2 tokens dropped
        assertEquals(15, p.streamTokens());
        assertEquals(3, p.sequenceCount());
        assertEquals(2, p.droppedTokens());
        assertEquals(3, p.documentCount());
        Batch b0 = p.next(), b1 = p.next();
        assertArrayEquals(new int[] {1, 10, 11, 12}, b0.tokens());
        assertArrayEquals(new int[] {10, 11, 12, 2}, b0.targets(), "every position predicts the next token of the stream");
        assertArrayEquals(new int[] {2, 1, 13, 14}, b1.tokens());
        assertArrayEquals(new int[] {1, 13, 14, 2}, b1.targets());
        assertArrayEquals(new int[] {0, 1, 2, 3}, b1.positions());
        assertEquals(4, b1.outputTokenCount(), "no padding, loss everywhere");
    }

    @Test
    void everySequenceOnceAnEpochInASeededOrder() {
        TextPacker p = new TextPacker(docs(37, 50, 13, 64), new TextPacker.Options(3, 8, 42, true));
        int seqs = p.sequenceCount();
        assertEquals((37 + 50 + 13 + 64 - 1) / 8, seqs);
        assertEquals(seqs / 3, p.batchesPerEpoch());
        Set<Integer> firstTokens = new HashSet<>();
        List<int[]> epoch0 = new ArrayList<>();
        for (int i = 0; i < p.batchesPerEpoch(); i++) {
            Batch b = p.next();
            assertEquals(3, b.batch());
            assertEquals(8, b.seqLen());
            for (int r = 0; r < 3; r++) {
                int t0 = b.tokens()[r * 8];
                assertTrue(firstTokens.add(t0), "sequence starting at " + t0 + " seen twice");
                assertEquals((t0 - 100) % 8, 0, "sequences start at multiples of seq_len");
                for (int j = 0; j < 8; j++) assertEquals(b.tokens()[r * 8 + j] + 1, b.targets()[r * 8 + j]);
            }
            epoch0.add(b.tokens());
        }
        assertEquals(new Batcher.DataPosition(1, 0), p.position());
        TextPacker same = new TextPacker(docs(37, 50, 13, 64), new TextPacker.Options(3, 8, 42, true));
        for (int[] want : epoch0) assertArrayEquals(want, same.next().tokens(), "same seed, same order");
        TextPacker other = new TextPacker(docs(37, 50, 13, 64), new TextPacker.Options(3, 8, 43, true));
        assertFalse(Arrays.equals(epoch0.get(0), other.next().tokens()) && Arrays.equals(epoch0.get(1), other.next().tokens()));
        // a new epoch: another order
        Batch e1 = p.next();
        assertFalse(Arrays.equals(epoch0.get(0), e1.tokens()));
    }

    @Test
    void seekContinuesExactly() {
        TextPacker a = new TextPacker(docs(200), new TextPacker.Options(2, 7, 5, true));
        List<int[]> run = new ArrayList<>();
        for (int i = 0; i < 40; i++) run.add(a.next().tokens());
        TextPacker b = new TextPacker(docs(200), new TextPacker.Options(2, 7, 5, true));
        for (int i = 0; i < 17; i++) b.next();
        Batcher.DataPosition saved = b.position();
        TextPacker c = new TextPacker(docs(200), new TextPacker.Options(2, 7, 5, true));
        c.seek(saved);
        for (int i = 17; i < 40; i++) assertArrayEquals(run.get(i), c.next().tokens(), "batch " + i);
        assertThrows(IllegalArgumentException.class, () -> c.seek(new Batcher.DataPosition(0, 99)));
    }

    @Test
    void tooLittleTextIsAClearError() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new TextPacker(docs(10, 5), new TextPacker.Options(4, 8, 0, true)));
        assertTrue(e.getMessage().contains("15 tokens in 2 document(s)") && e.getMessage().contains("fewer than one batch of 4"), e.getMessage());
    }
}
