package org.sparselora.engine.model;

import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;

/**
 * The MLP of a sparse layer whose gate/up/down carry neither LoRA nor bias, token groups gathered.
 * Then the sparse tokens' MLP never needs the full intermediate width: the LoRA branch, which is
 * dense on every channel, is absent, and pruned gate/up outputs are 0, so their swiglu is 0 and
 * down's pruned input columns contribute nothing. Dense tokens run the full width; sparse tokens the
 * k kept channels only, g_k = x_s·Wg_keptᵀ, u_k = x_s·Wu_keptᵀ, h_k = swiglu (n_s,k),
 * y_s = h_k·Wd_keptᵀ (n_s,C): no fill or scatter to the intermediate width and no gather of h's
 * columns. The stash packs both groups into g/u/h[l]: the dense tokens' (n_d,I) first, then the
 * sparse tokens' (n_s,k) — n_d·I + n_s·k ≤ N·I.
 */
final class CompactMlp implements Mlp {
    private final Backend be;
    private final TokenGroups g;
    private final LlamaWeights.Layer lw;
    private final Tensor wg, wu, wd;   // kept slices: (k,C) (k,C) (C,k)
    private final int C, I, k;

    CompactMlp(Backend be, TokenGroups g, LlamaWeights w, WeightSlices slices, int l, Tensor idx) {
        this.be = be;
        this.g = g;
        this.lw = w.layers[l];
        this.wg = slices.slice(l, Projection.GATE);
        this.wu = slices.slice(l, Projection.UP);
        this.wd = slices.slice(l, Projection.DOWN);
        this.C = w.config.hiddenSize();
        this.I = w.config.intermediateSize();
        this.k = (int) idx.numel();
    }

    @Override public Kind kind() { return Kind.COMPACT; }

    @Override
    public void forward(Activations a, Tensor y, int l) {
        int nS = g.nS, nD = g.nD;
        Tensor x = a.xn2[l];
        g.markGathered(x);
        if (nD > 0) {
            Tensor xd = a.xdShared.view(0, nD, C);                                           // (n_d,C)
            Tensor gd = a.g[l].view(0, nD, I), ud = a.u[l].view(0, nD, I), hd = a.h[l].view(0, nD, I);
            be.gatherRows(xd, x, g.dIdx);
            be.matmul(gd, xd, false, lw.weight(Projection.GATE), true, 1, 0);
            be.matmul(ud, xd, false, lw.weight(Projection.UP), true, 1, 0);
            be.swiglu(hd, gd, ud);
            Tensor yd = a.s2.view(0, nD, C);
            be.matmul(yd, hd, false, lw.weight(Projection.DOWN), true, 1, 0);
            be.scatterRows(y, yd, g.dIdx, false);
        }
        long off = (long) nD * I;
        Tensor xs = a.xsShared.view(0, nS, C);                                               // (n_s,C)
        Tensor gk = a.g[l].view(off, nS, k), uk = a.u[l].view(off, nS, k), hk = a.h[l].view(off, nS, k);
        be.gatherRows(xs, x, g.sIdx);
        be.matmul(gk, xs, false, wg, true, 1, 0);                                            // (n_s,k)
        be.matmul(uk, xs, false, wu, true, 1, 0);
        if (g.hook != null) {
            g.hook.apply(l, Projection.GATE, gk);
            g.hook.apply(l, Projection.UP, uk);
        }
        be.swiglu(hk, gk, uk);
        Tensor ys = a.s2.view(0, nS, C);
        be.matmul(ys, hk, false, wd, true, 1, 0);                                            // (n_s,C), slice (C,k)
        if (g.hook != null) g.hook.apply(l, Projection.DOWN, ys);
        be.scatterRows(y, ys, g.sIdx, false);
    }

    /**
     * With {@code frozen_grad: cut} the sparse tokens' rows are 0 (the whole MLP is frozen on them);
     * sliced runs the same kept-channel GEMMs backwards. Per row the ops are those of the full path
     * (dx = dg·Wg, then += du·Wu), so a plan keeping every channel stays bit-for-bit dense.
     */
    @Override
    public void backward(Activations a, Tensor dx, Tensor dy, int l) {
        int nS = g.nS, nD = g.nD;
        if (!g.sliced) be.fill(dx, 0f);
        if (nD > 0) denseTokensBackward(be, g, lw, C, I, a, dx, dy, l);
        if (g.sliced) {
            long off = (long) nD * I;
            Tensor dys = a.s1.view(0, nS, C), dxs = a.s2.view(0, nS, C);
            Tensor gk = a.g[l].view(off, nS, k), uk = a.u[l].view(off, nS, k);
            Tensor dhk = a.dh.view(0, nS, k), dgk = a.dg.view(0, nS, k), duk = a.du.view(0, nS, k);
            be.gatherRows(dys, dy, g.sIdx);
            be.matmul(dhk, dys, false, wd, false, 1, 0);                                     // (n_s,k)
            be.swigluBackward(dgk, duk, dhk, gk, uk);
            be.matmul(dxs, dgk, false, wg, false, 1, 0);                                     // (n_s,C)
            be.matmul(dxs, duk, false, wu, false, 1, 1);
            be.scatterRows(dx, dxs, g.sIdx, false);
        }
    }

    /**
     * The compact MLP's backward for the dense tokens through gathered rows: their dy rows gathered,
     * the full-width down/swiglu/gate/up backward, their dx rows scattered back (overwritten).
     */
    static void denseTokensBackward(Backend be, TokenGroups g, LlamaWeights.Layer lw, int C, int I, Activations a, Tensor dx, Tensor dy, int l) {
        int nD = g.nD;
        Tensor dyd = a.s1.view(0, nD, C), dxd = a.s2.view(0, nD, C);
        Tensor gd = a.g[l].view(0, nD, I), ud = a.u[l].view(0, nD, I);
        Tensor dhd = a.dh.view(0, nD, I), dgd = a.dg.view(0, nD, I), dud = a.du.view(0, nD, I);
        be.gatherRows(dyd, dy, g.dIdx);
        be.matmul(dhd, dyd, false, lw.weight(Projection.DOWN), false, 1, 0);
        be.swigluBackward(dgd, dud, dhd, gd, ud);
        be.matmul(dxd, dgd, false, lw.weight(Projection.GATE), false, 1, 0);
        be.matmul(dxd, dud, false, lw.weight(Projection.UP), false, 1, 1);
        be.scatterRows(dx, dxd, g.dIdx, false);
    }
}
