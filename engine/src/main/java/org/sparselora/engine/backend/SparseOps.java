package org.sparselora.engine.backend;

import java.util.function.ObjIntConsumer;

/**
 * SparseLoRA's operations on one device, beside the {@link Backend} whose tensors they work on: slicing weights and
 * activations by kept channels and token groups, the predictor's low-rank scores, the channel
 * selection (top-k, GQA expansion) and the fused re-joins of the sparse MLP. Only a sparse step
 * needs them; it gets them once from {@link Backend#sparse()}. Same conventions as {@link Backend}:
 * outputs first, shapes in comments, defaults built from primitives as the reference semantics, a
 * device overriding them with fused kernels.
 */
public interface SparseOps {

    /** The backend these ops run on: their defaults are built from its primitives. */
    Backend backend();

    // ------------------------------------------------------------------ slicing

    /** out[:,i] = src[:,idx[i]]. out (R,k), src (R,C). */
    void gatherCols(Tensor out, Tensor src, Tensor idx);

    /** out[:,idx[i]] (+)= src[:,i]; columns not named are left alone. out (R,C), src (R,k). */
    void scatterCols(Tensor out, Tensor src, Tensor idx, boolean accumulate);

    /**
     * out[i,j] = src[rowIdx[i], colIdx[j]]: a block of a matrix in one pass (the sparse tokens' kept
     * channels). out (k,m), src (R,C). Default: gatherRows into a temporary, then gatherCols.
     */
    default void gatherRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        Backend be = backend();
        try (Tensor t = be.empty(src.dtype(), (int) rowIdx.numel(), src.dim(1))) {
            be.gatherRows(t, src, rowIdx);
            gatherCols(out, t, colIdx);
        }
    }

    /**
     * Row rowIdx[i] of out becomes src[i,:] placed at the columns colIdx and 0 elsewhere; rows not
     * named are left alone. out (R,C), src (k,m). Re-joins the sparse tokens' sliced outputs into the
     * full-width activation in one pass. Default: fill a temporary with 0, scatterCols, scatterRows.
     */
    default void scatterRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        Backend be = backend();
        try (Tensor t = be.empty(out.dtype(), src.dim(0), out.dim(1))) {
            be.fill(t, 0f);
            scatterCols(t, src, colIdx, false);
            be.scatterRows(out, t, rowIdx, false);
        }
    }

    /** out[c] = sqrt(Σ_r x[r,c]²). out (C) F32, x (R,C). */
    void columnNorms(Tensor out, Tensor x);

    /**
     * Mean over each sequence's non-padding tokens: out[b,:] = mean_{t ≥ keyStart[b]} x[b·T+t,:].
     * out (B,C), x (B·T, C), keyStart (B) I32.
     */
    void sequenceMean(Tensor out, Tensor x, Tensor keyStart, int batch, int seqLen);

    /**
     * The k largest scores' indices, written in ascending index order; ties go to the lower index,
     * so the choice is deterministic. idx (k) I32, scores (n) F32. Runs on the device (no host trip).
     */
    void topK(Tensor idx, Tensor scores, int k);

    /**
     * {@link #topK} on every row: idx (m,k) I32 row i = the k largest of scores (m,n) F32 row i, with
     * topK's order and tie rule. Lets a device select several score vectors in one launch. Default:
     * topK per row.
     */
    default void topKRows(Tensor idx, Tensor scores, int k) {
        int m = scores.dim(0), n = scores.dim(1);
        if (idx.numel() != (long) m * k)
            throw new IllegalArgumentException("topKRows: idx " + Tensor.describe(idx) + " for " + m + " rows of k = " + k);
        for (int i = 0; i < m; i++) topK(idx.view((long) i * k, k), scores.view((long) i * n, n), k);
    }

    /**
     * The SVD predictor's per-channel norms straight from its low-rank factors, several projections at
     * once: for each i, {@code outs[i][c] = ‖(ts[i]·qs[i])[:, c]‖} over the rows, where ts[i] (n,r) is
     * x·P of projection i and qs[i] (r,M_i) its second factor; outs[i] (M_i) F32. A device backend
     * computes this without writing the (n, M_i) estimates. Default: the estimate in the compute type
     * ({@link Backend#matmul}), then {@link #columnNorms}.
     */
    default void lowRankColumnNorms(Tensor[] outs, Tensor[] ts, Tensor[] qs) {
        Backend be = backend();
        if (outs.length != ts.length || outs.length != qs.length)
            throw new IllegalArgumentException("lowRankColumnNorms: " + outs.length + " outputs, " + ts.length + " t, " + qs.length + " Q");
        for (int i = 0; i < outs.length; i++) {
            try (Tensor e = be.empty(be.computeType(), ts[i].dim(0), qs[i].dim(1))) {
                be.matmul(e, ts[i], false, qs[i], false, 1f, 0f);
                columnNorms(outs[i], e);
            }
        }
    }

    /**
     * The MLP form of {@link #lowRankColumnNorms}: {@code out[c] = ‖(silu(tg·qg) ⊙ (tu·qu))[:, c]‖} over
     * the rows — the score of intermediate channel c from the gate and up estimates. out (M) F32,
     * tg, tu (n,r), qg, qu (r,M). Default: both estimates in the compute type, {@link Backend#swiglu},
     * {@link #columnNorms}.
     */
    default void lowRankSwigluColumnNorms(Tensor out, Tensor tg, Tensor qg, Tensor tu, Tensor qu) {
        Backend be = backend();
        int n = tg.dim(0), m = qg.dim(1);
        try (Tensor gate = be.empty(be.computeType(), n, m); Tensor up = be.empty(be.computeType(), n, m); Tensor act = be.empty(be.computeType(), n, m)) {
            be.matmul(gate, tg, false, qg, false, 1f, 0f);
            be.matmul(up, tu, false, qu, false, 1f, 0f);
            be.swiglu(act, gate, up);
            columnNorms(out, act);
        }
    }

    /**
     * GQA-correct Q/K channel scores (SparseLoRA "QK-norm"): for each KV channel (g, d),
     * {@code scores[g·D+d] = kNorms[g·D+d] · mean_{j<G} qNorms[(g·G+j)·D+d]}, G = Hq/Hkv query heads
     * per KV head (HF head-contiguous layout, query head h reads KV head h/G).
     * scores (Hkv·D) F32, qNorms (Hq·D) F32, kNorms (Hkv·D) F32. The default goes through the host;
     * a device backend may override it with a kernel.
     */
    default void kvChannelScores(Tensor scores, Tensor qNorms, Tensor kNorms, int kvHeads, int groupSize, int headDim) {
        Backend be = backend();
        float[] qn = be.toFloats(qNorms), kn = be.toFloats(kNorms);
        float[] s = new float[kvHeads * headDim];
        for (int g = 0; g < kvHeads; g++)
            for (int d = 0; d < headDim; d++) {
                double sum = 0;
                for (int j = 0; j < groupSize; j++) sum += qn[(g * groupSize + j) * headDim + d];
                s[g * headDim + d] = (float) (kn[g * headDim + d] * (sum / groupSize));
            }
        be.copyFromHost(scores, s);
    }

    /**
     * Expands kept KV channels to the query-side channels of their group: for each kept (g, d)
     * (ascending indices g·D+d in {@code kvIdx}), the channels (h, d) = h·D+d for every query head
     * h = g·G+j of group g. Output is ascending: out (k·G) I32, kvIdx (k) I32. Used for the kept Q
     * channels (from K's) and the kept o_proj input columns (from V's). The default goes through the
     * host; a device backend may override it.
     */
    default void expandGroupChannels(Tensor out, Tensor kvIdx, int groupSize, int headDim) {
        Backend be = backend();
        int[] kv = be.toInts(kvIdx);
        int[] o = new int[kv.length * groupSize];
        int n = 0;
        for (int start = 0; start < kv.length; ) {
            int g = kv[start] / headDim, end = start;
            while (end < kv.length && kv[end] / headDim == g) end++;
            for (int j = 0; j < groupSize; j++)
                for (int i = start; i < end; i++) o[n++] = (g * groupSize + j) * headDim + kv[i] % headDim;
            start = end;
        }
        be.copyFromHost(out, o);
    }

    /**
     * {@link #expandGroupChannels} on every row: out (m, k·G) row i = the expansion of kvIdx (m, k)
     * row i (each row ascending). The attention selection expands its kept K channels (to the kept Q
     * channels) and its kept V channels (to the kept o_proj input columns) together, which a device
     * does in one launch. Default: expandGroupChannels per row.
     */
    default void expandGroupChannelsRows(Tensor out, Tensor kvIdx, int groupSize, int headDim) {
        if (kvIdx.rank() != 2) throw new IllegalArgumentException("expandGroupChannelsRows: kvIdx must be (rows, k), got " + Tensor.describe(kvIdx));
        int m = kvIdx.dim(0), k = kvIdx.dim(1);
        if (out.numel() != (long) m * k * groupSize)
            throw new IllegalArgumentException("expandGroupChannelsRows: out " + Tensor.describe(out) + " for " + m + " rows of " + k + " × " + groupSize);
        for (int i = 0; i < m; i++)
            expandGroupChannels(out.view((long) i * k * groupSize, k * groupSize), kvIdx.view((long) i * k, k), groupSize, headDim);
    }

    /**
     * Pads an index set to a wider one of distinct indices: out[:k] = idx, out[k:] = the smallest
     * values of [0, n) that idx does not hold, ascending. out (kp) I32, idx (k) I32, k ≤ kp ≤ n, idx
     * distinct values in [0, n). The sparse MLP pads its kept-channel count to a multiple of 8 this way
     * (with zero weights on the extra channels) so the kept slices' GEMMs have 16-byte aligned
     * leading dimensions. The default goes through the host; a device backend overrides it.
     */
    default void padIndexSet(Tensor out, Tensor idx, int n) {
        Backend be = backend();
        int[] kept = be.toInts(idx);
        int kp = (int) out.numel(), k = kept.length;
        if (kp < k || kp > n) throw new IllegalArgumentException("padIndexSet: " + k + " indices cannot be padded to " + kp + " of [0, " + n + ")");
        boolean[] used = new boolean[n];
        int[] o = java.util.Arrays.copyOf(kept, kp);
        for (int c : kept) {
            if (c < 0 || c >= n || used[c]) throw new IllegalArgumentException("padIndexSet: index " + c + " is outside [0, " + n + ") or repeated");
            used[c] = true;
        }
        for (int c = 0, j = k; j < kp; c++) if (!used[c]) o[j++] = c;
        be.copyFromHost(out, o);
    }

    /**
     * t[:, col0:] = value for every row. t (R,C). Zeroes the padding columns of a kept-column weight
     * slice. Default: a filled temporary scattered into those columns.
     */
    default void fillCols(Tensor t, int col0, float value) {
        Backend be = backend();
        int C = t.dim(-1), R = (int) (t.numel() / Math.max(1, C)), w = C - col0;
        if (col0 < 0 || col0 > C) throw new IllegalArgumentException("fillCols: column " + col0 + " outside rows of " + C + " (" + Tensor.describe(t) + ")");
        if (w == 0 || R == 0) return;
        int[] cols = new int[w];
        for (int j = 0; j < w; j++) cols[j] = col0 + j;
        try (Tensor tmp = be.empty(t.dtype(), R, w); Tensor idx = be.fromInts(cols, w)) {
            be.fill(tmp, value);
            scatterCols(t.reshape(R, C), tmp, idx, false);
        }
    }
    /**
     * out[rowIdx[i], colIdx[j]] += src[i,j]: adds a sparse token group's kept-channel outputs into a
     * full-width activation, touching only those elements. out (R,C), src (n,k); rowIdx (n) and colIdx
     * (k) I32 index sets. Default: the named rows gathered, scatterCols with accumulation, scattered back.
     */
    default void scatterAddRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        Backend be = backend();
        int n = (int) rowIdx.numel(), C = out.dim(-1);
        if (n == 0) return;
        try (Tensor t = be.empty(out.dtype(), n, C)) {
            be.gatherRows(t, out, rowIdx);
            scatterCols(t, src, colIdx, true);
            be.scatterRows(out, t, rowIdx, false);
        }
    }

    /**
     * SwiGLU over the rows of a token split, with both groups' frozen outputs joined in the same pass.
     * For row r = addRows[i] (the dense tokens): g[r] += addG[i], u[r] += addU[i], h[r] = silu(g[r])·u[r],
     * hAdd[i] = h[r]. For r = plainRows[i] (the sparse tokens), at each kept column c = keptCols[j]:
     * g[r,c] += keptG[i,j], u[r,c] += keptU[i,j]; then h[r] = silu(g[r])·u[r] on every column and
     * hKept[i,j] = h[r,c]. g and u are written back as stored; rows named by neither set are left alone.
     * h, g, u (R,C); addG, addU, hAdd (nAdd,C), hAdd may be addG (each element is read before it is
     * written); keptG, keptU, hKept (nPlain,k). addRows, plainRows, keptCols (k) may be null (none);
     * hKept may be null (not gathered). Default: accumulating scatters and gathered swiglu per group.
     */
    default void swigluJoin(Tensor h, Tensor g, Tensor u, Tensor addG, Tensor addU, Tensor addRows, Tensor hAdd,
                            Tensor plainRows, Tensor keptG, Tensor keptU, Tensor keptCols, Tensor hKept) {
        Backend be = backend();
        int C = g.dim(-1);
        forEachJoinGroup(addRows, plainRows, (rows, pass) -> {
            int n = (int) rows.numel();
            try (Tensor tg = be.empty(g.dtype(), n, C); Tensor tu = be.empty(u.dtype(), n, C); Tensor th = be.empty(h.dtype(), n, C)) {
                be.gatherRows(tg, g, rows);
                be.gatherRows(tu, u, rows);
                if (pass == 0) {
                    be.axpy(tg, 1f, addG);
                    be.axpy(tu, 1f, addU);
                } else if (keptCols != null) {
                    scatterCols(tg, keptG, keptCols, true);
                    scatterCols(tu, keptU, keptCols, true);
                }
                be.scatterRows(g, tg, rows, false);
                be.scatterRows(u, tu, rows, false);
                be.swiglu(th, tg, tu);
                be.scatterRows(h, th, rows, false);
                if (pass == 0) be.copy(hAdd, th);
                else if (keptCols != null && hKept != null) gatherCols(hKept, th, keptCols);
            }
        });
    }

    /**
     * Backward of {@link #swigluJoin}, with both groups' frozen input gradients joined: for row
     * r = addRows[i], d = dh[r] + addDh[i]; for r = plainRows[i], d = dh[r] plus keptDh[i,j] at each
     * kept column keptCols[j]; then (dg[r], du[r]) = swigluBackward(d, g[r], u[r]), with dgAdd[i] = dg[r],
     * duAdd[i] = du[r] for the add rows and dgKept[i,j] = dg[r,c], duKept[i,j] = du[r,c] at the kept
     * columns of the plain rows (gathered for the frozen GEMMs). dh is only read. dg, du, dh, g, u
     * (R,C); addDh, dgAdd, duAdd (nAdd,C); keptDh, dgKept, duKept (nPlain,k); none aliasing another.
     * keptDh and dgKept/duKept may be null (nothing added / nothing gathered). Default: gathered rows
     * per group.
     */
    default void swigluBackwardJoin(Tensor dg, Tensor du, Tensor dh, Tensor g, Tensor u, Tensor addDh, Tensor addRows,
                                    Tensor dgAdd, Tensor duAdd, Tensor plainRows, Tensor keptDh, Tensor keptCols,
                                    Tensor dgKept, Tensor duKept) {
        Backend be = backend();
        int C = g.dim(-1);
        forEachJoinGroup(addRows, plainRows, (rows, pass) -> {
            int n = (int) rows.numel();
            try (Tensor td = be.empty(dh.dtype(), n, C); Tensor tg = be.empty(g.dtype(), n, C); Tensor tu = be.empty(u.dtype(), n, C);
                 Tensor tdg = be.empty(dg.dtype(), n, C); Tensor tdu = be.empty(du.dtype(), n, C)) {
                be.gatherRows(td, dh, rows);
                if (pass == 0) be.axpy(td, 1f, addDh);
                else if (keptCols != null && keptDh != null) scatterCols(td, keptDh, keptCols, true);
                be.gatherRows(tg, g, rows);
                be.gatherRows(tu, u, rows);
                be.swigluBackward(tdg, tdu, td, tg, tu);
                be.scatterRows(dg, tdg, rows, false);
                be.scatterRows(du, tdu, rows, false);
                if (pass == 0) {
                    be.copy(dgAdd, tdg);
                    be.copy(duAdd, tdu);
                } else if (keptCols != null && dgKept != null) {
                    gatherCols(dgKept, tdg, keptCols);
                    gatherCols(duKept, tdu, keptCols);
                }
            }
        });
    }

    /**
     * The two row groups of a joined swiglu default, in order: group.accept(addRows, 0), then
     * group.accept(plainRows, 1), each only when its set is present and non-empty.
     */
    private static void forEachJoinGroup(Tensor addRows, Tensor plainRows, ObjIntConsumer<Tensor> group) {
        for (int pass = 0; pass < 2; pass++) {
            Tensor rows = pass == 0 ? addRows : plainRows;
            if (rows != null && rows.numel() > 0) group.accept(rows, pass);
        }
    }

    // ------------------------------------------------------------------ selection inputs

    /**
     * Zeroes the padding rows of x (B·T, C): row b·T + t for t &lt; keyStart[b] (keyStart (B) I32 on
     * the device); other rows are untouched. Padding rows never reach a real token (attention masks
     * their keys, their targets are ignored), so a recorded sparse step zeroes them in the
     * selection's input and scores every row: one shape whatever the padding. Default: through the
     * host (reads keyStart); a device backend overrides it with one launch.
     */
    default void maskPaddingRows(Tensor x, Tensor keyStart, int batch, int seqLen) {
        Backend be = backend();
        if (keyStart.numel() != batch) throw new IllegalArgumentException("maskPaddingRows: keyStart " + Tensor.describe(keyStart) + " for batch " + batch);
        long rows = (long) batch * seqLen;
        if (rows == 0) return;
        if (x.numel() % rows != 0) throw new IllegalArgumentException("maskPaddingRows: x " + Tensor.describe(x) + " is not " + rows + " rows");
        int C = (int) (x.numel() / rows);
        int[] ks = be.toInts(keyStart);
        for (int b = 0; b < batch; b++) {
            int pad = Math.max(0, Math.min(seqLen, ks[b]));
            if (pad > 0) be.fill(x.view((long) b * seqLen * C, pad * C), 0f);
        }
    }}
