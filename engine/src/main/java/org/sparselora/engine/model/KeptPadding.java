package org.sparselora.engine.model;

/**
 * How wide the sparse MLP's kept set is made ({@link WeightSlices}): the kept count k of
 * {@code intermediate} channels becomes {@link #width}, the extra channels with zero weights. The
 * model pads to a multiple of 8 ({@link #MULTIPLE_OF_8}); tests inject {@link #NONE} to compare.
 */
interface KeptPadding {
    int width(int k, int intermediate);

    /** k rounded up to a multiple of 8 channels, at most the intermediate width. */
    KeptPadding MULTIPLE_OF_8 = (k, intermediate) -> Math.min((k + 7) & ~7, intermediate);

    KeptPadding NONE = (k, intermediate) -> k;
}
