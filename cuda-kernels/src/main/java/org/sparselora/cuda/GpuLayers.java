package org.sparselora.cuda;

import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * A {@link GpuBackend}'s transformer layers other than attention: embedding, the rmsnorm family
 * (forward, fused residual add, backward), rotary embeddings, SwiGLU, cross-entropy, dropout and the
 * device-side normal fill; and the weight gradients of the norm and the embedding (full-parameter
 * training).
 */
final class GpuLayers extends GpuOps {
    GpuLayers(GpuBackend owner, GpuDevice dev) { super(owner, dev); }

    void embedding(Tensor out, Tensor ids, Tensor table) {
        bind();
        GpuTensor O = own(out), I = own(ids), W = own(table);
        needI32("embedding", "ids", I);
        int N = (int) I.numel(), C = W.dim(-1), V = (int) (W.numel() / C);
        needNumel("embedding", "out", O, (long) N * C);
        if (N == 0) return;
        boolean vec = C % 8 == 0 && aligned(O, W);
        launch("embedding_" + sfx(O, "embedding") + "_" + sfx(W, "embedding"), N, 1, rowThreads(vec ? C / 8 : C, 256), 0,
                new Kernels.Args().ptr(O.address()).ptr(I.address()).ptr(W.address()).i(V).i(C).i(vec ? 1 : 0));
    }

    void rmsNorm(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) {
        bind();
        GpuTensor O = own(out), R = own(rstd), X = own(x), W = own(weight);
        norm("rmsnorm", O, R, X, null, W, eps);
    }

    boolean addRmsNorm(Tensor residual, Tensor out, Tensor rstd, Tensor delta, Tensor weight, float eps) {
        bind();
        GpuTensor Res = own(residual), O = own(out), R = own(rstd), D = own(delta), W = own(weight);
        if (D.dtype() != Res.dtype()) return false;
        sameCount("addRmsNorm", Res, D);
        norm("add_rmsnorm", O, R, Res, D, W, eps);
        return true;
    }

    boolean addRmsNormTo(Tensor residualOut, Tensor residualIn, Tensor out, Tensor rstd, Tensor delta, Tensor weight, float eps) {
        bind();
        GpuTensor Res = own(residualOut), In = own(residualIn), O = own(out), R = own(rstd), D = own(delta), W = own(weight);
        if (D.dtype() != Res.dtype() || In.dtype() != Res.dtype() || Res == In) {
            return false;
        }
        sameCount("addRmsNormTo", Res, D);
        sameCount("addRmsNormTo", Res, In);
        norm("add_rmsnorm_to", O, R, Res, In, D, W, eps);
        return true;
    }

    private void norm(String op, GpuTensor O, GpuTensor R, GpuTensor X, GpuTensor D, GpuTensor W, float eps) {
        norm(op, O, R, X, null, D, W, eps);
    }

    /** The rmsnorm kernels; In (the residual read, written to X with D added) only for add_rmsnorm_to. */
    private void norm(String op, GpuTensor O, GpuTensor R, GpuTensor X, GpuTensor In, GpuTensor D, GpuTensor W, float eps) {
        needF32(op, "rstd", R);
        int C = (int) W.numel();
        if (C == 0 || X.numel() % C != 0) throw new IllegalArgumentException(op + ": x " + X + " rows do not match weight " + W);
        int N = (int) (X.numel() / C);
        needNumel(op, "out", O, X.numel());
        needNumel(op, "rstd", R, N);
        if (O.dtype() != X.dtype()) throw new IllegalArgumentException(op + ": out " + O + " and x " + X + " must share a dtype");
        if (N == 0) return;
        boolean vec = C % 8 == 0 && aligned(O, X, W) && (D == null || aligned(D)) && (In == null || aligned(In));
        String name = op + "_" + sfx(X, op) + "_" + sfx(W, op);
        Kernels.Args a = new Kernels.Args();
        if (D == null) a.ptr(O.address()).ptr(R.address()).ptr(X.address());
        else if (In == null) a.ptr(X.address()).ptr(O.address()).ptr(R.address()).ptr(D.address());
        else a.ptr(X.address()).ptr(In.address()).ptr(O.address()).ptr(R.address()).ptr(D.address());
        launch(name, N, 1, rowThreads(vec ? C / 8 : C, 256), 0, a.ptr(W.address()).i(C).f(eps).i(vec ? 1 : 0));
    }

