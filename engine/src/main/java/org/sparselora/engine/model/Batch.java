package org.sparselora.engine.model;

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

    /** Non-padding token rows, ascending (for scoring: padding must never influence a selection). */
    public int[] nonPaddingRows() {
        int count = 0;
        for (int b = 0; b < batch; b++) count += seqLen - keyStart[b];
        int[] rows = new int[count];
        int k = 0;
        for (int b = 0; b < batch; b++)
            for (int t = keyStart[b]; t < seqLen; t++) rows[k++] = b * seqLen + t;
        return rows;
    }

    /**
     * The reference's synthetic timing batch (SparseLoRA's Math10K timing shape is 8 × 512 with 128
     * output tokens): {@code rows} unpadded rows of {@code seq} uniform random tokens below
     * {@code vocab} drawn from {@code seed}, the loss on the last {@code outputTokens} positions of each
     * row (HF labels on the last tokens; the reference's token split keeps exactly those dense). The
     * row is a window of a longer stream, so its last position's target is the stream's next token.
     * Used by StepBenchmark and by jobs with {@code data: {synthetic: …}}.
     */
    public static Batch synthetic(int vocab, int rows, int seq, int outputTokens, long seed) {
        if (outputTokens < 0 || outputTokens > seq) throw new IllegalArgumentException("output tokens " + outputTokens + " outside 0.." + seq);
        java.util.SplittableRandom r = new java.util.SplittableRandom(seed);
        int n = rows * seq;
        int[] tokens = new int[n], targets = new int[n], pos = new int[n];
        for (int i = 0; i < n; i++) tokens[i] = r.nextInt(vocab);
        for (int b = 0; b < rows; b++)
            for (int t = 0; t < seq; t++) {
                int i = b * seq + t;
                pos[i] = t;
                targets[i] = t >= seq - outputTokens ? (t + 1 < seq ? tokens[i + 1] : r.nextInt(vocab)) : IGNORE;
            }
        return new Batch(rows, seq, tokens, targets, pos, new int[rows]);
    }

    /** Number of tokens that carry loss. */
    public int outputTokenCount() {
        int c = 0;
        for (int t : targets) if (t != IGNORE) c++;
        return c;
    }
}
