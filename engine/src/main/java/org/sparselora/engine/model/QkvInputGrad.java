package org.sparselora.engine.model;

import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.SparseOps;
import org.sparselora.engine.backend.Tensor;

/**
 * The frozen part of q/k/v's input gradient, dx (N,C) = Σ_p ∂/∂xn1 through W_p (overwritten) from
 * dq, dk, dv, in the order q, k, v for every token (so a plan keeping every channel is bit-for-bit
 * dense). q, k and v read the same input, so their backward is one strategy, chosen once per layer
 * per step like the projections': {@link #dense}, or with sparse tokens {@link #of}: each token
 * group's sum (kept-channel slices under sliced; nothing under cut) built in one (n,C) buffer and
 * scattered once, or in dx's own rows when the groups are row blocks.
 */
interface QkvInputGrad {

    /** dx (N,C) = the frozen input gradient of layer l's q, k, v from a.dq, a.dk, a.dv. */
    void backward(Activations a, Tensor dx);

    Projection[] QKV = {Projection.Q, Projection.K, Projection.V};

    private static Tensor[] dys(Activations a) { return new Tensor[] {a.dq, a.dk, a.dv}; }

    /** Every token on the whole weights: three GEMMs into dx. */
    static QkvInputGrad dense(Backend be, LlamaWeights.Layer lw) {
        return (a, dx) -> {
            Tensor[] dys = dys(a);
            for (int i = 0; i < 3; i++) be.matmul(dx, dys[i], false, lw.weight(QKV[i]), false, 1, i == 0 ? 0 : 1);
        };
    }

    /**
     * Full-parameter training: {@code frozen}'s input gradient, then q, k and v's weight gradients
     * through their own {@link FrozenLinear}s (input gradient off: it is already in dx).
     */
    static QkvInputGrad withWeightGrads(QkvInputGrad frozen, FrozenLinear[] qkv, int l) {
        return (a, dx) -> {
            frozen.backward(a, dx);
            Tensor[] dys = dys(a);
            for (int i = 0; i < 3; i++) qkv[i].backward(a, null, false, dys[i], a.xn1[l]);
        };
    }

    /** With the step's token groups; idx: the kept sets of q, k, v (an entry null: that projection dense on every token). */
    static QkvInputGrad of(SparseOps sp, TokenGroups g, LlamaWeights w, WeightSlices slices, int l, Tensor[] idx) {
        LlamaWeights.Layer lw = w.layers[l];
        if (idx[0] == null && idx[1] == null && idx[2] == null) return dense(sp.backend(), lw);
        Tensor[] ws = new Tensor[3];
        for (int i = 0; i < 3; i++) ws[i] = idx[i] == null ? null : slices.slice(l, QKV[i]);
        int C = w.config.hiddenSize();
        int[] outs = new int[3];
        for (int i = 0; i < 3; i++) outs[i] = QKV[i].outDim(w.config);
        Backend be = sp.backend();
        if (g.sBlocks != null) return (a, dx) -> rowBlocks(be, sp, g, lw, ws, idx, outs, C, a, dx);
        return (a, dx) -> gathered(be, sp, g, lw, ws, idx, outs, C, a, dx);
    }

    private static void gathered(Backend be, SparseOps sp, TokenGroups g, LlamaWeights.Layer lw, Tensor[] ws, Tensor[] idx, int[] outs,
                                 int C, Activations a, Tensor dx) {
        int nS = g.nS, nD = g.nD;
        Tensor[] dys = dys(a);
        Tensor dxd = a.s2.view(0, nD, C), dxs = a.s3.view(0, nS, C);
        boolean anyS = false;
        for (int i = 0; i < 3; i++) {
            int out = outs[i];
            if (nD > 0) {
                Tensor dyd = a.s1.view(0, nD, out);
                be.gatherRows(dyd, dys[i], g.dIdx);
                be.matmul(dxd, dyd, false, lw.weight(QKV[i]), false, 1, i == 0 ? 0 : 1);
            }
            if (idx[i] == null) {                        // this projection runs dense on every token
                Tensor dyS = a.s1.view(0, nS, out);
                be.gatherRows(dyS, dys[i], g.sIdx);
                be.matmul(dxs, dyS, false, lw.weight(QKV[i]), false, 1, anyS ? 1 : 0);
                anyS = true;
            } else if (g.sliced) {
                int k = (int) idx[i].numel();
                Tensor dyk = a.s1.view(0, nS, k);
                sp.gatherRowsCols(dyk, dys[i], g.sIdx, idx[i]);
                be.matmul(dxs, dyk, false, ws[i], false, 1, anyS ? 1 : 0);
                anyS = true;
            }
        }
        if (nD > 0) be.scatterRows(dx, dxd, g.dIdx, false);
        if (!anyS) be.fill(dxs, 0f);                     // cut: the sparse tokens' frozen path adds nothing
        be.scatterRows(dx, dxs, g.sIdx, false);
    }

    /** Each group's sum over q, k, v built in dx's own rows (same order per row: q, then k, then v), reading dy's rows in place. */
    private static void rowBlocks(Backend be, SparseOps sp, TokenGroups g, LlamaWeights.Layer lw, Tensor[] ws, Tensor[] idx, int[] outs,
                                  int C, Activations a, Tensor dx) {
        RowBlocks s = g.sBlocks, d = g.dBlocks;
        int nS = g.nS, nD = g.nD;
        Tensor[] dys = dys(a);
        Tensor dxd = a.s2.view(0, nD, C);                // the dense rows' sum when they are gathered
        boolean anyS = false;
        for (int i = 0; i < 3; i++) {
            Tensor W = lw.weight(QKV[i]);
            if (nD > 0 && d != null) {
                be.matmulRowBlocks(dx, d.off(), d.stride(), dys[i], d.off(), d.stride(), W, false, d.blocks(), d.len(), 1, i == 0 ? 0 : 1);
            } else if (nD > 0) {
                Tensor dyd = a.s1.view(0, nD, outs[i]);
                be.gatherRows(dyd, dys[i], g.dIdx);
                be.matmul(dxd, dyd, false, W, false, 1, i == 0 ? 0 : 1);
            }
            if (idx[i] == null) {                        // this projection runs dense on every token
                be.matmulRowBlocks(dx, s.off(), s.stride(), dys[i], s.off(), s.stride(), W, false, s.blocks(), s.len(), 1, anyS ? 1 : 0);
                anyS = true;
            } else if (g.sliced) {
                int k = (int) idx[i].numel();
                Tensor dyk = a.s1.view(0, nS, k);
                sp.gatherRowsCols(dyk, dys[i], g.sIdx, idx[i]);
                be.matmulRowBlocks(dx, s.off(), s.stride(), dyk, 0, s.len(), ws[i], false, s.blocks(), s.len(), 1, anyS ? 1 : 0);
                anyS = true;
            }
        }
        if (nD > 0 && d == null) be.scatterRows(dx, dxd, g.dIdx, false);
        if (!anyS) {                                     // cut: the sparse tokens' frozen path adds nothing
            Tensor dxs = a.s3.view(0, nS, C);
            be.fill(dxs, 0f);
            be.scatterRows(dx, dxs, g.sIdx, false);
        }
    }
}