    void rmsNormBackward(Tensor dx, Tensor dout, Tensor x, Tensor weight, Tensor rstd, boolean accumulate) {
        bind();
        GpuTensor DX = own(dx), DO = own(dout), X = own(x), W = own(weight), R = own(rstd);
        needF32("rmsNormBackward", "rstd", R);
        int C = (int) W.numel();
        int N = (int) (X.numel() / C);
        needNumel("rmsNormBackward", "dx", DX, X.numel());
        needNumel("rmsNormBackward", "dout", DO, X.numel());
        needNumel("rmsNormBackward", "rstd", R, N);
        if (DX.dtype() != X.dtype() || DO.dtype() != X.dtype())
            throw new IllegalArgumentException("rmsNormBackward: dx " + DX + ", dout " + DO + " and x " + X + " must share a dtype");
        if (N == 0) return;
        boolean vec = C % 8 == 0 && aligned(DX, DO, X, W);
        launch("rmsnorm_bwd_" + sfx(X, "rmsNormBackward") + "_" + sfx(W, "rmsNormBackward"), N, 1, rowThreads(vec ? C / 8 : C, 256), 0,
                new Kernels.Args().ptr(DX.address()).ptr(DO.address()).ptr(X.address()).ptr(W.address()).ptr(R.address())
                        .i(C).i(accumulate ? 1 : 0).i(vec ? 1 : 0));
    }

    /** dweight (C) F32 += Σ_n dout ⊙ x·rstd: one block per 32 columns, 32 row lanes summed in a fixed order (deterministic). */
    void rmsNormWeightGrad(Tensor dweight, Tensor dout, Tensor x, Tensor rstd) {
        bind();
        GpuTensor DW = own(dweight), DO = own(dout), X = own(x), R = own(rstd);
        needF32("rmsNormWeightGrad", "dweight", DW);
        needF32("rmsNormWeightGrad", "rstd", R);
        int C = (int) DW.numel();
        if (C == 0 || X.numel() % C != 0) throw new IllegalArgumentException("rmsNormWeightGrad: x " + X + " rows do not match dweight " + DW);
        int N = (int) (X.numel() / C);
        needNumel("rmsNormWeightGrad", "dout", DO, X.numel());
        needNumel("rmsNormWeightGrad", "rstd", R, N);
        if (DO.dtype() != X.dtype()) throw new IllegalArgumentException("rmsNormWeightGrad: dout " + DO + " and x " + X + " must share a dtype");
        if (N == 0) return;
        launch("rmsnorm_wgrad_" + sfx(X, "rmsNormWeightGrad"), (C + 31) / 32, 1, 1024, 0,
                new Kernels.Args().ptr(DW.address()).ptr(DO.address()).ptr(X.address()).ptr(R.address()).i(N).i(C));
    }

    /** Row partitions of {@link #embeddingBackward}: each (column, id mod this) has one owning thread. */
    static final int EMBEDDING_PARTITIONS = 64;

    /**
     * dtable (V,C) F32 += the lookup's gradient, deterministic without atomics: thread (column, id
     * partition) owns its elements and adds the tokens' rows in token order (embedding_bwd_* in layers.cu).
     * An id outside [0, V) adds nothing: the forward's lookup already wrote NaN for it, so the loss shows
     * it (checking here would read the ids back, which a recorded step cannot).
     */
    void embeddingBackward(Tensor dtable, Tensor dout, Tensor ids) {
        bind();
        GpuTensor DT = own(dtable), DO = own(dout), I = own(ids);
        needF32("embeddingBackward", "dtable", DT);
        needI32("embeddingBackward", "ids", I);
        int C = DT.dim(-1), V = (int) (DT.numel() / C), N = (int) I.numel();
        needNumel("embeddingBackward", "dout", DO, (long) N * C);
        if (N == 0) return;
        int warps = 8;   // 256 threads: 32 columns × 8 partitions per block
        launch("embedding_bwd_" + sfx(DO, "embeddingBackward"), (C + 31) / 32, EMBEDDING_PARTITIONS / warps, 32 * warps, 0,
                new Kernels.Args().ptr(DT.address()).ptr(DO.address()).ptr(I.address()).i(N).i(V).i(C));
    }

