package org.sparselora.engine.backend.ref;

import org.sparselora.engine.backend.Tensor;

/**
 * The reference's attention, in float64 on host arrays: causal grouped-query attention with left
 * padding and an optional sliding window. Query i of sequence b sees key j iff
 * {@code keyStart[b] ≤ j ≤ i} and, with a window w > 0, {@code i − j < w}. Query head h reads KV
 * head {@code h / (H/Hkv)}. A query with no visible key (a padding position) outputs zeros and its
 * log-sum-exp is −∞. Tests use these functions directly where they need float64 end to end
 * (finite differences).
 *
 * <p>Layouts: q, out (B·T, H·D); k, v (B·T, Hkv·D); lse (B, H, T); row-major, head-contiguous.
 */
public final class ReferenceAttention {
    private ReferenceAttention() {}

    /** The sizes of one attention call. keyStart (B): the first real token of each left-padded sequence. */
    public record Shape(int batch, int seqLen, int heads, int kvHeads, int headDim, int[] keyStart, double scale, int window) {
        public Shape {
            if (kvHeads <= 0 || heads % kvHeads != 0) throw new IllegalArgumentException("attention: " + heads + " heads not a multiple of " + kvHeads + " kv heads");
            if (keyStart.length != batch) throw new IllegalArgumentException("attention: " + keyStart.length + " key starts for batch " + batch);
        }

        int group() { return heads / kvHeads; }

        /** Whether query i may attend to key j in sequence b. */
        boolean visible(int b, int i, int j) {
            return keyStart[b] <= j && j <= i && (window <= 0 || i - j < window);
        }

        void check(Tensor out, Tensor q, Tensor k, Tensor v) {
            long n = (long) batch * seqLen;
            if (q.numel() != n * heads * headDim || out.numel() != q.numel() || k.numel() != n * kvHeads * headDim || v.numel() != k.numel())
                throw new IllegalArgumentException("attention: q " + Tensor.describe(q) + " k " + Tensor.describe(k) + " v " + Tensor.describe(v)
                        + " out " + Tensor.describe(out) + " for B=" + batch + " T=" + seqLen + " H=" + heads + " Hkv=" + kvHeads + " D=" + headDim);
        }
    }

    /** q·k of query row i, head h against key row j of kv head g, times scale. */
    private static double score(Shape s, double[] q, double[] k, int b, int h, int i, int j) {
        int D = s.headDim(), qo = ((b * s.seqLen() + i) * s.heads() + h) * D, ko = ((b * s.seqLen() + j) * s.kvHeads() + h / s.group()) * D;
        double x = 0;
        for (int e = 0; e < D; e++) x += q[qo + e] * k[ko + e];
        return x * s.scale();
    }

    /** P[j] = softmax over the visible keys of query i, head h (0 for keys it does not see); returns the log-sum-exp. */
    private static double softmax(Shape s, double[] q, double[] k, int b, int h, int i, double[] p) {
        double max = Double.NEGATIVE_INFINITY, sum = 0;
        for (int j = 0; j < s.seqLen(); j++) if (s.visible(b, i, j)) max = Math.max(max, score(s, q, k, b, h, i, j));
        for (int j = 0; j < s.seqLen(); j++) {
            p[j] = s.visible(b, i, j) ? Math.exp(score(s, q, k, b, h, i, j) - max) : 0;
            sum += p[j];
        }
        for (int j = 0; j < s.seqLen(); j++) p[j] /= sum;
        return max + Math.log(sum);
    }

    /**
     * out[b,i,h,:] = Σ_j P_ij·v[b,j,g,:] with P = softmax_j(scale·q_i·k_j) over the visible keys.
     * Returns out (B·T, H·D); lse (B, H, T) receives each row's log-sum-exp when not null.
     */
    public static double[] forward(Shape s, double[] q, double[] k, double[] v, double[] lse) {
        int T = s.seqLen(), H = s.heads(), D = s.headDim(), Hkv = s.kvHeads();
        double[] out = new double[s.batch() * T * H * D], p = new double[T];
        for (int b = 0; b < s.batch(); b++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < T; i++) {
                    boolean any = false;
                    for (int j = 0; j < T; j++) any |= s.visible(b, i, j);
                    if (!any) { // a padding query: zeros (already), lse −∞
                        if (lse != null) lse[(b * H + h) * T + i] = Double.NEGATIVE_INFINITY;
                        continue;
                    }
                    double l = softmax(s, q, k, b, h, i, p);
                    if (lse != null) lse[(b * H + h) * T + i] = l;
                    int oo = ((b * T + i) * H + h) * D;
                    for (int j = 0; j < T; j++) {
                        if (p[j] == 0) continue;
                        int vo = ((b * T + j) * Hkv + h / s.group()) * D;
                        for (int e = 0; e < D; e++) out[oo + e] += p[j] * v[vo + e];
                    }
                }
        return out;
    }

