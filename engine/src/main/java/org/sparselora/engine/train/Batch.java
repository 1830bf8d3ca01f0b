package org.sparselora.engine.train;

/**
 * One training batch, already tokenized, left-padded and shifted: {@code targets[n]} is the token
 * that position n must predict, or -100 where no loss is taken (prompt and padding: the
 * "context" tokens of SparseLoRA's token split). Flattened as N = batch·seqLen, row-major.
 *
 * @param keyStart  per sequence, the index of its first non-padding token
 * @param positions RoPE position of every token (0 at the first non-padding token)
 */
public record Batch(int batch, int seqLen, int[] tokens, int[] targets, int[] positions, int[] keyStart) {

    public static final int IGNORE = -100;

    public Batch {
        int n = batch * seqLen;
        if (tokens.length != n || targets.length != n || positions.length != n || keyStart.length != batch)
            throw new IllegalArgumentException("batch arrays do not match " + batch + "x" + seqLen);
    }

    public int tokenCount() { return batch * seqLen; }

    /** Number of tokens that carry loss. */
    public int outputTokenCount() {
        int c = 0;
        for (int t : targets) if (t != IGNORE) c++;
        return c;
    }
}
