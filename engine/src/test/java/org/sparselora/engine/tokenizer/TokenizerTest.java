package org.sparselora.engine.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.io.FormatException;

/** Tokenizers built inside the test (no shared data): a WordLevel and a BPE tokenizer.json, and a llama2.c vocabulary. */
public class TokenizerTest {

    @TempDir Path dir;

    static final String ADDED = """
        [{"id":0,"content":"<unk>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
         {"id":1,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
         {"id":2,"content":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}]""";

    static final String BOS_TEMPLATE = """
        {"type":"TemplateProcessing",
         "single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
         "pair":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],
         "special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}}""";

    /** A word-level tokenizer whose post-processor prepends <s>, as Llama's does. */
    public static Path wordLevel(Path dir) throws IOException {
        Files.createDirectories(dir);
        Path f = dir.resolve("tokenizer.json");
        Files.writeString(f, """
            {"version":"1.0","truncation":null,"padding":null,"added_tokens":%s,
             "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":%s,"decoder":null,
             "model":{"type":"WordLevel","vocab":{"<unk>":0,"<s>":1,"</s>":2,"the":3,"cat":4,"sat":5,"on":6,"mat":7,".":8},
                      "unk_token":"<unk>"}}""".formatted(ADDED, BOS_TEMPLATE));
        return f;
    }

    @Test
    void wordLevelTokenizerJsonEncodesLikeHf() throws IOException {
        Path f = wordLevel(dir.resolve("wl"));
        try (Tokenizer t = Tokenizers.load(f.getParent())) {
            assertInstanceOf(HfTokenizer.class, t);
            assertArrayEquals(new int[] {1, 3, 4, 5, 6, 3, 7, 8}, t.encode("the cat sat on the mat.", true));
            assertArrayEquals(new int[] {3, 4, 5, 6, 3, 7, 8}, t.encode("the cat sat on the mat.", false));
            assertArrayEquals(new int[] {1, 3, 0}, t.encode("the dog", true));   // unknown word → <unk>
            assertArrayEquals(new int[] {1}, t.encode("", true));
            assertEquals("the cat sat", t.decode(new int[] {1, 3, 4, 5, 2}));   // specials dropped
            assertEquals("<s>", t.decodeToken(1));
            assertEquals(1, t.bosId());          // from the post-processor: no tokenizer_config.json here
            assertEquals(-1, t.eosId());
            assertEquals(-1, t.padId());
            assertEquals(9, t.vocabSize());
            // DJL's default truncation (512) and padding are off: a long text keeps every token
            String longText = "the cat sat on the mat . ".repeat(200);
            assertEquals(1 + 1400, t.encode(longText, true).length);
        }
        // tokenizer_config.json next to it names eos and pad (string and {"content"} forms)
        Files.writeString(f.getParent().resolve("tokenizer_config.json"),
                "{\"bos_token\": \"<s>\", \"eos_token\": {\"content\": \"</s>\"}, \"pad_token\": \"<unk>\"}");
        try (Tokenizer t = Tokenizers.load(f)) {
            assertEquals(1, t.bosId());
            assertEquals(2, t.eosId());
            assertEquals(0, t.padId());
        }
    }

    @Test
    void bpeTokenizerJsonAppliesMergesInRankOrder() throws IOException {
        Path f = dir.resolve("bpe/tokenizer.json");
        Files.createDirectories(f.getParent());
        Files.writeString(f, """
            {"version":"1.0","truncation":null,"padding":null,"added_tokens":%s,
             "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
             "model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,
                      "end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,
                      "vocab":{"<unk>":0,"<s>":1,"</s>":2,"a":3,"b":4,"c":5,"ab":6,"bc":7,"abc":8},
                      "merges":["a b","ab c","b c"]}}""".formatted(ADDED));
        Files.writeString(f.getParent().resolve("config.json"), "{\"bos_token_id\": 1, \"eos_token_id\": 2}");
        try (Tokenizer t = Tokenizers.load(f)) {
            // "abcbc": a+b first (rank 0), then ab+c (rank 1), then b+c (rank 2)
            assertArrayEquals(new int[] {8, 7}, t.encode("abcbc", true));   // no post-processor: nothing added
            assertArrayEquals(new int[] {8, 6}, t.encode("abc ab", false));
            assertEquals(1, t.bosId());   // from config.json
            assertEquals(2, t.eosId());
        }
    }

