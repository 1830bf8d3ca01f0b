package org.sparselora.engine.model;

import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;

/**
 * The token split of one sparse step: the sparse tokens (frozen projections on the kept slices) and
 * the dense tokens (the whole weights), as index sets in the model's own buffers (the same addresses
 * every step, so a recorded step reads them at replay) and, when a group's rows are equally spaced
 * runs, as {@link RowBlocks} its GEMMs read and write in place. Made by the host part of a step;
 * the layers' strategies read it, the backward included.
 */
final class TokenGroups {
    final Tensor sIdx, dIdx;        // (nS) (nD) I32; dIdx null when every token is sparse
    final int nS, nD;
    final RowBlocks sBlocks, dBlocks; // null: gathered and scattered. dBlocks is only set with sBlocks.
    /** {@link SparsePlan.FrozenGrad#SLICED}: the backward runs the kept slices; else (cut) nothing flows through them. */
    final boolean sliced;
    /** Sees the sparse tokens' frozen outputs (tests); null in normal use. */
    final FrozenSparseHook hook;
    // the projection input whose sparse/dense token rows sit in Activations.xsShared/xdShared (q, k, v
    // read the same normed input, as do gate and up: gather once)
    private Tensor gatheredFrom;

    private TokenGroups(Tensor sIdx, Tensor dIdx, RowBlocks sBlocks, RowBlocks dBlocks, boolean sliced, FrozenSparseHook hook) {
        this.sIdx = sIdx;
        this.dIdx = dIdx;
        this.nS = (int) sIdx.numel();
        this.nD = dIdx == null ? 0 : (int) dIdx.numel();
        this.sBlocks = sBlocks;
        this.dBlocks = dBlocks;
        this.sliced = sliced;
        this.hook = hook;
    }

    /**
     * The split of {@code plan} copied into a's token buffers, or null when nothing runs sparse (no
     * plan, or no sparse tokens). Reading the index sets back for the row-block layout waits for the
     * stream once per step, before any of its work is queued. Not with the test hook, which sees each
     * group's compact frozen outputs.
     */
    static TokenGroups of(Backend be, Activations a, SparsePlan plan, int numLayers, RowBlockMode mode, FrozenSparseHook hook) {
        if (plan == null) return null;
        if (plan.layers() == null || plan.layers().length != numLayers)
            throw new IllegalArgumentException("sparse plan has " + (plan.layers() == null ? 0 : plan.layers().length) + " layer entries, the model has " + numLayers);
        if (plan.sparseTokens() == null || plan.sparseTokens().numel() == 0) return null; // nothing runs sparse
        int nS = (int) plan.sparseTokens().numel();
        int nD = plan.denseTokens() == null ? 0 : (int) plan.denseTokens().numel();
        if (nS + nD != a.N)
            throw new IllegalArgumentException("sparse plan splits " + nS + " sparse + " + nD + " dense tokens, the batch has " + a.N);
        Tensor sIdx = a.sTok.view(0, nS);
        be.copy(sIdx, plan.sparseTokens());
        Tensor dIdx = nD == 0 ? null : a.dTok.view(0, nD);
        if (dIdx != null) be.copy(dIdx, plan.denseTokens());
        RowBlocks sb = null, db = null;
        if (mode != RowBlockMode.OFF && hook == null) {
            boolean oneRun = mode == RowBlockMode.CONTIGUOUS;
            sb = RowBlocks.of(be.toInts(sIdx), a.T);
            if (oneRun && sb != null && sb.blocks() != 1) sb = null;
            if (sb != null && nD > 0 && (mode == RowBlockMode.ALL || oneRun)) {
                db = RowBlocks.of(be.toInts(dIdx), a.T);
                if (oneRun && db != null && db.blocks() != 1) db = null;
            }
        }
        return new TokenGroups(sIdx, dIdx, sb, db, plan.frozenGrad() == SparsePlan.FrozenGrad.SLICED, hook);
    }

    /** Whether x's token rows already sit in the shared gather buffers. */
    boolean gathered(Tensor x) { return gatheredFrom == x; }

    /** x's token rows now sit in the shared gather buffers (null: they hold something else). */
    void markGathered(Tensor x) { gatheredFrom = x; }
}
