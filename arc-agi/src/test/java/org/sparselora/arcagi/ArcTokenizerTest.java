package org.sparselora.arcagi;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.tokenizer.HfTokenizer;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.tokenizer.Tokenizers;

/** The ARC vocabulary, its HF tokenizer.json (read by the HF tokenizers library), prompts and the grid decoder. */
class ArcTokenizerTest {

    @TempDir
    Path dir;

    static int[][] randomGrid(SplittableRandom r, int maxSide) {
        int h = 1 + r.nextInt(maxSide), w = 1 + r.nextInt(maxSide);
        int[][] g = new int[h][w];
        for (int[] row : g) for (int c = 0; c < w; c++) row[c] = r.nextInt(10);
        return g;
    }

    @Test
    void gridsSerializeAsOneTokenPerCellWithRowEnds() {
        int[][] g = {{1, 2, 3}, {4, 5, 6}};
        int[] ids = ArcFormat.grid(g);
        assertArrayEquals(new int[] {4, 5, 6, 13, 7, 8, 9, 13}, ids);
        ArcTokenizer tok = new ArcTokenizer();
        assertEquals("123\n456\n", tok.decode(ids));
        int[] p = ArcFormat.prompt(List.of(new ArcTask.Pair(new int[][] {{0}}, new int[][] {{9}})), g);
        assertEquals("<s>I0\nO9\n</s>I123\n456\nO", tok.decodeWithSpecial(p));
        assertArrayEquals(p, tok.encode("I0\nO9\n</s>I123\n456\nO", true));
        assertEquals("I0\nO9\nI123\n456\nO", tok.decode(p), "decode leaves the special tokens out");
        assertArrayEquals(new int[] {12, 13, 2}, ArcFormat.target(new int[][] {{9}}));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> tok.encode("12 3", false));
        assertTrue(e.getMessage().contains("' '") && e.getMessage().contains("at 2"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> tok.decodeToken(16));
    }

    @Test
    void theHfTokenizerJsonGivesTheSameIdsAndText() {
        ArcTokenizer.writeFiles(dir, 4096);
        ArcTokenizer arc = new ArcTokenizer();
        try (Tokenizer loaded = Tokenizers.load(dir)) {
            HfTokenizer hf = (HfTokenizer) loaded;
            assertEquals(ArcTokenizer.VOCAB, hf.vocabSize());
            assertEquals(ArcTokenizer.BOS, hf.bosId());
            assertEquals(ArcTokenizer.EOS, hf.eosId());
            assertEquals(ArcTokenizer.PAD, hf.padId());
            for (int id = 0; id < ArcTokenizer.VOCAB; id++) assertEquals(id, hf.tokenId(arc.decodeToken(id)));
            SplittableRandom r = new SplittableRandom(7);
            for (int trial = 0; trial < 20; trial++) {
                List<ArcTask.Pair> demos = List.of(new ArcTask.Pair(randomGrid(r, 12), randomGrid(r, 12)), new ArcTask.Pair(randomGrid(r, 12), randomGrid(r, 12)));
                int[] prompt = ArcFormat.prompt(demos, randomGrid(r, 12));
                int[] target = ArcFormat.target(randomGrid(r, 12));
                int[] all = java.util.stream.IntStream.concat(java.util.Arrays.stream(prompt), java.util.Arrays.stream(target)).toArray();
                String text = arc.decodeWithSpecial(all).substring(ArcTokenizer.BOS_TEXT.length());
                assertArrayEquals(all, hf.encode(text, true), "HF encodes the text to the same ids (BOS from the post-processor)");
                assertArrayEquals(arc.encode(text, false), hf.encode(text, false));
                assertEquals(arc.decode(all), hf.decode(all), "HF decodes to the same text");
                assertEquals(arc.decodeWithSpecial(all), hf.decodeWithSpecial(all));
            }
        }
    }

    @Test
    void theDecoderReadsGridsAndRejectsMalformedOutput() {
        int[][] g = {{1, 2}, {3, 4}, {5, 6}};
        int[] t = ArcFormat.target(g);
        assertArrayEquals(g, ArcFormat.decode(t, false).grid(), "EOS in the ids completes it");
        assertArrayEquals(g, ArcFormat.decode(java.util.Arrays.copyOf(t, t.length - 1), true).grid(), "EOS dropped by the generator");
        assertFalse(ArcFormat.decode(java.util.Arrays.copyOf(t, t.length - 1), false).ok(), "no EOS: cut off");
        assertNull(ArcFormat.decode(new int[] {4, 5, 13, 6, 13}, true).grid(), "ragged");
        assertTrue(ArcFormat.decode(new int[] {4, 5, 13, 6, 13}, true).error().startsWith("ragged"));
        assertFalse(ArcFormat.decode(new int[] {4, 5}, true).ok(), "last row without its row end");
        assertFalse(ArcFormat.decode(new int[] {13}, true).ok(), "empty row");
        assertFalse(ArcFormat.decode(new int[] {}, true).ok(), "empty");
        assertFalse(ArcFormat.decode(new int[] {4, 14, 13}, true).ok(), "a marker inside a grid");
        assertFalse(ArcFormat.decode(new int[] {1, 4, 13}, true).ok(), "BOS inside a grid");
        int[] wide = new int[32];
        java.util.Arrays.fill(wide, 0, 31, 3);
        wide[31] = 13;
        assertTrue(ArcFormat.decode(wide, true).error().contains("longer than 30"));
        int[] tall = new int[62];
        for (int i = 0; i < 62; i += 2) { tall[i] = 3; tall[i + 1] = 13; }
        assertTrue(ArcFormat.decode(tall, true).error().contains("more than 30 rows"));
        int[][] max = randomGrid(new SplittableRandom(1), 1);
        assertArrayEquals(max, ArcFormat.decode(ArcFormat.target(max), false).grid());
        int[][] full = new int[30][30];
        assertEquals(ArcFormat.MAX_TARGET, ArcFormat.target(full).length);
        assertArrayEquals(full, ArcFormat.decode(ArcFormat.target(full), false).grid());
    }
}
