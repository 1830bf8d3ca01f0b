package org.sparselora.engine.model;

import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;

/**
 * {@link CompactMlp} with the sparse token group as {@link RowBlocks}: the GEMMs read xn2's rows and
 * write y's (and, backwards, dy's and dx's) in place; the dense group likewise when it is row blocks
 * too, else gathered. Same stash packing, same bits.
 */
final class CompactMlpRowBlocks implements Mlp {
    private final Backend be;
    private final TokenGroups g;
    private final LlamaWeights.Layer lw;
    private final Tensor wg, wu, wd;
    private final int C, I, k;

    CompactMlpRowBlocks(Backend be, TokenGroups g, LlamaWeights w, WeightSlices slices, int l, Tensor idx) {
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
        RowBlocks s = g.sBlocks, d = g.dBlocks;
        if (nD > 0) {
            Tensor gd = a.g[l].view(0, nD, I), ud = a.u[l].view(0, nD, I), hd = a.h[l].view(0, nD, I);
            if (d != null) {
                be.matmulRowBlocks(gd, 0, d.len(), x, d.off(), d.stride(), lw.weight(Projection.GATE), true, d.blocks(), d.len(), 1, 0);
                be.matmulRowBlocks(ud, 0, d.len(), x, d.off(), d.stride(), lw.weight(Projection.UP), true, d.blocks(), d.len(), 1, 0);
                be.swiglu(hd, gd, ud);
                be.matmulRowBlocks(y, d.off(), d.stride(), hd, 0, d.len(), lw.weight(Projection.DOWN), true, d.blocks(), d.len(), 1, 0);
            } else {
                Tensor xd = a.xdShared.view(0, nD, C), yd = a.s2.view(0, nD, C);
                g.markGathered(null);                     // xdShared now holds other rows
                be.gatherRows(xd, x, g.dIdx);
                be.matmul(gd, xd, false, lw.weight(Projection.GATE), true, 1, 0);
                be.matmul(ud, xd, false, lw.weight(Projection.UP), true, 1, 0);
                be.swiglu(hd, gd, ud);
                be.matmul(yd, hd, false, lw.weight(Projection.DOWN), true, 1, 0);
                be.scatterRows(y, yd, g.dIdx, false);
            }
        }
        long off = (long) nD * I;
        Tensor gk = a.g[l].view(off, nS, k), uk = a.u[l].view(off, nS, k), hk = a.h[l].view(off, nS, k);
        be.matmulRowBlocks(gk, 0, s.len(), x, s.off(), s.stride(), wg, true, s.blocks(), s.len(), 1, 0);
        be.matmulRowBlocks(uk, 0, s.len(), x, s.off(), s.stride(), wu, true, s.blocks(), s.len(), 1, 0);
        be.swiglu(hk, gk, uk);
        be.matmulRowBlocks(y, s.off(), s.stride(), hk, 0, s.len(), wd, true, s.blocks(), s.len(), 1, 0);
    }

    @Override
    public void backward(Activations a, Tensor dx, Tensor dy, int l) {
        int nS = g.nS, nD = g.nD;
        RowBlocks s = g.sBlocks, d = g.dBlocks;
        if (!g.sliced) be.fill(dx, 0f);
        if (nD > 0 && d == null) {
            CompactMlp.denseTokensBackward(be, g, lw, C, I, a, dx, dy, l);
        } else if (nD > 0) {
            Tensor gd = a.g[l].view(0, nD, I), ud = a.u[l].view(0, nD, I);
            Tensor dhd = a.dh.view(0, nD, I), dgd = a.dg.view(0, nD, I), dud = a.du.view(0, nD, I);
            be.matmulRowBlocks(dhd, 0, d.len(), dy, d.off(), d.stride(), lw.weight(Projection.DOWN), false, d.blocks(), d.len(), 1, 0);
            be.swigluBackward(dgd, dud, dhd, gd, ud);
            be.matmulRowBlocks(dx, d.off(), d.stride(), dgd, 0, d.len(), lw.weight(Projection.GATE), false, d.blocks(), d.len(), 1, 0);
            be.matmulRowBlocks(dx, d.off(), d.stride(), dud, 0, d.len(), lw.weight(Projection.UP), false, d.blocks(), d.len(), 1, 1);
        }
        if (g.sliced) {
            long off = (long) nD * I;
            Tensor gk = a.g[l].view(off, nS, k), uk = a.u[l].view(off, nS, k);
            Tensor dhk = a.dh.view(0, nS, k), dgk = a.dg.view(0, nS, k), duk = a.du.view(0, nS, k);
            be.matmulRowBlocks(dhk, 0, s.len(), dy, s.off(), s.stride(), wd, false, s.blocks(), s.len(), 1, 0);
            be.swigluBackward(dgk, duk, dhk, gk, uk);
            be.matmulRowBlocks(dx, s.off(), s.stride(), dgk, 0, s.len(), wg, false, s.blocks(), s.len(), 1, 0);
            be.matmulRowBlocks(dx, s.off(), s.stride(), duk, 0, s.len(), wu, false, s.blocks(), s.len(), 1, 1);
        }
    }
}
