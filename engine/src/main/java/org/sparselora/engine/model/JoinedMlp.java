package org.sparselora.engine.model;

import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.SparseOps;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.lora.LoraAdapter;

/**
 * The MLP of a sparse layer that carries LoRA on gate/up/down (so g, u, h stay at the full
 * intermediate width on every token), with the token groups joined into LoRA's outputs instead of
 * LoRA added onto scattered frozen outputs. Taken when the groups are gathered (not row blocks),
 * the MLP has no bias and this forward draws no LoRA dropout. g and u are first written by their
 * LoRA GEMMs (on the sparse tokens' pruned channels that is all they hold); then one pass
 * ({@link SparseOps#swigluJoin}) adds the dense tokens' frozen rows and the sparse tokens'
 * kept-channel frozen outputs, runs swiglu on every row, and gathers what down's frozen GEMMs read
 * (h's dense rows, and h at the kept channels of the sparse rows). Per (n,I) activation that saves
 * the full-width rows of zeros the re-join wrote and the read-modify-write of LoRA's beta-1 add, the
 * separate swiglu pass and the gathers of h.
 * Work buffers: s1/s2 hold the dense rows' (n_d,I) frozen g/u (then h) followed by the sparse rows'
 * (n_s,k) kept g/u; s3 the kept h; xsShared/xdShared the token rows of x, then of y.
 */
final class JoinedMlp implements Mlp {
    private final Backend be;
    private final SparseOps sp;
    private final TokenGroups g;
    private final LoraBranch lora;
    private final LlamaWeights.Layer lw;
    private final Tensor wg, wu, wd, idx;
    private final int C, I, k;

    JoinedMlp(SparseOps sp, TokenGroups g, LoraBranch lora, LlamaWeights w, WeightSlices slices, int l, Tensor idx) {
        this.be = sp.backend();
        this.sp = sp;
        this.g = g;
        this.lora = lora;
        this.lw = w.layers[l];
        this.wg = slices.slice(l, Projection.GATE);
        this.wu = slices.slice(l, Projection.UP);
        this.wd = slices.slice(l, Projection.DOWN);
        this.idx = idx;
        this.C = w.config.hiddenSize();
        this.I = w.config.intermediateSize();
        this.k = (int) idx.numel();
    }

    @Override public Kind kind() { return Kind.JOINED; }

    @Override
    public void forward(Activations a, Tensor y, int l) {
        int nS = g.nS, nD = g.nD;
        long off = (long) nD * I;
        Tensor x = a.xn2[l], gt = a.g[l], u = a.u[l], h = a.h[l];
        // LoRA of gate and up, written
        LoraAdapter.Group grp = lora.group(l, Projection.GATE, Projection.UP);
        lora.groupForward(a, l, grp, x, 0f);
        for (Projection p : new Projection[] {Projection.GATE, Projection.UP})
            if (grp == null || !grp.members().contains(p)) lora.write(a, p == Projection.GATE ? gt : u, x, l, p);
        // frozen gate/up: dense tokens on the whole weights, sparse tokens on the kept slices
        Tensor gd = null, ud = null;
        if (nD > 0) {
            Tensor xd = a.xdShared.view(0, nD, C);
            be.gatherRows(xd, x, g.dIdx);
            gd = a.s1.view(0, nD, I);
            ud = a.s2.view(0, nD, I);
            be.matmul(gd, xd, false, lw.weight(Projection.GATE), true, 1, 0);
            be.matmul(ud, xd, false, lw.weight(Projection.UP), true, 1, 0);
        }
        Tensor xs = a.xsShared.view(0, nS, C);
        be.gatherRows(xs, x, g.sIdx);
        g.markGathered(null);                                                        // xs/xd get y's rows below
        Tensor gk = a.s1.view(off, nS, k), uk = a.s2.view(off, nS, k);
        be.matmul(gk, xs, false, wg, true, 1, 0);                                    // (n_s,k)
        be.matmul(uk, xs, false, wu, true, 1, 0);
        if (g.hook != null) {
            g.hook.apply(l, Projection.GATE, gk);
            g.hook.apply(l, Projection.UP, uk);
        }
        // both groups joined, swiglu on every row; h's dense rows gathered into gd's place, its kept
        // channels of the sparse rows into hk
        Tensor hk = a.s3.view(0, nS, k);
        sp.swigluJoin(h, gt, u, gd, ud, nD > 0 ? g.dIdx : null, gd, g.sIdx, gk, uk, idx, hk);
        // down: dense tokens on the whole weight, sparse tokens on the kept columns; then its LoRA
        if (nD > 0) {
            Tensor yd = a.xdShared.view(0, nD, C);
            be.matmul(yd, gd, false, lw.weight(Projection.DOWN), true, 1, 0);
            be.scatterRows(y, yd, g.dIdx, false);
        }
        Tensor ys = a.xsShared.view(0, nS, C);
        be.matmul(ys, hk, false, wd, true, 1, 0);                                    // (n_s,C), slice (C,k)
        if (g.hook != null) g.hook.apply(l, Projection.DOWN, ys);
        be.scatterRows(y, ys, g.sIdx, false);
        lora.forward(a, y, h, l, Projection.DOWN);
    }

