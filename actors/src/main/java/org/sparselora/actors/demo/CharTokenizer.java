package org.sparselora.actors.demo;

import org.sparselora.engine.tokenizer.Tokenizer;

/**
 * The demo's own character-level tokenizer (so the embedded default job needs no files): ids 0–2
 * are pad, BOS and EOS, then one id per character of {@link #ALPHABET}. Encoding adds BOS when
 * asked, like a Llama tokenizer; unknown characters are an error naming the character.
 */
public final class CharTokenizer implements Tokenizer {
    public static final String ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 >=+-.:|";
    public static final int PAD = 0, BOS = 1, EOS = 2, OFFSET = 3;

    @Override
    public int[] encode(String text, boolean addSpecial) {
        int[] ids = new int[text.length() + (addSpecial ? 1 : 0)];
        int j = 0;
        if (addSpecial) ids[j++] = BOS;
        for (int i = 0; i < text.length(); i++) {
            int k = ALPHABET.indexOf(text.charAt(i));
            if (k < 0) throw new IllegalArgumentException("demo tokenizer: character '" + text.charAt(i) + "' is not in its alphabet");
            ids[j++] = OFFSET + k;
        }
        return ids;
    }

    @Override
    public String decode(int[] ids) {
        StringBuilder sb = new StringBuilder();
        for (int id : ids) sb.append(decodeToken(id));
        return sb.toString();
    }

    @Override
    public String decodeToken(int id) {
        if (id >= OFFSET && id < OFFSET + ALPHABET.length()) return String.valueOf(ALPHABET.charAt(id - OFFSET));
        return "";
    }

    @Override public int bosId() { return BOS; }

    @Override public int eosId() { return EOS; }

    @Override public int padId() { return PAD; }

    @Override public int vocabSize() { return OFFSET + ALPHABET.length(); }
}
