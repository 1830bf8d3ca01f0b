package org.sparselora.engine.model;

import java.util.Arrays;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.SparseOps;
import org.sparselora.engine.backend.Tensor;

/**
 * The frozen weights' kept slices of a sparse step, per layer and projection: rows of W for
 * q/k/v/gate/up (the kept outputs), columns for o/down (the kept inputs), gathered once per forward
 * and reused by the backward. Buffers are kept across steps and remade only when a kept count
 * changes. The MLP runs on its kept set padded by {@link KeptPadding} (zero weights on the padding
 * channels, so their frozen outputs are 0, exactly a pruned channel's).
 */
final class WeightSlices implements AutoCloseable {
    private final SparseOps sp;
    private final org.sparselora.engine.backend.Backend be;
    private final LlamaWeights w;
    private final LlamaConfig c;
    private final KeptBuffers buffers;
    // [layer][projection]; buffers reused when k repeats
    private final Tensor[][] slices, biasSlices;
    // per layer, the kept MLP channels the MLP runs on (mlpIdx) and the plan's set they came from
    // (mlpSrc): the plan's set padded (KeptPadding), or the set itself
    private final Tensor[] mlpIdx, mlpSrc, mlpPadBuf;

    WeightSlices(SparseOps sp, LlamaWeights w, KeptBuffers buffers) {
        this.sp = sp;
        this.be = sp.backend();
        this.w = w;
        this.c = w.config;
        this.buffers = buffers;
        int L = c.numLayers(), np = Projection.values().length;
        slices = new Tensor[L][np];
        biasSlices = new Tensor[L][np];
        mlpIdx = new Tensor[L];
        mlpSrc = new Tensor[L];
        mlpPadBuf = new Tensor[L];
    }

    /** Layer l's kept slice of p: (k, in) for q/k/v/gate/up, (out, k) for o/down. */
    Tensor slice(int l, Projection p) { return slices[l][p.ordinal()]; }

    /** Layer l's kept bias entries of p, (k, 1). */
    Tensor biasSlice(int l, Projection p) { return biasSlices[l][p.ordinal()]; }

    /** Gathers layer l's kept weight slices of the given projections (those with a kept-index set in lp). */
    void gather(int l, SparsePlan.LayerPlan lp, KeptPadding padding, Projection... projections) {
        boolean mlpPadded = false;
        for (Projection p : projections) {
            Tensor idx = lp == null ? null : keptIndex(lp, p);
            if (idx == null) continue;
            int k0 = (int) idx.numel();
            if (isMlp(p)) {                               // the MLP runs on its kept set padded
                if (!mlpPadded) padMlpKept(l, idx, padding);
                mlpPadded = true;
                idx = mlpIdx[l];
            }
            int k = (int) idx.numel(), in = p.inDim(c), out = p.outDim(c);
            Tensor W = w.layers[l].weight(p);
            boolean rowsKept = outputSliced(p);
            int[] shape = rowsKept ? new int[] {k, in} : new int[] {out, k};
            Tensor s = slices[l][p.ordinal()];
            if (s == null || !Arrays.equals(s.shape(), shape)) {
                if (s != null) s.close(); // a new kept count: the old slice goes back to the pool
                slices[l][p.ordinal()] = s = buffers.make(W.dtype(), shape);
            }
            Nf4Weights q = w.nf4();
            if (q != null) {   // QLoRA: only the kept channels' slice is dequantized, straight from the codes
                if (rowsKept) be.dequantizeNf4Rows(s, q.packed(l, p), q.absmax(l, p), idx, in);
                else be.dequantizeNf4Cols(s, q.packed(l, p), q.absmax(l, p), idx, in);
            } else if (rowsKept) be.gatherRows(s, W, idx); else sp.gatherCols(s, W, idx);
            if (k > k0) {                                 // padding channels: zero weights, so their frozen outputs are 0
                if (rowsKept) be.fill(s.rows(k0, k - k0), 0f); else sp.fillCols(s, k0, 0f);
            }
            Tensor bias = w.layers[l].bias(p);
            if (bias != null) {
                Tensor bs = biasSlices[l][p.ordinal()];
                if (bs == null || bs.numel() != k) {
                    if (bs != null) bs.close();
                    biasSlices[l][p.ordinal()] = bs = buffers.make(bias.dtype(), k, 1);
                }
                be.gatherRows(bs, bias.reshape(out, 1), idx);
                if (k > k0) be.fill(bs.rows(k0, k - k0), 0f);
            }
        }
    }

    /**
     * Sets layer l's MLP index set (mlpIdx[l]) for the plan's kept channels {@code kept}: the set
     * itself when the padding keeps its count, else the set padded with the lowest unkept channels
     * ({@link SparseOps#padIndexSet}). What the padding buys is alignment: kept-channel activations
     * of width k are the leading dimension of the slice GEMMs, and cuBLAS falls back to kernels ~10×
     * slower when a bf16 leading dimension is not a multiple of 8 (k = 143 at 8B, 0.99 sparsity:
     * 3072×143×4096 GEMMs ran at 38 TFLOP/s on the H200).
     */
    private void padMlpKept(int l, Tensor kept, KeptPadding padding) {
        int k = (int) kept.numel(), I = c.intermediateSize(), kp = padding.width(k, I);
        mlpSrc[l] = kept;
        if (kp == k) {
            mlpIdx[l] = kept;
            return;
        }
        Tensor buf = mlpPadBuf[l];
        if (buf == null || buf.numel() != kp) {
            if (buf != null) buf.close();
            mlpPadBuf[l] = buf = buffers.make(DType.I32, kp);
        }
        sp.padIndexSet(buf, kept, I);
        mlpIdx[l] = buf;
    }

    /** The channels layer l's MLP runs on for the plan's kept set {@code kept} (null: dense). */
    Tensor mlpKept(int l, Tensor kept) {
        if (kept == null) return null;
        if (mlpSrc[l] != kept) throw new IllegalStateException("layer " + l + ": the MLP's weight slices were not gathered for this plan");
        return mlpIdx[l];
    }

    @Override
    public void close() {
        for (Tensor[] ts : all())
            for (int i = 0; i < ts.length; i++) {
                if (ts[i] != null) ts[i].close();
                ts[i] = null;
            }
        Arrays.fill(mlpIdx, null);
        Arrays.fill(mlpSrc, null);
    }

    /** Every slice array, in the order they are given back: slices, bias slices, MLP padding sets. */
    private Tensor[][] all() {
        Tensor[][] r = Arrays.copyOf(slices, 2 * slices.length + 1);
        System.arraycopy(biasSlices, 0, r, slices.length, biasSlices.length);
        r[r.length - 1] = mlpPadBuf;
        return r;
    }

    static Tensor keptIndex(SparsePlan.LayerPlan lp, Projection p) {
        return switch (p) {
            case Q -> lp.q(); case K -> lp.k(); case V -> lp.v(); case O -> lp.o();
            case GATE, UP, DOWN -> lp.mlp();
        };
    }

    static boolean isMlp(Projection p) { return p == Projection.GATE || p == Projection.UP || p == Projection.DOWN; }

    /** q/k/v/gate/up keep output rows of W; o/down keep input columns. */
    static boolean outputSliced(Projection p) { return p != Projection.O && p != Projection.DOWN; }
}
