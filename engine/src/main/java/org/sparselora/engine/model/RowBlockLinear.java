package org.sparselora.engine.model;

import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.SparseOps;
import org.sparselora.engine.backend.Tensor;

/**
 * {@link SlicedLinear} when the sparse token group is {@link RowBlocks}: its GEMM reads x's rows into
 * the compact (n_s,k) output that one scatterRowsCols re-joins (q/k/v/gate/up), or reads the gathered
 * kept columns and writes y's rows in place (o/down). The dense group does the same in place when it
 * is row blocks too, else it is gathered (once for q/k/v) and scattered. Per row the same GEMMs as
 * the gathered path, so the same bits.
 */
final class RowBlockLinear implements FrozenLinear {
    private final Backend be;
    private final SparseOps sp;
    private final TokenGroups g;
    private final Projection p;
    private final Tensor W, bias, ws, bs, idx;
    private final int in, out, k;
    private final boolean share;

    RowBlockLinear(SparseOps sp, TokenGroups g, LlamaWeights w, WeightSlices slices, int layer, Projection p, Tensor idx) {
        this.be = sp.backend();
        this.sp = sp;
        this.g = g;
        this.p = p;
        LlamaConfig c = w.config;
        this.W = w.layers[layer].weight(p);
        this.bias = w.layers[layer].bias(p);
        this.ws = slices.slice(layer, p);
        this.bs = bias == null ? null : slices.biasSlice(layer, p);
        this.idx = idx;
        this.in = p.inDim(c);
        this.out = p.outDim(c);
        this.k = (int) idx.numel();
        this.share = WeightSlices.outputSliced(p) && in <= Math.max(c.hiddenSize(), c.qDim());
    }

    @Override
    public void forward(Activations a, Tensor y, Tensor x) {
        RowBlocks s = g.sBlocks, d = g.dBlocks;
        int nS = g.nS, nD = g.nD;
        if (nD > 0 && d != null) {
            be.matmulRowBlocks(y, d.off(), d.stride(), x, d.off(), d.stride(), W, true, d.blocks(), d.len(), 1, 0);
            if (bias != null) be.matmulRowBlocks(y, d.off(), d.stride(), a.ones, 0, 0, bias.reshape(1, out), false, d.blocks(), d.len(), 1, 1);
        } else if (nD > 0) {
            Tensor xd = share ? a.xdShared.view(0, nD, in) : a.s1.view(0, nD, in), yd = a.s2.view(0, nD, out);
            if (!share || !g.gathered(x)) be.gatherRows(xd, x, g.dIdx);
            if (share) g.markGathered(x);                 // q, k, v read the same rows: gather once
            be.matmul(yd, xd, false, W, true, 1, 0);
            if (bias != null) be.matmul(yd, a.ones.rows(0, nD), false, bias.reshape(1, out), false, 1, 1);
            be.scatterRows(y, yd, g.dIdx, false);
        }
        if (WeightSlices.outputSliced(p)) {
            Tensor yk = a.s3.view(0, nS, k);
            be.matmulRowBlocks(yk, 0, s.len(), x, s.off(), s.stride(), ws, true, s.blocks(), s.len(), 1, 0);     // (n_s,k)
            if (bias != null) be.matmul(yk, a.ones.rows(0, nS), false, bs.reshape(1, k), false, 1, 1);
            sp.scatterRowsCols(y, yk, g.sIdx, idx);                                                          // pruned outputs 0
        } else {
            Tensor xk = a.s3.view(0, nS, k);
            sp.gatherRowsCols(xk, x, g.sIdx, idx);                                                           // (n_s,k)
            be.matmulRowBlocks(y, s.off(), s.stride(), xk, 0, s.len(), ws, true, s.blocks(), s.len(), 1, 0);
        }
    }

    /**
     * GEMMs read dy's rows and write (beta 0) or add into (beta 1) dx's rows in place (the dense group
     * too when it is row blocks, else gathered and scattered). Without accumulation every row is
     * written (dense rows by their GEMM; sparse rows by the slice's GEMM or, for o/down, one
     * scatterRowsCols), so dx is only zero-filled under cut, where the sparse rows get nothing.
     */
    @Override
    public void backward(Activations a, Tensor dx, boolean accumulate, Tensor dy, Tensor x) {
        if (dx == null) return;
        RowBlocks s = g.sBlocks, d = g.dBlocks;
        int nS = g.nS, nD = g.nD;
        float beta = accumulate ? 1 : 0;
        if (!accumulate && !g.sliced) be.fill(dx, 0f);
        if (nD > 0 && d != null) {
            be.matmulRowBlocks(dx, d.off(), d.stride(), dy, d.off(), d.stride(), W, false, d.blocks(), d.len(), 1, beta);
        } else if (nD > 0) {
            Tensor dyd = a.s1.view(0, nD, out), dxd = a.s2.view(0, nD, in);
            be.gatherRows(dyd, dy, g.dIdx);
            be.matmul(dxd, dyd, false, W, false, 1, 0);
            be.scatterRows(dx, dxd, g.dIdx, accumulate);
        }
        if (!g.sliced) return;                             // cut: no gradient through the frozen path on sparse tokens
        if (WeightSlices.outputSliced(p)) {
            Tensor dyk = a.s3.view(0, nS, k);
            sp.gatherRowsCols(dyk, dy, g.sIdx, idx);                                                           // (n_s,k)
            be.matmulRowBlocks(dx, s.off(), s.stride(), dyk, 0, s.len(), ws, false, s.blocks(), s.len(), 1, beta);
        } else {
            Tensor dxk = a.s3.view(0, nS, k);
            be.matmulRowBlocks(dxk, 0, s.len(), dy, s.off(), s.stride(), ws, false, s.blocks(), s.len(), 1, 0); // (n_s,k)
            if (!accumulate) {
                sp.scatterRowsCols(dx, dxk, g.sIdx, idx);
            } else {
                Tensor dxs = a.s2.view(0, nS, in);
                be.fill(dxs, 0f);
                sp.scatterCols(dxs, dxk, idx, false);
                be.scatterRows(dx, dxs, g.sIdx, true);
            }
        }
    }
}
