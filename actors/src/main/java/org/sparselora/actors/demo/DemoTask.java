package org.sparselora.actors.demo;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.sparselora.engine.data.Example;

/**
 * Generated tasks for the embedded demo. A "word" is {@link #LENGTH} letters from the first
 * {@link #LETTERS} of the alphabet; a record is {@code word>answer}. The base model is built on
 * {@link Kind#COPY} (answer = word); the fine-tuning task is {@link Kind#SHIFT} (every letter
 * replaced by its successor, cyclically), which the base model cannot do. Exact match of the
 * greedy answer is the task metric.
 */
public final class DemoTask {
    public static final int LETTERS = 16, LENGTH = 6;

    public enum Kind { COPY, SHIFT }

    private DemoTask() {}

    public static String answer(Kind kind, String word) {
        if (kind == Kind.COPY) return word;
        StringBuilder sb = new StringBuilder(word.length());
        for (int i = 0; i < word.length(); i++) sb.append((char) ('a' + (word.charAt(i) - 'a' + 1) % LETTERS));
        return sb.toString();
    }

    /** {@code n} examples; the split keeps train and eval words disjoint (by a hash of the word). */
    public static List<Example> examples(Kind kind, int n, long seed, boolean eval) {
        SplittableRandom rnd = new SplittableRandom(seed);
        List<Example> out = new ArrayList<>(n);
        while (out.size() < n) {
            char[] w = new char[LENGTH];
            for (int i = 0; i < LENGTH; i++) w[i] = (char) ('a' + rnd.nextInt(LETTERS));
            String word = new String(w);
            boolean isEval = (word.hashCode() & 7) == 0;
            if (isEval != eval) continue;
            String ans = answer(kind, word);
            out.add(new Example(word + ">", ans, ans, out.size() + 1));
        }
        return out;
    }
}
