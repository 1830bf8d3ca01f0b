package org.sparselora.actors.demo;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.sparselora.engine.data.Example;

/**
 * Generated tasks for the embedded demo, shaped like the fine-tuning SparseLoRA is for: a long
 * prompt (the context) and a short answer. A record is {@code word>answer}: the word is
 * {@link #WORD} letters from the first {@link #LETTERS} of the alphabet, the answer is derived from
 * its first {@link #ANSWER} letters, so the model must look back across the whole word to produce
 * it. The base model is built on {@link Kind#COPY} (those letters as they are); the fine-tuning task
 * is {@link Kind#SHIFT} (each replaced by its successor, cyclically), which the base model cannot
 * do. Exact match of the greedy answer is the task metric.
 *
 * <p>Why this shape: SparseLoRA runs the frozen projections sparse on context tokens and dense on
 * output tokens (docs/METHOD.md#token-split), so its saving grows with the share of context tokens:
 * here 1 + {@value #WORD} + 1 context tokens against {@value #ANSWER} + 1 output tokens per record.
 */
public final class DemoTask {
    public static final int LETTERS = 16, WORD = 24, ANSWER = 4;

    public enum Kind { COPY, SHIFT }

    private DemoTask() {}

    /** The answer to {@code word}: its first {@link #ANSWER} letters, copied or shifted. */
    public static String answer(Kind kind, String word) {
        if (word.length() < ANSWER) throw new IllegalArgumentException("demo word '" + word + "' is shorter than " + ANSWER + " letters");
        String head = word.substring(0, ANSWER);
        if (kind == Kind.COPY) return head;
        StringBuilder sb = new StringBuilder(ANSWER);
        for (int i = 0; i < ANSWER; i++) sb.append((char) ('a' + (head.charAt(i) - 'a' + 1) % LETTERS));
        return sb.toString();
    }

    /**
     * {@code n} examples; the split keeps train and eval apart by a hash of the word's answer-bearing
     * letters, so no held-out example shares its answer's source letters with a training one.
     */
    public static List<Example> examples(Kind kind, int n, long seed, boolean eval) {
        SplittableRandom rnd = new SplittableRandom(seed);
        List<Example> out = new ArrayList<>(n);
        while (out.size() < n) {
            char[] w = new char[WORD];
            for (int i = 0; i < WORD; i++) w[i] = (char) ('a' + rnd.nextInt(LETTERS));
            String word = new String(w);
            boolean isEval = (word.substring(0, ANSWER).hashCode() & 7) == 0;
            if (isEval != eval) continue;
            String ans = answer(kind, word);
            out.add(new Example(word + ">", ans, ans, out.size() + 1));
        }
        return out;
    }
}
