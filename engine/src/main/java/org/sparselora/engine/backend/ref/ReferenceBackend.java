package org.sparselora.engine.backend.ref;

import java.util.List;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.SparseOps;
import org.sparselora.engine.backend.CounterRng;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.TensorChecks;
import org.sparselora.engine.backend.WindowedAttention;

/**
 * The readable specification of every {@link Backend} op: one plain loop per op, one thread, sums
 * in float64, no tiling, no vectors. It is the truth that {@code CpuBackend} and {@code GpuBackend}
 * are tested against; it is far too slow to train with beyond toy sizes.
 *
 * <p>Conventions (llm.c style): outputs first, then inputs; gradients are prefixed {@code d}; shapes
 * in comments, N = B·T flattened tokens, C = channels. A tensor of dtype BF16/F16 holds values
 * rounded to that precision on every write ({@link RefTensor#set}); arithmetic is float64 throughout
 * and rounds once, on the store.
 *
 * <p>This file holds the core ops: memory, dense algebra, the layers, attention (whose loops live in
 * {@link ReferenceAttention}), loss, dropout and the optimizer. The SparseLoRA selection and
 * slicing ops are in {@link ReferenceSparseOps}; this class hands each of them over in one line.
 * Interface defaults that are already plain compositions or host loops are kept as the spec
 * ({@code addRmsNorm}, {@code addRmsNormTo}, {@code ropeQK}, {@code matmulRowBlocks},
 * {@code matmulSharedA}, {@code maskPaddingRows}, {@code randomNormal}, {@code adamwGroup}); the
 * graph-capture ops keep their "cannot record" defaults.
 */
public final class ReferenceBackend implements WindowedAttention, SparseOps {

    private final ReferenceSparseOps sparse = new ReferenceSparseOps();

    @Override public String name() { return "ref"; }

    @Override public DType computeType() { return DType.F32; }

    static RefTensor t(Tensor x) {
        if (x instanceof RefTensor r) return r;
        throw new IllegalArgumentException("not a reference-backend tensor: " + x);
    }

    // ------------------------------------------------------------------ memory

    @Override
    public Tensor empty(DType dtype, int... shape) { return RefTensor.allocate(this, dtype, shape); }

    @Override
    public void copyFromHost(Tensor dst, float[] src) {
        RefTensor d = t(dst);
        if (src.length != d.numel()) throw new IllegalArgumentException("copyFromHost: " + src.length + " values for " + Tensor.describe(dst));
        for (int i = 0; i < src.length; i++) d.set(i, src[i]);
    }

    @Override
    public void copyFromHost(Tensor dst, int[] src) {
        RefTensor d = t(dst);
        if (src.length != d.numel()) throw new IllegalArgumentException("copyFromHost: " + src.length + " values for " + Tensor.describe(dst));
        for (int i = 0; i < src.length; i++) d.set(i, src[i]);
    }

    @Override
    public float[] toFloats(Tensor x) {
        RefTensor r = t(x);
        float[] out = new float[(int) r.numel()];
        for (int i = 0; i < out.length; i++) out[i] = r.get(i);
        return out;
    }

    @Override
    public int[] toInts(Tensor x) {
        RefTensor r = t(x);
        int[] out = new int[(int) r.numel()];
        for (int i = 0; i < out.length; i++) out[i] = r.isInt() ? r.geti(i) : (int) r.get(i);
        return out;
    }

    /** dst = src, converted to dst's dtype. */
    @Override
    public void copy(Tensor dst, Tensor src) {
        TensorChecks.sameNumel(dst, src, "copy");
        RefTensor d = t(dst), s = t(src);
        for (int i = 0; i < d.numel(); i++) d.set(i, s.isInt() ? s.geti(i) : s.get(i));
    }

    @Override
    public void fill(Tensor x, float value) {
        RefTensor r = t(x);
        for (int i = 0; i < r.numel(); i++) r.set(i, value);
    }

