package org.sparselora.engine.backend.ref;

import static org.sparselora.engine.backend.ref.ReferenceBackend.dsilu;
import static org.sparselora.engine.backend.ref.ReferenceBackend.silu;
import static org.sparselora.engine.backend.ref.ReferenceBackend.t;

import java.util.Arrays;
import org.sparselora.engine.backend.Tensor;

/**
 * The reference's SparseLoRA ops: selecting channels and slicing weights and activations by index
 * sets, as plain loops. Same signatures as the {@code Backend} ops they specify; {@link
 * ReferenceBackend} hands each of them here. Index tensors are I32; a kept set (channels, token
 * rows) holds distinct indices, so scatters never write one element twice.
 *
 * <p>Written as loops here rather than kept as the interface's defaults: the fused block ops
 * ({@code gatherRowsCols}, {@code scatterRowsCols}, {@code scatterAddRowsCols}, {@code fillCols}),
 * the low-rank score ops and the joined SwiGLU pair — their defaults compose primitives through
 * temporaries, which hides what they compute. Kept as the defaults (already plain host loops or a
 * row-by-row use of an op here): {@code topKRows}, {@code kvChannelScores},
 * {@code expandGroupChannels}, {@code expandGroupChannelsRows}, {@code padIndexSet}.
 */
public final class ReferenceSparseOps {

    private static int[] indices(Tensor idx, int limit, String op) {
        RefTensor I = t(idx);
        int[] out = new int[(int) I.numel()];
        for (int j = 0; j < out.length; j++) {
            out[j] = I.geti(j);
            if (out[j] < 0 || out[j] >= limit) throw new IllegalArgumentException(op + ": index " + out[j] + " at " + j + " outside [0," + limit + ")");
        }
        return out;
    }

    private static void shape(boolean ok, String op, Tensor out, Tensor src) {
        if (!ok) throw new IllegalArgumentException(op + ": out " + Tensor.describe(out) + " does not fit src " + Tensor.describe(src));
    }

    /** out[i,:] = src[idx[i],:]. out (k,C), src (R,C), idx (k). */
    public void gatherRows(Tensor out, Tensor src, Tensor idx) {
        RefTensor O = t(out), S = t(src);
        int C = S.cols();
        int[] rows = indices(idx, S.rows(), "gatherRows");
        shape(O.cols() == C && O.rows() == rows.length, "gatherRows", out, src);
        for (int i = 0; i < rows.length; i++)
            for (int c = 0; c < C; c++) O.set(i * C + c, S.get(rows[i] * C + c));
    }

    /** out[idx[i],:] (+)= src[i,:]; other rows untouched. out (R,C), src (k,C). */
    public void scatterRows(Tensor out, Tensor src, Tensor idx, boolean accumulate) {
        RefTensor O = t(out), S = t(src);
        int C = S.cols();
        int[] rows = indices(idx, O.rows(), "scatterRows");
        shape(O.cols() == C && S.rows() == rows.length, "scatterRows", out, src);
        for (int i = 0; i < rows.length; i++)
            for (int c = 0; c < C; c++) {
                int o = rows[i] * C + c;
                O.set(o, (accumulate ? O.get(o) : 0.0) + S.get(i * C + c));
            }
    }

    /** out[r,j] = src[r, idx[j]]. out (R,k), src (R,C). */
    public void gatherCols(Tensor out, Tensor src, Tensor idx) {
        RefTensor O = t(out), S = t(src);
        int R = S.rows(), C = S.cols();
        int[] cols = indices(idx, C, "gatherCols");
        int k = cols.length;
        shape(O.rows() == R && O.cols() == k, "gatherCols", out, src);
        for (int r = 0; r < R; r++)
            for (int j = 0; j < k; j++) O.set(r * k + j, S.get(r * C + cols[j]));
    }

    /** out[r, idx[j]] (+)= src[r,j]; other columns untouched. out (R,C), src (R,k). */
    public void scatterCols(Tensor out, Tensor src, Tensor idx, boolean accumulate) {
        RefTensor O = t(out), S = t(src);
        int R = O.rows(), C = O.cols();
        int[] cols = indices(idx, C, "scatterCols");
        int k = cols.length;
        shape(S.rows() == R && S.cols() == k, "scatterCols", out, src);
        for (int r = 0; r < R; r++)
            for (int j = 0; j < k; j++) {
                int o = r * C + cols[j];
                O.set(o, (accumulate ? O.get(o) : 0.0) + S.get(r * k + j));
            }
    }

