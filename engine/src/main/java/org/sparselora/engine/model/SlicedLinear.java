package org.sparselora.engine.model;

import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.SparseOps;
import org.sparselora.engine.backend.Tensor;

/**
 * A projection of a sparse step with the token groups gathered: the dense tokens' rows run on the
 * whole weight, the sparse tokens' rows on the kept slice — rows of W for q/k/v/gate/up (outputs
 * (n_s,k), re-joined with pruned outputs 0), columns for o/down (inputs (n_s,k), the kept columns of
 * x) — and each group's results are scattered back. q/k/v (and gate/up) read the same input: its
 * token rows are gathered once into the shared buffers ({@link TokenGroups#gathered}). Backward
 * through the slices follows {@link SparsePlan.FrozenGrad}: sliced runs the same GEMMs backwards,
 * cut leaves the sparse tokens' frozen term out.
 */
final class SlicedLinear implements FrozenLinear {
    private final Backend be;
    private final SparseOps sp;
    private final TokenGroups g;
    private final int layer;
    private final Projection p;
    private final Tensor W, bias, ws, bs, idx;   // whole weight, bias; kept slice, kept bias; kept indices (k) I32
    private final int in, out, k;
    private final boolean share;                 // the input's token rows go to the shared gather buffers

    SlicedLinear(SparseOps sp, TokenGroups g, LlamaWeights w, WeightSlices slices, int layer, Projection p, Tensor idx) {
        this.be = sp.backend();
        this.sp = sp;
        this.g = g;
        this.layer = layer;
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
        // q/k/v and gate/up read the same input: gather its token rows once. o/down read only the
        // kept columns of the sparse rows (one gatherRowsCols, nothing to share).
        this.share = WeightSlices.outputSliced(p) && in <= Math.max(c.hiddenSize(), c.qDim());
    }

    @Override
    public void forward(Activations a, Tensor y, Tensor x) {
        int nS = g.nS, nD = g.nD;
        boolean have = share && g.gathered(x);
        if (share && !have) g.markGathered(x);
        if (nD > 0) {
            Tensor xd = share ? a.xdShared.view(0, nD, in) : a.s1.view(0, nD, in), yd = a.s2.view(0, nD, out);
            if (!have) be.gatherRows(xd, x, g.dIdx);
            be.matmul(yd, xd, false, W, true, 1, 0);
            if (bias != null) be.matmul(yd, a.ones.rows(0, nD), false, bias.reshape(1, out), false, 1, 1);
            be.scatterRows(y, yd, g.dIdx, false);
        }
        if (WeightSlices.outputSliced(p)) {
            Tensor xs = share ? a.xsShared.view(0, nS, in) : a.s1.view(0, nS, in), yk = a.s3.view(0, nS, k);
            if (!have) be.gatherRows(xs, x, g.sIdx);
            be.matmul(yk, xs, false, ws, true, 1, 0);                                  // (n_s,k)
            if (bias != null) be.matmul(yk, a.ones.rows(0, nS), false, bs.reshape(1, k), false, 1, 1);
            if (g.hook != null) g.hook.apply(layer, p, yk);
            sp.scatterRowsCols(y, yk, g.sIdx, idx);                                     // pruned outputs 0
        } else {
            Tensor xk = a.s3.view(0, nS, k), ys = a.s2.view(0, nS, out);
            sp.gatherRowsCols(xk, x, g.sIdx, idx);                                      // (n_s,k)
            be.matmul(ys, xk, false, ws, true, 1, 0);
            if (g.hook != null) g.hook.apply(layer, p, ys);
            be.scatterRows(y, ys, g.sIdx, false);
        }
    }

    @Override
    public void backward(Activations a, Tensor dx, boolean accumulate, Tensor dy, Tensor x) {
        if (dx == null) return;
        int nS = g.nS, nD = g.nD;
        if (!accumulate) be.fill(dx, 0f);
        if (nD > 0) {
            Tensor dyd = a.s1.view(0, nD, out), dxd = a.s2.view(0, nD, in);
            be.gatherRows(dyd, dy, g.dIdx);
            be.matmul(dxd, dyd, false, W, false, 1, 0);
            be.scatterRows(dx, dxd, g.dIdx, true);
        }
        if (!g.sliced) return;                                                          // cut: no gradient through the frozen path on sparse tokens
        if (WeightSlices.outputSliced(p)) {
            Tensor dyk = a.s3.view(0, nS, k), dxs = a.s2.view(0, nS, in);
            sp.gatherRowsCols(dyk, dy, g.sIdx, idx);                                    // (n_s,k)
            be.matmul(dxs, dyk, false, ws, false, 1, 0);
            be.scatterRows(dx, dxs, g.sIdx, true);
        } else {
            Tensor dys = a.s1.view(0, nS, out), dxk = a.s3.view(0, nS, k);
            be.gatherRows(dys, dy, g.sIdx);
            be.matmul(dxk, dys, false, ws, false, 1, 0);                                // (n_s,k)
            if (!accumulate) {
                sp.scatterRowsCols(dx, dxk, g.sIdx, idx);                               // those rows are still 0
            } else {
                Tensor dxs = a.s2.view(0, nS, in);
                be.fill(dxs, 0f);
                sp.scatterCols(dxs, dxk, idx, false);
                be.scatterRows(dx, dxs, g.sIdx, true);
            }
        }
    }
}
