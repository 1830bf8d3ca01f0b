package org.sparselora.engine.model;

import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.lora.LoraAdapter;

/**
 * The LoRA branch of one step, y += s·(drop(x)·Aᵀ)·Bᵀ per adapted projection, with its backward:
 * dense on every token and channel whatever the frozen path does. Every GEMM reads the adapter's
 * compute-type copies of A and B. Projections that read the same input and share a fused A
 * ({@link LoraAdapter.Group}: q,k,v on xn1, gate,up on xn2; dropout 0) run their x·Aᵀ as one GEMM
 * (Uᵀ = A_g·xᵀ) and their dA and dx terms as one GEMM each ({@link #groupForward},
 * {@link #groupBackward}); the others run per projection ({@link #forward}, {@link #backward}).
 * Made per step: the adapter (may be null: no LoRA), whether dropout is on (training forwards only)
 * and the step's dropout seed.
 */
final class LoraBranch {
    private final Backend be;
    final LoraAdapter adapter;       // null: no LoRA
    private final boolean training;  // LoRA dropout is active only in training forwards
    private final long seed;

    LoraBranch(Backend be, LoraAdapter adapter, boolean training, long seed) {
        this.be = be;
        this.adapter = adapter;
        this.training = training;
        this.seed = seed;
    }

    /** Whether layer l's projection p carries an adapter. */
    boolean has(int l, Projection p) { return adapter != null && adapter.get(l, p) != null; }

    /** Whether this forward draws dropout masks (training with dropout &gt; 0). */
    boolean dropoutOn() { return adapter != null && training && adapter.config().dropout() > 0f; }

    private long dropSeed(int l, Projection p) {
        return seed * 0x9E3779B97F4A7C15L + l * 7919L + p.ordinal() * 104729L + 1;
    }

    /** The adapter of (l, p) when it runs per projection (not in a fused group), else null. */
    private LoraAdapter.Lora single(int l, Projection p) {
        return adapter == null || adapter.group(l, p) != null ? null : adapter.get(l, p);
    }

    /** y (N,out) += s·(drop(x)·Aᵀ)·Bᵀ of a projection outside a fused group; x (N,in). */
    void forward(Activations a, Tensor y, Tensor x, int l, Projection p) {
        LoraAdapter.Lora lo = single(l, p);
        if (lo == null) return;
        int N = a.N, in = x.dim(-1);
        float pd = training ? adapter.config().dropout() : 0f;
        Tensor xin = x;
        if (pd > 0f) {
            xin = a.s1.view(0, N, in);
            be.dropout(xin, x, pd, dropSeed(l, p));
        }
        Tensor U = a.loraU(l, p, lo.rank());
        be.matmul(U, xin, false, lo.ac(), true, 1, 0);
        be.matmul(y, U, false, lo.bc(), true, adapter.scaling(), 1);
    }

    /** y (N,out) = s·(x·Aᵀ)·Bᵀ of projection p, written (beta 0); 0 when p has no adapter. p must not be in a fused group. */
    void write(Activations a, Tensor y, Tensor x, int l, Projection p) {
        LoraAdapter.Lora lo = adapter.get(l, p);
        if (lo == null) {
            be.fill(y, 0f);
            return;
        }
        Tensor U = a.loraU(l, p, lo.rank());
        be.matmul(U, x, false, lo.ac(), true, 1, 0);
        be.matmul(y, U, false, lo.bc(), true, adapter.scaling(), 0);
    }

    /** Backward of {@link #forward}: dA, dB += and, when dx is not null, dx += its input gradient. dy (N,out). */
    void backward(Activations a, Tensor dx, Tensor dy, Tensor x, int l, Projection p) {
        LoraAdapter.Lora lo = single(l, p);
        if (lo == null) return;
        int N = a.N, in = x.dim(-1);
        float s = adapter.scaling(), pd = adapter.config().dropout();
        Tensor U = a.loraU[l][p.ordinal()];
        be.matmul(lo.db(), dy, true, U, false, s, 1);           // dB += s·dyᵀ·U      (out, r)
        Tensor dU = a.dLoraU(lo.rank());
        be.matmul(dU, dy, false, lo.bc(), false, s, 0);         // dU = s·dy·B        (N, r)
        Tensor xin = x;
        if (pd > 0f) {
            xin = a.s1.view(0, N, in);
            be.dropout(xin, x, pd, dropSeed(l, p));             // the forward's mask again
        }
        be.matmul(lo.da(), dU, true, xin, false, 1, 1);         // dA += dUᵀ·drop(x)  (r, in)
        if (dx != null) {
            if (pd > 0f) {
                Tensor t = a.s2.view(0, N, in);
                be.matmul(t, dU, false, lo.ac(), false, 1, 0);
                be.dropout(t, t, pd, dropSeed(l, p));
                be.axpy(dx, 1f, t);
            } else {
                be.matmul(dx, dU, false, lo.ac(), false, 1, 1);
            }
        }
    }