    @Override public void synchronize() {}

    // ------------------------------------------------------------------ dense algebra

    /** C = alpha·op(A)·op(B) + beta·C. C (M,N); A (M,K) or, transposed, (K,M); B (K,N) or, transposed, (N,K). */
    @Override
    public void matmul(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta) {
        RefTensor C = t(c), A = t(a), B = t(b);
        int M = C.rows(), N = C.cols();
        int K = transA ? A.rows() : A.cols();
        if ((transA ? A.cols() : A.rows()) != M || (transB ? B.cols() : B.rows()) != K || (transB ? B.rows() : B.cols()) != N)
            throw new IllegalArgumentException("matmul shapes: C " + Tensor.describe(c) + " = op(A " + Tensor.describe(a) + (transA ? ")ᵀ" : ")")
                    + " · op(B " + Tensor.describe(b) + (transB ? ")ᵀ" : ")"));
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double acc = 0;
                for (int p = 0; p < K; p++) {
                    float aip = transA ? A.get(p * M + i) : A.get(i * K + p);
                    float bpj = transB ? B.get(j * K + p) : B.get(p * N + j);
                    acc += (double) aip * bpj;
                }
                // beta = 0 overwrites: whatever C held (even NaN) does not reach the result
                double old = beta == 0f ? 0 : (double) beta * C.get(i * N + j);
                C.set(i * N + j, alpha * acc + old);
            }
    }

    /** y += alpha·x, elementwise. */
    @Override
    public void axpy(Tensor y, float alpha, Tensor x) {
        TensorChecks.sameNumel(y, x, "axpy");
        RefTensor Y = t(y), X = t(x);
        for (int i = 0; i < Y.numel(); i++) Y.set(i, Y.get(i) + (double) alpha * X.get(i));
    }

    /** x *= s. */
    @Override
    public void scale(Tensor x, float s) {
        RefTensor X = t(x);
        for (int i = 0; i < X.numel(); i++) X.set(i, (double) X.get(i) * s);
    }

    /** out = a ⊙ b. */
    @Override
    public void mul(Tensor out, Tensor a, Tensor b) {
        TensorChecks.sameNumel(out, a, "mul");
        TensorChecks.sameNumel(out, b, "mul");
        RefTensor O = t(out), A = t(a), B = t(b);
        for (int i = 0; i < O.numel(); i++) O.set(i, (double) A.get(i) * B.get(i));
    }

    /** Σ over the tensors of Σ x², in float64. */
    @Override
    public double sumOfSquares(List<Tensor> tensors) {
        double s = 0;
        for (Tensor x : tensors) {
            RefTensor X = t(x);
            for (int i = 0; i < X.numel(); i++) s += (double) X.get(i) * X.get(i);
        }
        return s;
    }

    // ------------------------------------------------------------------ layers

    /** out[n,:] = table[ids[n],:]. out (N,C), ids (N) I32, table (V,C). */
    @Override
    public void embedding(Tensor out, Tensor ids, Tensor table) {
        RefTensor O = t(out), I = t(ids), W = t(table);
        int C = W.cols(), V = W.rows(), N = (int) I.numel();
        if (O.cols() != C || O.rows() != N) throw new IllegalArgumentException("embedding: out " + Tensor.describe(out) + " for " + N + " ids of width " + C);
        for (int n = 0; n < N; n++) {
            int id = I.geti(n);
            if (id < 0 || id >= V) throw new IllegalArgumentException("embedding: token id " + id + " at position " + n + " outside vocabulary of " + V);
            for (int c = 0; c < C; c++) O.set(n * C + c, W.get(id * C + c));
        }
    }

    /** out[n,c] = x[n,c] · rstd[n] · weight[c], rstd[n] = 1/√(mean_c x[n,c]² + eps). out, x (N,C); weight (C); rstd (N). */
    @Override
    public void rmsNorm(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) {
        RefTensor O = t(out), R = t(rstd), X = t(x), W = t(weight);
        int C = X.cols(), N = X.rows();
        if (W.numel() != C || R.numel() != N || O.numel() != X.numel())
            throw new IllegalArgumentException("rmsNorm: out " + Tensor.describe(out) + " rstd " + Tensor.describe(rstd) + " weight " + Tensor.describe(weight) + " for x " + Tensor.describe(x));
        for (int n = 0; n < N; n++) {
            double ss = 0;
            for (int c = 0; c < C; c++) ss += (double) X.get(n * C + c) * X.get(n * C + c);
            double rs = 1 / Math.sqrt(ss / C + eps);
            R.set(n, rs);
            for (int c = 0; c < C; c++) O.set(n * C + c, X.get(n * C + c) * rs * W.get(c));
        }
    }

    /**
     * dx (+)= ∂L/∂x of rmsNorm given dout: with r = rstd[n], dx[n,c] = r·w[c]·dout[n,c] − x[n,c]·r³/C·Σ_j w[j]·dout[n,j]·x[n,j].
     * The norm weight is frozen: no dweight. dx, dout, x (N,C); weight (C); rstd (N) from the forward.
     */
    @Override
    public void rmsNormBackward(Tensor dx, Tensor dout, Tensor x, Tensor weight, Tensor rstd, boolean accumulate) {
        RefTensor DX = t(dx), DO = t(dout), X = t(x), W = t(weight), R = t(rstd);
        TensorChecks.sameNumel(dx, x, "rmsNormBackward");
        TensorChecks.sameNumel(dout, x, "rmsNormBackward");
        int C = X.cols(), N = X.rows();
        for (int n = 0; n < N; n++) {
            double r = R.get(n), dot = 0;
            for (int c = 0; c < C; c++) dot += (double) W.get(c) * DO.get(n * C + c) * X.get(n * C + c);
            for (int c = 0; c < C; c++) {
                double g = r * W.get(c) * DO.get(n * C + c) - X.get(n * C + c) * r * r * r / C * dot;
                DX.set(n * C + c, accumulate ? DX.get(n * C + c) + g : g);
            }
        }
    }

    /** dweight[c] += Σ_n dout[n,c]·x[n,c]·rstd[n]. dweight (C) F32; dout, x (N,C); rstd (N). */
    @Override
    public void rmsNormWeightGrad(Tensor dweight, Tensor dout, Tensor x, Tensor rstd) {
        RefTensor DW = t(dweight), DO = t(dout), X = t(x), R = t(rstd);
        int C = X.cols(), N = X.rows();
        if (dweight.dtype() != DType.F32 || DW.numel() != C || R.numel() != N)
            throw new IllegalArgumentException("rmsNormWeightGrad: dweight " + Tensor.describe(dweight) + " (F32, C) / rstd " + Tensor.describe(rstd) + " for x " + Tensor.describe(x));
        TensorChecks.sameNumel(dout, x, "rmsNormWeightGrad");
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int n = 0; n < N; n++) s += (double) DO.get(n * C + c) * X.get(n * C + c) * R.get(n);
            DW.set(c, DW.get(c) + s);
        }
    }

    /** dtable[ids[n], :] += dout[n, :] for every n. dtable (V,C) F32; dout (N,C); ids (N) I32. */
    @Override
    public void embeddingBackward(Tensor dtable, Tensor dout, Tensor ids) {
        RefTensor DT = t(dtable), DO = t(dout), I = t(ids);
        int C = DT.cols(), V = DT.rows(), N = (int) I.numel();
        if (dtable.dtype() != DType.F32 || DO.cols() != C || DO.rows() != N)
            throw new IllegalArgumentException("embeddingBackward: dtable " + Tensor.describe(dtable) + " (F32) / dout " + Tensor.describe(dout) + " for " + N + " ids");
        for (int n = 0; n < N; n++) {
            int id = I.geti(n);
            if (id < 0 || id >= V) throw new IllegalArgumentException("embeddingBackward: token id " + id + " at position " + n + " outside vocabulary of " + V);
            for (int c = 0; c < C; c++) DT.set(id * C + c, DT.get(id * C + c) + DO.get(n * C + c));
        }
    }

    /**
     * Rotary embedding in place, HF rotate_half layout: in each head, element i pairs with i + D/2 and
     * (x1, x2) ← (x1·cos − x2·sin, x2·cos + x1·sin) at angle θ[pos, i]; inverse rotates by −θ.
     * x (N, H·D); positions (N) I32; cos, sin (maxPos, D/2).
     */
    @Override
    public void rope(Tensor x, Tensor positions, Tensor cos, Tensor sin, int heads, int headDim, boolean inverse) {
        RefTensor X = t(x), P = t(positions), COS = t(cos), SIN = t(sin);
        int width = heads * headDim, half = headDim / 2, N = X.rows(), maxPos = COS.rows();
        if (X.cols() != width || P.numel() != N || COS.cols() != half)
            throw new IllegalArgumentException("rope: x " + Tensor.describe(x) + ", positions " + Tensor.describe(positions) + ", cos " + Tensor.describe(cos) + " for " + heads + " heads of " + headDim);
        for (int n = 0; n < N; n++) {
            int pos = P.geti(n);
            if (pos < 0 || pos >= maxPos) throw new IllegalArgumentException("rope: position " + pos + " outside table of " + maxPos);
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < half; i++) {
                    int i1 = n * width + h * headDim + i, i2 = i1 + half;
                    double cs = COS.get(pos * half + i), sn = inverse ? -SIN.get(pos * half + i) : SIN.get(pos * half + i);
                    double x1 = X.get(i1), x2 = X.get(i2);
                    X.set(i1, x1 * cs - x2 * sn);
                    X.set(i2, x2 * cs + x1 * sn);
                }
        }
    }

    /** Causal GQA attention with left padding and an optional sliding window: see {@link ReferenceAttention#forward}. */
    @Override
    public void attention(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyStart,
                          int batch, int seqLen, int heads, int kvHeads, int headDim, float scale, int window) {
        var s = new ReferenceAttention.Shape(batch, seqLen, heads, kvHeads, headDim, toInts(keyStart), scale, window);
        s.check(out, q, k, v);
        if (lse.numel() != (long) batch * heads * seqLen) throw new IllegalArgumentException("attention: lse " + Tensor.describe(lse));
        double[] l = new double[batch * heads * seqLen];
        store(out, ReferenceAttention.forward(s, widen(q), widen(k), widen(v), l));
        store(lse, l);
    }

    /**
     * Gradients of {@link #attention}, overwritten: see {@link ReferenceAttention#backward}. The
     * reference recomputes the softmax from q and k; out and lse (the forward's stash a fast backend
     * reads) are not used.
     */
    @Override
    public void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                                  Tensor q, Tensor k, Tensor v, Tensor keyStart,
                                  int batch, int seqLen, int heads, int kvHeads, int headDim, float scale, int window) {
        var s = new ReferenceAttention.Shape(batch, seqLen, heads, kvHeads, headDim, toInts(keyStart), scale, window);
        s.check(out, q, k, v);
        s.check(dq, dq, dk, dv);
        double[][] g = ReferenceAttention.backward(s, widen(dout), widen(q), widen(k), widen(v));
        store(dq, g[0]);
        store(dk, g[1]);
        store(dv, g[2]);
    }

    /** Attention of n new tokens at positions [pos0, pos0+n) against a KV cache: see {@link ReferenceAttention#cached}. */
    @Override
    public void attentionCached(Tensor out, Tensor q, Tensor kCache, Tensor vCache, int pos0,
                                int heads, int kvHeads, int headDim, float scale, int window) {
        int qw = heads * headDim, kw = kvHeads * headDim, n = (int) (q.numel() / qw);
        if (q.dim(-1) != qw || kCache.dim(-1) != kw || vCache.dim(-1) != kw || out.numel() != q.numel() || pos0 + n > kCache.numel() / kw)
            throw new IllegalArgumentException("attentionCached: q " + Tensor.describe(q) + " cache " + Tensor.describe(kCache) + " pos0 " + pos0);
        store(out, ReferenceAttention.cached(widen(q), widen(kCache), widen(vCache), n, pos0, heads, kvHeads, headDim, scale, window));
    }

    @Override
    public void attentionCachedBatch(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor keyStart, int batch, int pos0,
                                     int heads, int kvHeads, int headDim, float scale) {
        attentionCachedBatch(out, q, kCache, vCache, keyStart, batch, pos0, heads, kvHeads, headDim, scale, 0);
    }

    /** Batched cached attention over a time-major cache with left padding: see {@link ReferenceAttention#cachedBatch}. */
    @Override
    public void attentionCachedBatch(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor keyStart, int batch, int pos0,
                                     int heads, int kvHeads, int headDim, float scale, int window) {
        long qw = (long) heads * headDim, kw = (long) kvHeads * headDim;
        if (batch <= 0 || kvHeads <= 0 || heads % kvHeads != 0 || q.dim(-1) != qw || kCache.dim(-1) != kw || vCache.numel() != kCache.numel()
                || out.numel() != q.numel() || keyStart.numel() != batch || q.numel() % (qw * batch) != 0 || kCache.numel() % (kw * batch) != 0
                || pos0 < 0 || pos0 + q.numel() / (qw * batch) > kCache.numel() / (kw * batch))
            throw new IllegalArgumentException("attentionCachedBatch: q " + Tensor.describe(q) + " cache " + Tensor.describe(kCache) + " keyStart "
                    + Tensor.describe(keyStart) + " for B=" + batch + " pos0=" + pos0 + " H=" + heads + " Hkv=" + kvHeads + " D=" + headDim);
        int n = (int) (q.numel() / (qw * batch));
        store(out, ReferenceAttention.cachedBatch(widen(q), widen(kCache), widen(vCache), toInts(keyStart), batch, n, pos0,
                heads, kvHeads, headDim, scale, window));
    }

    /** out = silu(gate) ⊙ up, silu(g) = g·σ(g). All (N, I). */
    @Override
    public void swiglu(Tensor out, Tensor gate, Tensor up) {
        TensorChecks.sameNumel(out, gate, "swiglu");
        TensorChecks.sameNumel(out, up, "swiglu");
        RefTensor O = t(out), G = t(gate), U = t(up);
        for (int i = 0; i < O.numel(); i++) O.set(i, silu(G.get(i)) * U.get(i));
    }

    /** dgate = dout·up·σ(g)·(1 + g·(1 − σ(g))), dup = dout·silu(g). All (N, I), overwritten. */
    @Override
    public void swigluBackward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up) {
        TensorChecks.sameNumel(dgate, gate, "swigluBackward");
        TensorChecks.sameNumel(dup, up, "swigluBackward");
        TensorChecks.sameNumel(dout, gate, "swigluBackward");
        RefTensor DG = t(dgate), DU = t(dup), DO = t(dout), G = t(gate), U = t(up);
        for (int i = 0; i < G.numel(); i++) {
            double g = G.get(i), d = DO.get(i);
            DG.set(i, d * U.get(i) * dsilu(g));
            DU.set(i, d * silu(g));
        }
    }

    static double sigmoid(double g) { return 1 / (1 + Math.exp(-g)); }

    static double silu(double g) { return g * sigmoid(g); }

    /** d silu(g) / dg. */
    static double dsilu(double g) {
        double s = sigmoid(g);
        return s * (1 + g * (1 - s));
    }

    /**
     * losses[n] = logsumexp(logits[n]) − logits[n, target[n]]; dlogits[n] = gradScale·(softmax(logits[n]) − onehot(target[n])).
     * A target of −100 gives loss 0 and a zero gradient row. logits, dlogits (n, V) (dlogits may be
     * logits: each row is read before it is written, or null: no gradient); targets (n) I32; losses (n).
     */
    @Override
    public void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, float gradScale) {
        RefTensor LS = t(losses), LG = t(logits), TG = t(targets), DL = dlogits == null ? null : t(dlogits);
        int V = LG.cols(), n = LG.rows();
        if (TG.numel() != n || LS.numel() != n || (DL != null && DL.numel() != LG.numel()))
            throw new IllegalArgumentException("crossEntropy: logits " + Tensor.describe(logits) + " targets " + Tensor.describe(targets) + " losses " + Tensor.describe(losses));
        for (int r = 0; r < n; r++) {
            int tg = TG.geti(r);
            if (tg != -100 && (tg < 0 || tg >= V)) throw new IllegalArgumentException("crossEntropy: target " + tg + " at row " + r + " outside vocabulary of " + V);
        }
        for (int r = 0; r < n; r++) {
            int tg = TG.geti(r);
            if (tg == -100) {
                LS.set(r, 0);
                if (DL != null) for (int j = 0; j < V; j++) DL.set(r * V + j, 0);
                continue;
            }
            double max = Double.NEGATIVE_INFINITY, sum = 0;
            for (int j = 0; j < V; j++) max = Math.max(max, LG.get(r * V + j));
            for (int j = 0; j < V; j++) sum += Math.exp(LG.get(r * V + j) - max);
            double lse = max + Math.log(sum);
            LS.set(r, lse - LG.get(r * V + tg));
            if (DL == null) continue;
            double[] p = new double[V]; // read the whole row first: dlogits may be logits
            for (int j = 0; j < V; j++) p[j] = Math.exp(LG.get(r * V + j) - lse);
            for (int j = 0; j < V; j++) DL.set(r * V + j, gradScale * (j == tg ? p[j] - 1 : p[j]));
        }
    }

    /**
     * Inverted dropout: out[i] = x[i]/(1−p) where u(seed, i) ≥ p, else 0, with u the top 24 bits of
     * {@link CounterRng#bits} as a uniform in [0,1) — the same mask on every backend, forward and backward.
     */
    @Override
    public void dropout(Tensor out, Tensor x, float p, long seed) {
        TensorChecks.sameNumel(out, x, "dropout");
        if (!(p >= 0f && p < 1f)) throw new IllegalArgumentException("dropout: p must be in [0,1), got " + p);
        RefTensor O = t(out), X = t(x);
        float keep = 1f / (1f - p);
        for (int i = 0; i < O.numel(); i++) {
            float u = (CounterRng.bits(seed, i) >>> 40) * 0x1.0p-24f;
            O.set(i, p == 0f ? X.get(i) : u >= p ? X.get(i) * keep : 0f);
        }
    }

    // ------------------------------------------------------------------ optimizer

    /**
     * One AdamW step: g = grad·gradScale; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
     * param −= lr·(m̂/(√v̂ + eps) + wd·param), m̂ = m/(1−β1^step), v̂ = v/(1−β2^step). All tensors same shape.
     */
    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2,
                      float eps, float weightDecay, int step, float gradScale) {
        TensorChecks.adamw(param, grad, m, v, step);
        RefTensor P = t(param), G = t(grad), M = t(m), V = t(v);
        double bc1 = 1 - Math.pow(beta1, step), bc2 = 1 - Math.pow(beta2, step);
        for (int i = 0; i < P.numel(); i++) {
            double g = (double) G.get(i) * gradScale;
            double mi = beta1 * (double) M.get(i) + (1 - (double) beta1) * g;
            double vi = beta2 * (double) V.get(i) + (1 - (double) beta2) * g * g;
            M.set(i, mi);
            V.set(i, vi);
            double p = P.get(i);
            P.set(i, p - lr * ((mi / bc1) / (Math.sqrt(vi / bc2) + eps) + weightDecay * p));
        }
    }

    // ------------------------------------------------------------------ SparseLoRA ops: ReferenceSparseOps

    /** The SparseLoRA ops' defaults run on this backend's plain loops. */
    @Override public Backend backend() { return this; }


    @Override public void gatherRows(Tensor out, Tensor src, Tensor idx) { sparse.gatherRows(out, src, idx); }
    @Override public void scatterRows(Tensor out, Tensor src, Tensor idx, boolean accumulate) { sparse.scatterRows(out, src, idx, accumulate); }
    @Override public void gatherCols(Tensor out, Tensor src, Tensor idx) { sparse.gatherCols(out, src, idx); }
    @Override public void scatterCols(Tensor out, Tensor src, Tensor idx, boolean accumulate) { sparse.scatterCols(out, src, idx, accumulate); }
    @Override public void gatherRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) { sparse.gatherRowsCols(out, src, rowIdx, colIdx); }
    @Override public void scatterRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) { sparse.scatterRowsCols(out, src, rowIdx, colIdx); }
    @Override public void scatterAddRowsCols(Tensor out, Tensor src, Tensor rowIdx, Tensor colIdx) { sparse.scatterAddRowsCols(out, src, rowIdx, colIdx); }
    @Override public void fillCols(Tensor t, int col0, float value) { sparse.fillCols(t, col0, value); }
    @Override public void columnNorms(Tensor out, Tensor x) { sparse.columnNorms(out, x); }
    @Override public void sequenceMean(Tensor out, Tensor x, Tensor keyStart, int batch, int seqLen) { sparse.sequenceMean(out, x, keyStart, batch, seqLen); }
    @Override public void topK(Tensor idx, Tensor scores, int k) { sparse.topK(idx, scores, k); }
    @Override public void lowRankColumnNorms(Tensor[] outs, Tensor[] ts, Tensor[] qs) { sparse.lowRankColumnNorms(outs, ts, qs); }
    @Override public void lowRankSwigluColumnNorms(Tensor out, Tensor tg, Tensor qg, Tensor tu, Tensor qu) { sparse.lowRankSwigluColumnNorms(out, tg, qg, tu, qu); }

    @Override
    public void swigluJoin(Tensor h, Tensor g, Tensor u, Tensor addG, Tensor addU, Tensor addRows, Tensor hAdd,
                           Tensor plainRows, Tensor keptG, Tensor keptU, Tensor keptCols, Tensor hKept) {
        sparse.swigluJoin(h, g, u, addG, addU, addRows, hAdd, plainRows, keptG, keptU, keptCols, hKept);
    }

    @Override
    public void swigluBackwardJoin(Tensor dg, Tensor du, Tensor dh, Tensor g, Tensor u, Tensor addDh, Tensor addRows,
                                   Tensor dgAdd, Tensor duAdd, Tensor plainRows, Tensor keptDh, Tensor keptCols,
                                   Tensor dgKept, Tensor duKept) {
        sparse.swigluBackwardJoin(dg, du, dh, g, u, addDh, addRows, dgAdd, duAdd, plainRows, keptDh, keptCols, dgKept, duKept);
    }

    // ------------------------------------------------------------------ host helpers

    /** The tensor's values in float64. */
    static double[] widen(Tensor x) {
        RefTensor r = t(x);
        double[] d = new double[(int) r.numel()];
        for (int i = 0; i < d.length; i++) d[i] = r.get(i);
        return d;
    }

    /** Writes float64 values into the tensor (rounded to its dtype). */
    static void store(Tensor x, double[] values) {
        RefTensor r = t(x);
        if (values.length != r.numel()) throw new IllegalArgumentException(values.length + " values for " + Tensor.describe(x));
        for (int i = 0; i < values.length; i++) r.set(i, values[i]);
    }
}
