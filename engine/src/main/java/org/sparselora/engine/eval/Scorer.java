package org.sparselora.engine.eval;

import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.model.Batch;

/**
 * Scores texts the way {@code sparselora score} reports them: ids are the tokenizer's encoding of
 * the text exactly as HF {@code tokenizer(text)} produces it (special tokens included), truncated
 * to {@code maxTokens}; the loss is the mean next-token cross-entropy (nats) over the ids.
 */
public final class Scorer {
    private final LlamaModel model;
    private final LoraAdapter lora;
    private final Tokenizer tok;
    private final int maxTokens;

    /** {@code loss} is NaN when the record was not scored (see {@link #scored}). */
    public record Score(int tokens, double loss) {
        /** Fewer than two ids have no next token to predict: such a record has no loss (not a loss of 0). */
        public boolean scored() { return tokens >= 2; }
    }

    public Scorer(LlamaModel model, LoraAdapter lora, Tokenizer tok, int maxTokens) {
        if (maxTokens < 2) throw new IllegalArgumentException("--max-tokens must be at least 2, got " + maxTokens);
        this.model = model;
        this.lora = lora;
        this.tok = tok;
        this.maxTokens = Math.min(maxTokens, model.config().maxPositions());
    }

    public Score score(String text) {
        int[] ids = tok.encode(text, true);
        if (ids.length > maxTokens) ids = java.util.Arrays.copyOf(ids, maxTokens);
        return scoreIds(ids);
    }

    /** Mean next-token loss of one id sequence (not scored, loss NaN, with fewer than two ids: nothing to predict). */
    public Score scoreIds(int[] ids) {
        int T = ids.length;
        if (T < 2) return new Score(T, Double.NaN);
        int[] targets = new int[T], positions = new int[T];
        for (int t = 0; t < T; t++) {
            targets[t] = t + 1 < T ? ids[t + 1] : Batch.IGNORE;
            positions[t] = t;
        }
        LlamaModel.Output o = model.evaluate(new Batch(1, T, ids.clone(), targets, positions, new int[] {0}), lora, null, false);
        return new Score(T, o.meanLoss());
    }
}
