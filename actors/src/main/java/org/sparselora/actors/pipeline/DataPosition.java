package org.sparselora.actors.pipeline;

/**
 * Where a {@link BatchSource} stands: enough to continue the exact batch sequence after a restart
 * or a resumed run. {@code rngState} is whatever the source needs for its shuffle (e.g. the seed of
 * the current epoch's permutation); {@code batches} counts the batches handed out so far.
 */
public record DataPosition(long epoch, long offset, long rngState, long batches) {
    public static final DataPosition START = new DataPosition(0, 0, 0, 0);
}