    void rope(Tensor x, Tensor positions, Tensor cos, Tensor sin, int heads, int headDim, boolean inverse) {
        bind();
        GpuTensor X = own(x), P = own(positions), CO = own(cos), SI = own(sin);
        needI32("rope", "positions", P);
        needF32("rope", "cos", CO);
        needF32("rope", "sin", SI);
        if (headDim % 2 != 0) throw new IllegalArgumentException("rope: head dim must be even, got " + headDim);
        int N = (int) P.numel();
        needNumel("rope", "x", X, (long) N * heads * headDim);
        if (CO.numel() != SI.numel() || CO.numel() % (headDim / 2) != 0)
            throw new IllegalArgumentException("rope: cos " + CO + " / sin " + SI + " must be (maxPos, " + headDim / 2 + ")");
        long total = (long) N * heads * (headDim / 2);
        if (total == 0) return;
        int blocks = (int) Math.min(SM_BLOCKS * 4L, (total + 255) / 256);
        launch("rope_" + sfx(X, "rope"), blocks, 1, 256, 0, new Kernels.Args().ptr(X.address()).ptr(P.address())
                .ptr(CO.address()).ptr(SI.address()).i(N).i(heads).i(headDim).i(inverse ? 1 : 0));
    }

    /** Both rotations in one launch ({@code rope_qk_*}): 16-byte vector accesses when D % 16 == 0 and the tensors are aligned. */
    boolean ropeQK(Tensor q, Tensor k, Tensor positions, Tensor cos, Tensor sin, int heads, int kvHeads, int headDim, boolean inverse) {
        bind();
        GpuTensor Q = own(q), K = own(k), P = own(positions), CO = own(cos), SI = own(sin);
        if (Q.dtype() != K.dtype()) return false;
        needI32("ropeQK", "positions", P);
        needF32("ropeQK", "cos", CO);
        needF32("ropeQK", "sin", SI);
        if (headDim <= 0 || headDim % 2 != 0) throw new IllegalArgumentException("ropeQK: head dim must be even and positive, got " + headDim);
        if (heads < 0 || kvHeads < 0) throw new IllegalArgumentException("ropeQK: negative head count " + heads + "/" + kvHeads);
        int N = (int) P.numel(), half = headDim / 2;
        needNumel("ropeQK", "q", Q, (long) N * heads * headDim);
        needNumel("ropeQK", "k", K, (long) N * kvHeads * headDim);
        if (CO.numel() != SI.numel() || CO.numel() % half != 0)
            throw new IllegalArgumentException("ropeQK: cos " + CO + " / sin " + SI + " must be (maxPos, " + half + ")");
        boolean vec = headDim % 16 == 0 && aligned(Q, K, CO, SI);
        long total = (long) N * (heads + kvHeads) * (vec ? half / 8 : half);
        if (total == 0) return true;
        int blocks = (int) Math.min(SM_BLOCKS * 4L, (total + 255) / 256);
        launch("rope_qk_" + sfx(Q, "ropeQK"), blocks, 1, 256, 0, new Kernels.Args().ptr(Q.address()).ptr(K.address()).ptr(P.address())
                .ptr(CO.address()).ptr(SI.address()).i(N).i(heads).i(kvHeads).i(headDim).i(inverse ? 1 : 0).i(vec ? 1 : 0));
        return true;
    }

    void swiglu(Tensor out, Tensor gate, Tensor up) {
        bind();
        GpuTensor O = own(out), G = own(gate), U = own(up);
        sameCount("swiglu", O, G);
        sameCount("swiglu", O, U);
        if (G.dtype() != O.dtype() || U.dtype() != O.dtype()) throw new IllegalArgumentException("swiglu: out, gate, up must share a dtype");
        if (O.numel() == 0) return;
        elementwise("swiglu_" + sfx(O, "swiglu"), O.numel(), aligned(O, G, U), a -> a.ptr(O.address()).ptr(G.address()).ptr(U.address()));
    }

