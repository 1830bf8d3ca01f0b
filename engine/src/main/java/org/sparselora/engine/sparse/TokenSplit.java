package org.sparselora.engine.sparse;

import java.util.SplittableRandom;
import org.sparselora.engine.model.Batch;

/**
 * SparseLoRA's context/output token split (docs/METHOD.md#token-split). Context tokens — those whose target is
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

    /**
     * {@link #of} with the dense group grown to a multiple of {@code bucket} tokens (at most all
     * of them; unchanged when {@code bucket} ≤ 1 or the dense group is empty), so batches whose
     * output counts differ a little split into groups of the same sizes (one recorded step serves
     * them). The tokens moved from the sparse to the dense group are padding positions first —
     * padding never reaches a real token, so nothing changes — then the last context tokens, which
     * then run exactly (dense) instead of on the kept slice.
     */
    public static TokenSplit of(Batch batch, boolean splitOutputTokens, double sparseOutputFraction, long seed, int bucket) {
        TokenSplit s = of(batch, splitOutputTokens, sparseOutputFraction, seed);
        int d = s.dense.length, n = batch.tokenCount();
        if (bucket <= 1 || d == 0 || d % bucket == 0) return s;
        int want = Math.min(n, (d + bucket - 1) / bucket * bucket), move = want - d;
        boolean[] toDense = new boolean[n];
        for (int r : s.dense) toDense[r] = true;
        int T = batch.seqLen();
        for (int b = 0; b < batch.batch() && move > 0; b++)            // padding positions, in order
            for (int t = 0; t < Math.min(T, batch.keyStart()[b]) && move > 0; t++)
                if (!toDense[b * T + t]) { toDense[b * T + t] = true; move--; }
        for (int i = s.sparse.length - 1; i >= 0 && move > 0; i--)        // then context tokens from the end
            if (!toDense[s.sparse[i]]) { toDense[s.sparse[i]] = true; move--; }
        int[] dense = new int[want], sparse = new int[n - want];
        for (int r = 0, di = 0, si = 0; r < n; r++) if (toDense[r]) dense[di++] = r; else sparse[si++] = r;
        return new TokenSplit(sparse, dense);
    }

    public boolean allSparse() { return dense.length == 0; }
}