    /**
     * Gradients of {@link #forward} given dout (B·T, H·D): with dP_ij = dout_i·v_j and
     * dS_ij = P_ij·(dP_ij − Σ_j' P_ij'·dP_ij'), dq_i = scale·Σ_j dS_ij·k_j, dk_j = scale·Σ_i dS_ij·q_i
     * (summed over the group's query heads), dv_j = Σ_i P_ij·dout_i. Returns {dq, dk, dv}.
     */
    public static double[][] backward(Shape s, double[] dout, double[] q, double[] k, double[] v) {
        int T = s.seqLen(), H = s.heads(), D = s.headDim(), Hkv = s.kvHeads();
        double[] dq = new double[q.length], dk = new double[k.length], dv = new double[v.length];
        double[] p = new double[T], dp = new double[T];
        for (int b = 0; b < s.batch(); b++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < T; i++) {
                    boolean any = false;
                    for (int j = 0; j < T; j++) any |= s.visible(b, i, j);
                    if (!any) continue;
                    softmax(s, q, k, b, h, i, p);
                    int qo = ((b * T + i) * H + h) * D;
                    double rowDot = 0;
                    for (int j = 0; j < T; j++) {
                        if (p[j] == 0) { dp[j] = 0; continue; }
                        int vo = ((b * T + j) * Hkv + h / s.group()) * D;
                        double x = 0;
                        for (int e = 0; e < D; e++) x += dout[qo + e] * v[vo + e];
                        dp[j] = x;
                        rowDot += p[j] * x;
                    }
                    for (int j = 0; j < T; j++) {
                        if (p[j] == 0) continue;
                        int ko = ((b * T + j) * Hkv + h / s.group()) * D;
                        double ds = p[j] * (dp[j] - rowDot) * s.scale();
                        for (int e = 0; e < D; e++) {
                            dq[qo + e] += ds * k[ko + e];
                            dk[ko + e] += ds * q[qo + e];
                            dv[ko + e] += p[j] * dout[qo + e];
                        }
                    }
                }
        return new double[][] {dq, dk, dv};
    }

    /**
     * Attention of n new tokens of one sequence at positions [pos0, pos0+n) against a KV cache:
     * q (n, H·D); kCache, vCache (maxT, Hkv·D) hold positions [0, pos0+n). The token at position
     * p sees keys [max(0, p − w + 1), p] (all of [0, p] when w ≤ 0). Returns out (n, H·D).
     */
    public static double[] cached(double[] q, double[] kCache, double[] vCache, int n, int pos0,
                                  int heads, int kvHeads, int headDim, double scale, int window) {
        int D = headDim, group = heads / kvHeads;
        double[] out = new double[n * heads * D];
        for (int t = 0; t < n; t++)
            for (int h = 0; h < heads; h++) {
                int last = pos0 + t, first = window > 0 ? Math.max(0, last - window + 1) : 0, g = h / group;
                int qo = (t * heads + h) * D;
                double[] sc = new double[last + 1];
                double max = Double.NEGATIVE_INFINITY, sum = 0;
                for (int j = first; j <= last; j++) {
                    double x = 0;
                    for (int e = 0; e < D; e++) x += q[qo + e] * kCache[(j * kvHeads + g) * D + e];
                    sc[j] = x * scale;
                    max = Math.max(max, sc[j]);
                }
                for (int j = first; j <= last; j++) sum += Math.exp(sc[j] - max);
                for (int j = first; j <= last; j++) {
                    double w = Math.exp(sc[j] - max) / sum;
                    for (int e = 0; e < D; e++) out[qo + e] += w * vCache[(j * kvHeads + g) * D + e];
                }
            }
        return out;
    }
    /**
     * Attention of n new tokens of each of B left-padded sequences against a time-major KV cache
     * (batched generation): kCache, vCache (maxT, B, Hkv·D) hold slots [0, pos0+n), slot j of
     * sequence b in row j·B + b; q (n·B, H·D), token t of sequence b in row t·B + b, at slot
     * p = pos0 + t. It sees keys j with keyStart[b] ≤ j ≤ p (and p − j < w when w > 0); with none
     * (a padding slot) it outputs zeros. Returns out (n·B, H·D).
     */
    public static double[] cachedBatch(double[] q, double[] kCache, double[] vCache, int[] keyStart, int batch, int n, int pos0,
                                       int heads, int kvHeads, int headDim, double scale, int window) {
        int B = batch, D = headDim, group = heads / kvHeads;
        double[] out = new double[n * B * heads * D];
        for (int t = 0; t < n; t++)
            for (int b = 0; b < B; b++)
                for (int h = 0; h < heads; h++) {
                    int p = pos0 + t, g = h / group, qo = ((t * B + b) * heads + h) * D;
                    double[] sc = new double[p + 1];
                    boolean[] sees = new boolean[p + 1];
                    double max = Double.NEGATIVE_INFINITY, sum = 0;
                    for (int j = 0; j <= p; j++) {
                        sees[j] = keyStart[b] <= j && (window <= 0 || p - j < window);
                        if (!sees[j]) continue;
                        double x = 0;
                        for (int e = 0; e < D; e++) x += q[qo + e] * kCache[((j * B + b) * kvHeads + g) * D + e];
                        sc[j] = x * scale;
                        max = Math.max(max, sc[j]);
                    }
                    for (int j = 0; j <= p; j++) if (sees[j]) sum += Math.exp(sc[j] - max);
                    for (int j = 0; j <= p; j++) {
                        if (!sees[j]) continue;
                        double w = Math.exp(sc[j] - max) / sum;
                        for (int e = 0; e < D; e++) out[qo + e] += w * vCache[((j * B + b) * kvHeads + g) * D + e];
                    }
                }
        return out;
    }
}