    /**
     * down's LoRA writes dh first; one pass ({@link SparseOps#swigluBackwardJoin}) adds both groups'
     * frozen dh (dense rows whole, sparse rows at the kept channels), runs swiglu's backward on every
     * row and gathers what gate/up's frozen GEMMs read (dg/du's dense rows and kept channels): no fill
     * of dh, no scatters into it, no separate gathers. Each token group's frozen dx is built in one
     * buffer and scattered once (no fill of dx, no accumulating scatters); gate/up's LoRA then adds
     * its dx. Under cut the sparse tokens' frozen terms are left out.
     */
    @Override
    public void backward(Activations a, Tensor dx, Tensor dy, int l) {
        int nS = g.nS, nD = g.nD;
        long off = (long) nD * I;
        boolean sliced = g.sliced;
        Tensor x = a.xn2[l], h = a.h[l];
        lora.backwardWrite(a, a.dh, dy, h, l, Projection.DOWN);                        // dh = down's LoRA term (0 without)
        // frozen down: dense tokens through the whole weight (joined below), sparse tokens through the slice
        Tensor dhd = null;
        if (nD > 0) {
            Tensor dyd = a.xdShared.view(0, nD, C);
            be.gatherRows(dyd, dy, g.dIdx);
            dhd = a.s1.view(0, nD, I);
            be.matmul(dhd, dyd, false, lw.weight(Projection.DOWN), false, 1, 0);
        }
        g.markGathered(null);
        Tensor dhk = null;
        if (sliced) {
            Tensor dys = a.xsShared.view(0, nS, C);
            dhk = a.s1.view(off, nS, k);
            be.gatherRows(dys, dy, g.sIdx);
            be.matmul(dhk, dys, false, wd, false, 1, 0);                             // (n_s,k)
        }
        // swiglu's backward on every row with both groups' frozen dh joined; the dense rows' dg/du
        // gathered whole, the sparse rows' at the kept channels
        Tensor dgd = nD > 0 ? a.s2.view(0, nD, I) : null, dud = nD > 0 ? a.s3.view(0, nD, I) : null;
        Tensor dgk = sliced ? a.s3.view(off, nS, k) : null, duk = sliced ? a.s2.view(off, nS, k) : null;
        sp.swigluBackwardJoin(a.dg, a.du, a.dh, a.g[l], a.u[l], dhd, nD > 0 ? g.dIdx : null, dgd, dud, g.sIdx, dhk, idx, dgk, duk);
        // frozen gate/up input gradient, one buffer and one scatter per token group
        if (nD > 0) {
            Tensor dxd = a.xdShared.view(0, nD, C);
            be.matmul(dxd, dgd, false, lw.weight(Projection.GATE), false, 1, 0);
            be.matmul(dxd, dud, false, lw.weight(Projection.UP), false, 1, 1);
            be.scatterRows(dx, dxd, g.dIdx, false);
        }
        Tensor dxs = a.xsShared.view(0, nS, C);
        if (sliced) {
            be.matmul(dxs, dgk, false, wg, false, 1, 0);                             // (n_s,C)
            be.matmul(dxs, duk, false, wu, false, 1, 1);
        } else {
            be.fill(dxs, 0f);                                                        // cut: LoRA only
        }
        be.scatterRows(dx, dxs, g.sIdx, false);
        // gate/up's LoRA: dA, dB and dx +=
        lora.backward(a, dx, a.dg, x, l, Projection.GATE);
        lora.backward(a, dx, a.du, x, l, Projection.UP);
        lora.groupBackward(a, dx, l, lora.group(l, Projection.GATE, Projection.UP), x);
    }
}