    /** out[i,j] = src[rowIdx[i], colIdx[j]]. out (n,k), src (R,C). */
    public void gatherRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        RefTensor O = t(out), S = t(src);
        int C = S.cols();
        int[] rows = indices(rowIdx, S.rows(), "gatherRowsCols"), cols = indices(colIdx, C, "gatherRowsCols");
        int k = cols.length;
        shape(O.rows() == rows.length && O.cols() == k, "gatherRowsCols", out, src);
        for (int i = 0; i < rows.length; i++)
            for (int j = 0; j < k; j++) O.set(i * k + j, S.get(rows[i] * C + cols[j]));
    }

    /** Row rowIdx[i] of out = src[i,:] at the columns colIdx, 0 at the others; unnamed rows untouched. out (R,C), src (n,k). */
    public void scatterRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        RefTensor O = t(out), S = t(src);
        int C = O.cols();
        int[] rows = indices(rowIdx, O.rows(), "scatterRowsCols"), cols = indices(colIdx, C, "scatterRowsCols");
        int k = cols.length;
        shape(S.rows() == rows.length && S.cols() == k, "scatterRowsCols", out, src);
        for (int i = 0; i < rows.length; i++) {
            for (int c = 0; c < C; c++) O.set(rows[i] * C + c, 0);
            for (int j = 0; j < k; j++) O.set(rows[i] * C + cols[j], S.get(i * k + j));
        }
    }

    /** out[rowIdx[i], colIdx[j]] += src[i,j]; nothing else is touched. out (R,C), src (n,k). */
    public void scatterAddRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) {
        RefTensor O = t(out), S = t(src);
        int C = O.cols();
        int[] rows = indices(rowIdx, O.rows(), "scatterAddRowsCols"), cols = indices(colIdx, C, "scatterAddRowsCols");
        int k = cols.length;
        if (rows.length == 0) return;
        shape(S.rows() == rows.length && S.cols() == k, "scatterAddRowsCols", out, src);
        for (int i = 0; i < rows.length; i++)
            for (int j = 0; j < k; j++) {
                int o = rows[i] * C + cols[j];
                O.set(o, (double) O.get(o) + S.get(i * k + j));
            }
    }

    /** x[:, col0:] = value on every row. x (R,C). */
    public void fillCols(Tensor x, int col0, float value) {
        RefTensor X = t(x);
        int C = X.cols(), R = X.rows();
        if (col0 < 0 || col0 > C) throw new IllegalArgumentException("fillCols: column " + col0 + " outside rows of " + C + " (" + Tensor.describe(x) + ")");
        for (int r = 0; r < R; r++)
            for (int c = col0; c < C; c++) X.set(r * C + c, value);
    }

    /** out[c] = √(Σ_r x[r,c]²). out (C), x (R,C). */
    public void columnNorms(Tensor out, Tensor x) {
        RefTensor O = t(out), X = t(x);
        int R = X.rows(), C = X.cols();
        if (O.numel() != C) throw new IllegalArgumentException("columnNorms: out " + Tensor.describe(out) + " for x " + Tensor.describe(x));
        for (int c = 0; c < C; c++) {
            double ss = 0;
            for (int r = 0; r < R; r++) ss += (double) X.get(r * C + c) * X.get(r * C + c);
            O.set(c, Math.sqrt(ss));
        }
    }

    /** out[b,:] = mean over t ≥ keyStart[b] of x[b·T+t,:] (0 for a sequence of padding only). out (B,C), x (B·T,C), keyStart (B). */
    public void sequenceMean(Tensor out, Tensor x, Tensor keyStart, int batch, int seqLen) {
        RefTensor O = t(out), X = t(x), KS = t(keyStart);
        int C = X.cols();
        if (X.rows() != batch * seqLen || O.numel() != (long) batch * C || KS.numel() != batch)
            throw new IllegalArgumentException("sequenceMean: x " + Tensor.describe(x) + " out " + Tensor.describe(out) + " for B=" + batch + " T=" + seqLen);
        for (int b = 0; b < batch; b++) {
            int first = Math.max(0, KS.geti(b)), count = seqLen - first;
            for (int c = 0; c < C; c++) {
                double s = 0;
                for (int t = first; t < seqLen; t++) s += X.get((b * seqLen + t) * C + c);
                O.set(b * C + c, count <= 0 ? 0 : s / count);
            }
        }
    }

    /** idx = the indices of the k largest scores, ascending; ties go to the lower index, NaN ranks last. idx (k), scores (n). */
    public void topK(Tensor idx, Tensor scores, int k) {
        RefTensor I = t(idx), S = t(scores);
        int n = (int) S.numel();
        if (k < 0 || k > n || I.numel() != k) throw new IllegalArgumentException("topK: k=" + k + " of " + n + " scores into " + Tensor.describe(idx));
        Integer[] order = new Integer[n];
        for (int j = 0; j < n; j++) order[j] = j;
        Arrays.sort(order, (x, y) -> {
            float a = S.get(x), b = S.get(y);
            if (Float.isNaN(a) != Float.isNaN(b)) return Float.isNaN(a) ? 1 : -1;
            int c = Float.compare(b, a);
            return c != 0 ? c : Integer.compare(x, y);
        });
        int[] kept = new int[k];
        for (int j = 0; j < k; j++) kept[j] = order[j];
        Arrays.sort(kept);
        for (int j = 0; j < k; j++) I.seti(j, kept[j]);
    }

    /** outs[i][c] = ‖(ts[i]·qs[i])[:, c]‖ over the rows. ts[i] (n,r), qs[i] (r,M_i), outs[i] (M_i). */
    public void lowRankColumnNorms(Tensor[] outs, Tensor[] ts, Tensor[] qs) {
        if (outs.length != ts.length || outs.length != qs.length)
            throw new IllegalArgumentException("lowRankColumnNorms: " + outs.length + " outputs, " + ts.length + " t, " + qs.length + " Q");
        for (int i = 0; i < outs.length; i++) {
            RefTensor O = t(outs[i]), T = t(ts[i]), Q = t(qs[i]);
            int n = T.rows(), r = T.cols(), M = Q.cols();
            if (Q.rows() != r || O.numel() != M) throw new IllegalArgumentException("lowRankColumnNorms: t " + Tensor.describe(ts[i]) + " Q " + Tensor.describe(qs[i]) + " out " + Tensor.describe(outs[i]));
            for (int c = 0; c < M; c++) {
                double ss = 0;
                for (int row = 0; row < n; row++) {
                    double e = 0;
                    for (int p = 0; p < r; p++) e += (double) T.get(row * r + p) * Q.get(p * M + c);
                    ss += e * e;
                }
                O.set(c, Math.sqrt(ss));
            }
        }
    }

    /** out[c] = ‖(silu(tg·qg) ⊙ (tu·qu))[:, c]‖ over the rows. tg, tu (n,r); qg, qu (r,M); out (M). */
    public void lowRankSwigluColumnNorms(Tensor out, Tensor tg, Tensor qg, Tensor tu, Tensor qu) {
        RefTensor O = t(out), TG = t(tg), QG = t(qg), TU = t(tu), QU = t(qu);
        int n = TG.rows(), r = TG.cols(), M = QG.cols();
        if (QG.rows() != r || TU.rows() != n || TU.cols() != r || QU.rows() != r || QU.cols() != M || O.numel() != M)
            throw new IllegalArgumentException("lowRankSwigluColumnNorms: tg " + Tensor.describe(tg) + " qg " + Tensor.describe(qg)
                    + " tu " + Tensor.describe(tu) + " qu " + Tensor.describe(qu) + " out " + Tensor.describe(out));
        for (int c = 0; c < M; c++) {
            double ss = 0;
            for (int row = 0; row < n; row++) {
                double g = 0, u = 0;
                for (int p = 0; p < r; p++) {
                    g += (double) TG.get(row * r + p) * QG.get(p * M + c);
                    u += (double) TU.get(row * r + p) * QU.get(p * M + c);
                }
                double a = silu(g) * u;
                ss += a * a;
            }
            O.set(c, Math.sqrt(ss));
        }
    }

    /**
     * SwiGLU over a token split, joining both groups' frozen outputs (the spec of {@code
     * Backend.swigluJoin}). Dense rows r = addRows[i]: g[r] += addG[i], u[r] += addU[i], then
     * h[r] = silu(g[r])·u[r] and hAdd[i] = h[r]. Sparse rows r = plainRows[i]: at each kept column
     * c = keptCols[j], g[r,c] += keptG[i,j], u[r,c] += keptU[i,j]; then h[r] = silu(g[r])·u[r] on every
     * column and hKept[i,j] = h[r,c]. h is computed from g and u as stored. h, g, u (R,C);
     * addG, addU, hAdd (nAdd,C) (hAdd may be addG); keptG, keptU, hKept (nPlain,k); any set may be null.
     */
    public void swigluJoin(Tensor h, Tensor g, Tensor u, Tensor addG, Tensor addU, Tensor addRows, Tensor hAdd,
                           Tensor plainRows, Tensor keptG, Tensor keptU, Tensor keptCols, Tensor hKept) {
        RefTensor H = t(h), G = t(g), U = t(u);
        int R = G.rows(), C = G.cols();
        int[] add = addRows == null ? new int[0] : indices(addRows, R, "swigluJoin"), plain = plainRows == null ? new int[0] : indices(plainRows, R, "swigluJoin");
        int[] kept = keptCols == null ? new int[0] : indices(keptCols, C, "swigluJoin");
        int k = kept.length;
        for (int i = 0; i < add.length; i++) {
            RefTensor AG = t(addG), AU = t(addU), HA = t(hAdd);
            int r = add[i];
            for (int c = 0; c < C; c++) {
                G.set(r * C + c, (double) G.get(r * C + c) + AG.get(i * C + c));
                U.set(r * C + c, (double) U.get(r * C + c) + AU.get(i * C + c));
                H.set(r * C + c, silu(G.get(r * C + c)) * U.get(r * C + c));
                HA.set(i * C + c, H.get(r * C + c)); // addG[i,c] was read above: hAdd may be addG
            }
        }
        for (int i = 0; i < plain.length; i++) {
            int r = plain[i];
            for (int j = 0; j < k; j++) {
                int o = r * C + kept[j];
                G.set(o, (double) G.get(o) + t(keptG).get(i * k + j));
                U.set(o, (double) U.get(o) + t(keptU).get(i * k + j));
            }
            for (int c = 0; c < C; c++) H.set(r * C + c, silu(G.get(r * C + c)) * U.get(r * C + c));
            if (hKept != null) for (int j = 0; j < k; j++) t(hKept).set(i * k + j, H.get(r * C + kept[j]));
        }
    }

    /**
     * Backward of {@link #swigluJoin}: for dense rows r = addRows[i], d = dh[r] + addDh[i]; for sparse
     * rows r = plainRows[i], d = dh[r] plus keptDh[i,j] at each kept column keptCols[j]; then
     * dg[r] = d·u·silu'(g), du[r] = d·silu(g), with dgAdd[i] = dg[r], duAdd[i] = du[r] and, at the kept
     * columns, dgKept[i,j] = dg[r,c], duKept[i,j] = du[r,c]. dh is only read. dg, du, dh, g, u (R,C);
     * addDh, dgAdd, duAdd (nAdd,C); keptDh, dgKept, duKept (nPlain,k); keptDh and dgKept/duKept may be null.
     */
    public void swigluBackwardJoin(Tensor dg, Tensor du, Tensor dh, Tensor g, Tensor u, Tensor addDh, Tensor addRows,
                                   Tensor dgAdd, Tensor duAdd, Tensor plainRows, Tensor keptDh, Tensor keptCols,
                                   Tensor dgKept, Tensor duKept) {
        RefTensor DG = t(dg), DU = t(du), DH = t(dh), G = t(g), U = t(u);
        int R = G.rows(), C = G.cols();
        int[] add = addRows == null ? new int[0] : indices(addRows, R, "swigluBackwardJoin");
        int[] plain = plainRows == null ? new int[0] : indices(plainRows, R, "swigluBackwardJoin");
        int[] kept = keptCols == null ? new int[0] : indices(keptCols, C, "swigluBackwardJoin");
        int k = kept.length;
        double[] d = new double[C];
        for (int pass = 0; pass < 2; pass++) {
            int[] rows = pass == 0 ? add : plain;
            for (int i = 0; i < rows.length; i++) {
                int r = rows[i];
                for (int c = 0; c < C; c++) d[c] = DH.get(r * C + c) + (pass == 0 ? t(addDh).get(i * C + c) : 0.0);
                if (pass == 1 && keptDh != null) for (int j = 0; j < k; j++) d[kept[j]] += t(keptDh).get(i * k + j);
                for (int c = 0; c < C; c++) {
                    double gv = G.get(r * C + c);
                    DG.set(r * C + c, d[c] * U.get(r * C + c) * dsilu(gv));
                    DU.set(r * C + c, d[c] * silu(gv));
                }
                if (pass == 0) {
                    for (int c = 0; c < C; c++) {
                        t(dgAdd).set(i * C + c, DG.get(r * C + c));
                        t(duAdd).set(i * C + c, DU.get(r * C + c));
                    }
                } else if (dgKept != null) {
                    for (int j = 0; j < k; j++) {
                        t(dgKept).set(i * k + j, DG.get(r * C + kept[j]));
                        t(duKept).set(i * k + j, DU.get(r * C + kept[j]));
                    }
                }
            }
        }
    }
}
