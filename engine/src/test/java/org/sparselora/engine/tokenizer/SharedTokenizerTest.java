package org.sparselora.engine.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.io.SharedData;

/** The real tokenizers in shared/data: llama2.c tok512 (stories260K) and Qwen3's tokenizer.json. */
@Tag("shared-data")
class SharedTokenizerTest {

    static final String[] TEXTS = {
        "Once upon a time, there was a little girl named Lily.",
        "She loved to play outside in the park. One day, she saw a big, red ball.",
        "Tabs\tand\nnewlines,  double  spaces, unicode: café, naïve, 東京, emoji 🙂!",
        "",
    };

    @Test
    void tok512RoundTripsAndMatchesTheStories260KReference() {
        try (Tokenizer t = Tokenizers.load(SharedData.file("tokenizers/llama2c-tok512/tok512.bin"))) {
            assertEquals(512, t.vocabSize());
            // the first greedy ids of stories260K from BOS (shared/data/README.md) spell the reference text
            int[] reference = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337};
            String text = t.decode(reference);
            assertTrue(text.startsWith("Once upon a time, there was a little girl named Lily"), text);
            // encoding that text gives the same ids back (BOS first)
            int[] ids = t.encode("Once upon a time, there was a little girl named Lily", true);
            assertEquals(1, ids[0]);
            assertArrayEquals(Arrays.copyOfRange(reference, 0, ids.length - 1), Arrays.copyOfRange(ids, 1, ids.length));
            for (String s : TEXTS) assertEquals(s, t.decode(t.encode(s, true)), "round trip of: " + s);
            // the fast merge equals llama2.c's literal loop on real text
            for (String s : TEXTS)
                assertArrayEquals(TokenizerTest.referenceEncode((Llama2cTokenizer) t, s, true), t.encode(s, true), s);
        }
    }

    @Test
    void qwen3TokenizerJsonRoundTripsWithItsSpecialTokens() {
        try (Tokenizer t = Tokenizers.load(SharedData.file("tokenizers/qwen3"))) {
            assertEquals(151669, t.vocabSize());
            assertEquals(-1, t.bosId());                 // bos_token null in tokenizer_config.json
            assertEquals(151645, t.eosId());             // <|im_end|>
            assertEquals(151643, t.padId());             // <|endoftext|>
            // Qwen adds no special tokens: tokenizer("Hello world") is [9707, 1879]
            assertArrayEquals(new int[] {9707, 1879}, t.encode("Hello world", true));
            assertArrayEquals(t.encode("Hello world", false), t.encode("Hello world", true));
            // special tokens written in the text are matched as one token each
            int[] chat = t.encode("<|im_start|>user\nHi<|im_end|>", true);
            assertEquals(151644, chat[0]);
            assertEquals(151645, chat[chat.length - 1]);
            assertEquals("user\nHi", t.decode(chat));
            assertEquals("<|im_end|>", t.decodeToken(151645));
            for (String s : TEXTS) assertEquals(s, t.decode(t.encode(s, true)), "round trip of: " + s);
        }
    }
}