    /**
     * down's LoRA backward writing (not adding) its input gradient: dB += s·dyᵀ·U, dU = s·dy·B,
     * dA += dUᵀ·h, dh = dU·A; dh = 0 when down has no adapter. No dropout (the joined MLP's case).
     */
    void backwardWrite(Activations a, Tensor dh, Tensor dy, Tensor h, int l, Projection p) {
        LoraAdapter.Lora lo = adapter.get(l, p);
        if (lo == null) {
            be.fill(dh, 0f);
            return;
        }
        float s = adapter.scaling();
        Tensor U = a.loraU[l][p.ordinal()], dU = a.dLoraU(lo.rank());
        be.matmul(lo.db(), dy, true, U, false, s, 1);
        be.matmul(dU, dy, false, lo.bc(), false, s, 0);
        be.matmul(lo.da(), dU, true, h, false, 1, 1);
        be.matmul(dh, dU, false, lo.ac(), false, 1, 0);
    }

    // ------------------------------------------------------------------ fused groups

    /** The fused LoRA group of layer l that one of {@code ps} belongs to (first found), or null. */
    LoraAdapter.Group group(int l, Projection... ps) {
        if (adapter == null) return null;
        for (Projection p : ps) {
            LoraAdapter.Group g = adapter.group(l, p);
            if (g != null) return g;
        }
        return null;
    }

    /** The output (forward) or output gradient (backward) of a projection that can be in a fused group. */
    private static Tensor memberTensor(Activations a, int l, Projection p, boolean grad) {
        return switch (p) {
            case Q -> grad ? a.dq : a.q[l];
            case K -> grad ? a.dk : a.k[l];
            case V -> grad ? a.dv : a.v[l];
            case GATE -> grad ? a.dg : a.g[l];
            case UP -> grad ? a.du : a.u[l];
            default -> throw new IllegalStateException(p + " is never in a fused LoRA group");
        };
    }

    /**
     * LoRA of a fused group (projections reading the same x (N,in), dropout 0), after their frozen
     * parts, adding into (beta 1) or writing (beta 0) the members' outputs: Uᵀ (k·r, N) = A_g·xᵀ in
     * one GEMM (A_g = the members' A stacked by rows), then per member t: y_t (+)= s·(Uᵀ rows of t)ᵀ·B_tᵀ.
     */
    void groupForward(Activations a, int l, LoraAdapter.Group g, Tensor x, float beta) {
        if (g == null) return;
        int N = a.N, r = adapter.config().r(), k = g.members().size();
        Tensor Ut = a.loraUt(l, slot(g), k * r);                               // (k·r, N)
        be.matmul(Ut, g.ac(), false, x, true, 1, 0);                           // Uᵀ = A_g·xᵀ
        for (int j = 0; j < k; j++) {
            Projection p = g.members().get(j);
            Tensor y = memberTensor(a, l, p, false);                           // (N, out_t)
            be.matmul(y, Ut.view((long) j * r * N, r, N), true, adapter.get(l, p).bc(), true, adapter.scaling(), beta);
        }
    }

    /**
     * Backward of {@link #groupForward}: per member dB_t += s·dy_tᵀ·U_t and dUᵀ_t = s·B_tᵀ·dy_tᵀ
     * (rows of one (k·r, N) buffer); then dA_g += dUᵀ·x and, when dx is not null, dx += dUᵀᵀ·A_g,
     * one GEMM each (K = k·r for dx).
     */
    void groupBackward(Activations a, Tensor dx, int l, LoraAdapter.Group g, Tensor x) {
        if (g == null) return;
        int N = a.N, r = adapter.config().r(), k = g.members().size();
        float s = adapter.scaling();
        Tensor Ut = a.loraUt[l][slot(g)], dUt = a.dLoraUt(k * r);                // (k·r, N)
        for (int j = 0; j < k; j++) {
            Projection p = g.members().get(j);
            LoraAdapter.Lora lo = adapter.get(l, p);
            Tensor dy = memberTensor(a, l, p, true);                           // (N, out_t)
            long off = (long) j * r * N;
            be.matmul(lo.db(), dy, true, Ut.view(off, r, N), true, s, 1);      // dB_t += s·dy_tᵀ·U_t    (out_t, r)
            be.matmul(dUt.view(off, r, N), lo.bc(), true, dy, true, s, 0);     // dUᵀ_t = s·B_tᵀ·dy_tᵀ   (r, N)
        }
        be.matmul(g.da(), dUt, false, x, false, 1, 1);                         // dA_g += dUᵀ·x          (k·r, in)
        if (dx != null) be.matmul(dx, dUt, true, g.ac(), false, 1, 1);         // dx += dU·A_g           (N, in)
    }

    private static int slot(LoraAdapter.Group g) {
        Projection p0 = g.members().get(0);
        return p0 == Projection.GATE || p0 == Projection.UP ? 1 : 0;
    }
}