    // ------------------------------------------------------------------ llama2.c

    /** Writes a llama2.c tokenizer.bin: <unk>, BOS, EOS, 256 byte tokens, then the pieces with scores. */
    static Path llama2cBin(Path file, List<String> pieces, float[] scores) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteBuffer b = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN);
        out.write(b.putInt(0, 16).array());
        java.util.ArrayList<String> all = new java.util.ArrayList<>(List.of("<unk>", "\n<s>\n", "\n</s>\n"));
        for (int i = 0; i < 256; i++) all.add(String.format("<0x%02X>", i));
        all.addAll(pieces);
        for (int i = 0; i < all.size(); i++) {
            byte[] bytes = all.get(i).getBytes(StandardCharsets.UTF_8);
            float score = i < 259 ? 0f : scores[i - 259];
            ByteBuffer e = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putFloat(score).putInt(bytes.length);
            out.write(e.array());
            out.write(bytes);
        }
        Files.createDirectories(file.getParent());
        Files.write(file, out.toByteArray());
        return file;
    }

    @Test
    void llama2cEncodesLikeTheCReference() throws IOException {
        // ids: 259 " ", 260 "h", 261 "e", 262 "l", 263 "o", 264 "he", 265 "ll", 266 " he", 267 "llo", 268 " hello"
        List<String> pieces = List.of(" ", "h", "e", "l", "o", "he", "ll", " he", "llo", " hello");
        float[] scores = {0f, 0f, 0f, 0f, 0f, -1f, -2f, -3f, -4f, -5f};
        Path f = llama2cBin(dir.resolve("tok/tokenizer.bin"), pieces, scores);
        try (Tokenizer t = Tokenizers.load(f.getParent())) {
            assertInstanceOf(Llama2cTokenizer.class, t);
            // " hello": dummy " " + h e l l o → he(-1) → ll(-2) → " he"(-3) → llo(-4) → " hello"(-5)
            assertArrayEquals(new int[] {1, 268}, t.encode("hello", true));
            assertArrayEquals(new int[] {268}, t.encode("hello", false));
            // empty text: BOS only, no dummy prefix
            assertArrayEquals(new int[] {1}, t.encode("", true));
            assertArrayEquals(new int[0], t.encode("", false));
            // 'é' (0xC3 0xA9) is not a piece: byte fallback to ids 0xC3+3 and 0xA9+3
            assertArrayEquals(new int[] {1, 259, 260, 3 + 0xC3, 3 + 0xA9}, t.encode("hé", true));
            assertEquals("hé", t.decode(new int[] {1, 259, 260, 3 + 0xC3, 3 + 0xA9}));
            assertArrayEquals(new int[] {1, 268, 268}, t.encode("hello hello", true));
            assertEquals("hello hello", t.decode(t.encode("hello hello", true)));
            assertEquals(" hello", t.decodeToken(268));
            assertEquals(1, t.bosId());
            assertEquals(2, t.eosId());
            assertEquals(-1, t.padId());
            assertEquals(269, t.vocabSize());
        }
    }

    /** llama2.c's encode written literally (quadratic merge loop), over the public accessors. */
    static int[] referenceEncode(Llama2cTokenizer t, String text, boolean bos) {
        java.util.Map<String, Integer> ids = new java.util.HashMap<>();
        for (int i = t.vocabSize() - 1; i >= 0; i--) ids.put(new String(t.pieceBytes(i), StandardCharsets.ISO_8859_1), i);
        java.util.List<Integer> toks = new java.util.ArrayList<>();
        if (bos) toks.add(1);
        byte[] b = text.getBytes(StandardCharsets.UTF_8);
        if (b.length > 0) toks.add(ids.get(" "));
        StringBuilder buf = new StringBuilder();
        for (int i = 0; i < b.length; i++) {
            if ((b[i] & 0xC0) != 0x80) buf.setLength(0);
            buf.append((char) (b[i] & 0xFF));
            if (i + 1 < b.length && (b[i + 1] & 0xC0) == 0x80 && buf.length() < 4) continue;
            Integer id = ids.get(buf.toString());
            if (id != null) toks.add(id);
            else for (int k = 0; k < buf.length(); k++) toks.add(buf.charAt(k) + 3);
            buf.setLength(0);
        }
        while (true) {
            float best = -1e10f;
            int bestId = -1, bestIdx = -1;
            for (int i = 0; i < toks.size() - 1; i++) {
                String cat = new String(t.pieceBytes(toks.get(i)), StandardCharsets.ISO_8859_1)
                        + new String(t.pieceBytes(toks.get(i + 1)), StandardCharsets.ISO_8859_1);
                Integer id = ids.get(cat);
                if (id != null && t.score(id) > best) { best = t.score(id); bestId = id; bestIdx = i; }
            }
            if (bestIdx < 0) break;
            toks.set(bestIdx, bestId);
            toks.remove(bestIdx + 1);
        }
        return toks.stream().mapToInt(Integer::intValue).toArray();
    }

    @Test
    void heapMergingEqualsTheLiteralLlama2cLoopIncludingTies() throws IOException {
        // many equal scores, so the leftmost-on-ties rule decides often
        List<String> pieces = List.of(" ", "a", "b", "c", "ab", "ba", "bc", "ca", "aa", "abc", "bab", " a", " ab", "cab", "aab");
        float[] scores = {0f, 0f, 0f, 0f, -1f, -1f, -1f, -2f, -1f, -2f, -2f, -3f, -3f, -2f, -1f};
        Llama2cTokenizer t = (Llama2cTokenizer) Tokenizers.load(llama2cBin(dir.resolve("ties/tokenizer.bin"), pieces, scores));
        java.util.Random rnd = new java.util.Random(3);
        String alphabet = "abc abcé";
        for (int n = 0; n < 400; n++) {
            StringBuilder sb = new StringBuilder();
            int len = rnd.nextInt(30);
            for (int i = 0; i < len; i++) sb.append(alphabet.charAt(rnd.nextInt(alphabet.length())));
            String text = sb.toString();
            assertArrayEquals(referenceEncode(t, text, true), t.encode(text, true), "text '" + text + "'");
            assertEquals(text.isEmpty() ? "" : text, t.decode(t.encode(text, true)));
        }
    }

    @Test
    void missingAndBrokenTokenizersFailClearly() throws IOException {
        Path none = dir.resolve("empty");
        Files.createDirectories(none);
        FormatException e = assertThrows(FormatException.class, () -> Tokenizers.load(none));
        assertTrue(e.getMessage().startsWith(none.toString()) && e.getMessage().contains("no tokenizer.json"), e.getMessage());
        Path missing = dir.resolve("nope/tokenizer.json");
        e = assertThrows(FormatException.class, () -> Tokenizers.load(missing));
        assertTrue(e.getMessage().contains("not found"), e.getMessage());
        Path bad = dir.resolve("bad.json");
        Files.writeString(bad, "{\"model\": {\"type\": \"Nonsense\"}}");
        e = assertThrows(FormatException.class, () -> Tokenizers.load(bad));
        assertTrue(e.getMessage().startsWith(bad.toString()), e.getMessage());
        Path trunc = dir.resolve("t.bin");
        Files.write(trunc, new byte[] {7, 0, 0, 0, 0, 0, 0, 0, 9, 0});
        e = assertThrows(FormatException.class, () -> Tokenizers.load(trunc));
        assertTrue(e.getMessage().contains("truncated"), e.getMessage());
    }
}
