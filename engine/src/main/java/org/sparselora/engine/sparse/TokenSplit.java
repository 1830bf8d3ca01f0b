package org.sparselora.engine.sparse;

import java.util.SplittableRandom;
import org.sparselora.engine.train.Batch;

/**
 * SparseLoRA's context/output token split (SPEC §4). Context tokens — those whose target is
 * {@link Batch#IGNORE} (prompt and padding) — run the frozen projections sparsely; output tokens
 * (those that carry loss) run them densely, except a seeded fraction {@code sparse_output_tokens}
 * of them that is made sparse too. With splitting off ({@code skip_output_tokens: false}) every
 * token is sparse and {@link #dense} is empty.
 *
 * @param sparse ascending token rows (into N = B·T) on the sparse path
 * @param dense  ascending token rows on the dense path (disjoint from sparse; together all N)
 */
public record TokenSplit(int[] sparse, int[] dense) {

    public static TokenSplit of(Batch batch, boolean splitOutputTokens, double sparseOutputFraction, long seed) {
        int n = batch.tokenCount();
        if (!splitOutputTokens) {
            int[] all = new int[n];
            for (int i = 0; i < n; i++) all[i] = i;
            return new TokenSplit(all, new int[0]);
        }
        int[] targets = batch.targets();
        int outputs = batch.outputTokenCount();
        int makeSparse = (int) Math.round(outputs * sparseOutputFraction);
        // choose which output tokens go sparse: a seeded partial Fisher–Yates over their ordinals
        boolean[] chosen = new boolean[outputs];
        if (makeSparse > 0) {
            int[] ord = new int[outputs];
            for (int i = 0; i < outputs; i++) ord[i] = i;
            SplittableRandom rng = new SplittableRandom(seed);
            for (int i = 0; i < makeSparse; i++) {
                int j = i + rng.nextInt(outputs - i);
                int tmp = ord[i]; ord[i] = ord[j]; ord[j] = tmp;
                chosen[ord[i]] = true;
            }
        }
        int[] sparse = new int[n - outputs + makeSparse];
        int[] dense = new int[outputs - makeSparse];
        int s = 0, d = 0, o = 0;
        for (int i = 0; i < n; i++) {
            boolean isSparse = targets[i] == Batch.IGNORE || chosen[o++];
            if (isSparse) sparse[s++] = i;
            else dense[d++] = i;
        }
        return new TokenSplit(sparse, dense);
    }

    /** Non-padding token rows (for scoring: padding must never influence a selection). */
    public static int[] nonPaddingRows(Batch batch) {
        int count = 0;
        for (int b = 0; b < batch.batch(); b++) count += batch.seqLen() - batch.keyStart()[b];
        int[] rows = new int[count];
        int k = 0;
        for (int b = 0; b < batch.batch(); b++)
            for (int t = batch.keyStart()[b]; t < batch.seqLen(); t++) rows[k++] = b * batch.seqLen() + t;
        return rows;
    }

    public boolean allSparse() { return dense.length == 0; }
}
