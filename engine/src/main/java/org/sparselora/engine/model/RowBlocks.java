package org.sparselora.engine.model;

/**
 * A token group that is {@code blocks} runs of {@code len} consecutive rows, run j starting at row
 * {@code off + j·stride}: the same positions in every sequence (stride T), or one run. Frozen GEMMs
 * on such a group read and write the activations in place
 * ({@link org.sparselora.engine.backend.Backend#matmulRowBlocks}).
 */
record RowBlocks(int blocks, int stride, int off, int len) {

    /** The layout of the ascending rows idx, or null when they are not equally spaced runs of one length. */
    static RowBlocks of(int[] idx, int seqLen) {
        int n = idx.length;
        if (n == 0) return null;
        int len = 1;
        while (len < n && idx[len] == idx[0] + len) len++;
        if (len == n) return new RowBlocks(1, n, idx[0], n);
        if (n % len != 0 || len > seqLen) return null;
        for (int i = 0; i < n; i++)
            if (idx[i] != idx[0] + (i / len) * seqLen + i % len) return null;
        return new RowBlocks(n / len, seqLen, idx[0], len);
    }
}