    void swigluBackward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up) {
        bind();
        GpuTensor DG = own(dgate), DU = own(dup), DO = own(dout), G = own(gate), U = own(up);
        for (GpuTensor t : new GpuTensor[] {DU, DO, G, U}) {
            sameCount("swigluBackward", DG, t);
            if (t.dtype() != DG.dtype()) throw new IllegalArgumentException("swigluBackward: all tensors must share a dtype");
        }
        if (DG.numel() == 0) return;
        elementwise("swiglu_bwd_" + sfx(DG, "swigluBackward"), DG.numel(), aligned(DG, DU, DO, G, U),
                a -> a.ptr(DG.address()).ptr(DU.address()).ptr(DO.address()).ptr(G.address()).ptr(U.address()));
    }

    void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, float gradScale) {
        bind();
        GpuTensor LS = own(losses), DL = own(dlogits), LG = own(logits), TG = own(targets);
        needF32("crossEntropy", "losses", LS);
        needI32("crossEntropy", "targets", TG);
        int n = (int) TG.numel();
        needNumel("crossEntropy", "losses", LS, n);
        if (n == 0) return;
        int V = (int) (LG.numel() / n);
        needNumel("crossEntropy", "logits", LG, (long) n * V);
        needNumel("crossEntropy", "dlogits", DL, (long) n * V);
        boolean vec = V % 8 == 0 && aligned(DL, LG);
        launch("cross_entropy_" + sfx(LG, "crossEntropy") + "_" + sfx(DL, "crossEntropy"), n, 1, rowThreads(vec ? V / 8 : V, 1024), 0,
                new Kernels.Args().ptr(LS.address()).ptr(DL.address()).ptr(LG.address()).ptr(TG.address()).i(V).f(gradScale).i(vec ? 1 : 0));
    }

    void dropout(Tensor out, Tensor x, float p, long seed) {
        bind();
        GpuTensor O = own(out), X = own(x);
        sameCount("dropout", O, X);
        if (!(p >= 0f && p < 1f)) throw new IllegalArgumentException("dropout: p must be in [0, 1), got " + p);
        if (p == 0f) { owner.copy(O, X); return; }
        if (O.numel() == 0) return;
        long n = O.numel();
        int blocks = (int) Math.max(1, Math.min(SM_BLOCKS, (n + 255) / 256));
        launch("dropout_" + sfx(O, "dropout") + "_" + sfx(X, "dropout"), blocks, 1, 256, 0,
                new Kernels.Args().ptr(O.address()).ptr(X.address()).f(p).l(seed).l(n));
    }

    /** The normal fill drawn on the device ({@code randn_*}: {@link org.sparselora.engine.backend.CounterRng#normal}'s rule). */
    void randomNormal(Tensor t, long seed, float mean, float std) {
        bind();
        GpuTensor T = own(t);
        if (T.dtype() != DType.F32 && T.dtype() != DType.BF16) throw new IllegalArgumentException("randomNormal: F32 or BF16 tensor, got " + T);
        long n = T.numel();
        if (n == 0) return;
        int blocks = (int) Math.max(1, Math.min(SM_BLOCKS, (n + 255) / 256));
        launch("randn_" + sfx(T, "randomNormal"), blocks, 1, 256, 0, new Kernels.Args().ptr(T.address()).l(n).l(seed).f(mean).f(std));
    }

    /** The dropout rule the kernel implements (CpuBackend's formula): element {@code i} is kept when this is ≥ p. */
    static float dropoutUniform(long seed, long i) {
        long z = seed * 0x9E3779B97F4A7C15L + i * 0xBF58476D1CE4E5B9L + 0x94D049BB133111EBL;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        z ^= z >>> 31;
        return (float) (z >>> 40) * (1.0f / 16777216.0f);
    }
}
