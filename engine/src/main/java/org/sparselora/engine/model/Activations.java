package org.sparselora.engine.model;

import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.lora.LoraAdapter;

/**
 * The activations of one batch shape, llm.c's ActivationTensors: what the forward writes and the
 * backward reads, the gradient buffers and the work buffers, made once per (B, T) and reused by
 * every step of that shape. The work buffers are plain flat memory: {@code s1}, {@code s2}
 * ({@code N·maxW}) hold a token group's gathered input rows and its output rows, {@code s3} its
 * kept-channel outputs; the MLP strategies, the head and the LoRA branch view them as they need
 * within one call (nothing stays in them across calls).
 *
 * <p>With activation checkpointing ({@code checkpointed}) only the layer inputs {@code resIn[l]}
 * (and the small (N,r) LoRA intermediates) are kept per layer: every other per-layer array points
 * all its entries at one buffer, which the forward overwrites layer after layer and the backward
 * refills by recomputing the layer it is about to backpropagate.
 */
final class Activations {
    private final Backend be;
    private final LlamaConfig c;
    private final KeptBuffers kb;
    final int B, T, N, maxW;
    /** Per layer only the input is kept; the rest is recomputed in the backward. */
    final boolean checkpointed;
    final Tensor tokens, positions, keyStart;            // (N) (N) (B) I32
    final Tensor[] resIn, resMid, xn1, xn2, rstd1, rstd2; // (N,C) / (N)
    final Tensor[] q, k, v, att, lse;                     // (N,Hq·D) (N,Hkv·D) (N,Hkv·D) (N,Hq·D) (B,Hq,T)
    final Tensor[] g, u, h;                               // (N,I); h[l] and xn2[l] bound per layer by bindStash
    final Tensor[] xn2Own, hOwn;                          // per-layer stashes, made when a layer's LoRA needs them
    Tensor xn2Shared, hShared;                            // the one buffer of layers that need no stash
    final Tensor[][] loraU;                               // [layer][proj] (N,r) or null
    final Tensor[][] loraUt;                              // [layer][group: 0 q/k/v, 1 gate/up] (k·r,N) of a fused group, or null
    final Tensor resOut, xf, rstdf;                       // (N,C) (N,C) (N)
    final Tensor tmpC, dres, dxn, dq, dk, dv, datt, dh, dg, du, dxf; // gradients and a (N,C) temp
    final Tensor s1, s2, s3;                              // flat scratch, N·maxW each
    final Tensor xsShared, xdShared;                      // token-split rows of one projection input, shared by q/k/v and gate/up
    final Tensor ones;                                    // (N,1) for bias adds
    final Tensor losses;                                  // (N) F32
    final Tensor outIdx, outTargets;                      // (N) I32 (first nO used)
    final Tensor sTok, dTok, rows;                        // (N) I32: the step's sparse / dense token split and non-padding rows (first n used)
    Tensor logits;                                        // (chunk, V)
    Tensor dLoraU;                                        // (N, rmax)

    Activations(KeptBuffers kb, LlamaConfig c, int B, int T) { this(kb, c, B, T, false); }

    Activations(KeptBuffers kb, LlamaConfig c, int B, int T, boolean checkpointed) {
        this.kb = kb;
        this.be = kb.backend();
        this.c = c;
        kb.changed();
        this.B = B; this.T = T; this.N = B * T;
        this.checkpointed = checkpointed;
        int L = c.numLayers(), C = c.hiddenSize(), I = c.intermediateSize(), qd = c.qDim(), kd = c.kvDim();
        DType dt = be.computeType();
        this.maxW = Math.max(Math.max(C, I), Math.max(qd, kd));
        tokens = be.empty(DType.I32, N); positions = be.empty(DType.I32, N); keyStart = be.empty(DType.I32, B);
        resIn = new Tensor[L]; resMid = new Tensor[L]; xn1 = new Tensor[L]; xn2 = new Tensor[L];
        rstd1 = new Tensor[L]; rstd2 = new Tensor[L];
        q = new Tensor[L]; k = new Tensor[L]; v = new Tensor[L]; att = new Tensor[L]; lse = new Tensor[L];
        g = new Tensor[L]; u = new Tensor[L]; h = new Tensor[L];
        xn2Own = new Tensor[L]; hOwn = new Tensor[L];
        loraU = new Tensor[L][Projection.values().length];
        loraUt = new Tensor[L][2];
        for (int l = 0; l < L; l++) {
            resIn[l] = be.empty(dt, N, C);
            if (checkpointed && l > 0) {   // one buffer for every layer: layer 0's
                resMid[l] = resMid[0]; xn1[l] = xn1[0]; rstd1[l] = rstd1[0]; rstd2[l] = rstd2[0];
                q[l] = q[0]; k[l] = k[0]; v[l] = v[0]; att[l] = att[0]; lse[l] = lse[0]; g[l] = g[0]; u[l] = u[0];
                continue;
            }
            resMid[l] = be.empty(dt, N, C);
            xn1[l] = be.empty(dt, N, C);
            rstd1[l] = be.empty(DType.F32, N); rstd2[l] = be.empty(DType.F32, N);
            q[l] = be.empty(dt, N, qd); k[l] = be.empty(dt, N, kd); v[l] = be.empty(dt, N, kd);
            att[l] = be.empty(dt, N, qd); lse[l] = be.empty(DType.F32, B, c.numHeads(), T);
            g[l] = be.empty(dt, N, I); u[l] = be.empty(dt, N, I);
        }
        resOut = be.empty(dt, N, C); xf = be.empty(dt, N, C); rstdf = be.empty(DType.F32, N);
        tmpC = be.empty(dt, N, C); dres = be.empty(dt, N, C); dxn = be.empty(dt, N, C); dxf = be.empty(dt, N, C);
        dq = be.empty(dt, N, qd); dk = be.empty(dt, N, kd); dv = be.empty(dt, N, kd); datt = be.empty(dt, N, qd);
        dh = be.empty(dt, N, I); dg = be.empty(dt, N, I); du = be.empty(dt, N, I);
        s1 = be.empty(dt, N * maxW); s2 = be.empty(dt, N * maxW); s3 = be.empty(dt, N * maxW);
        xsShared = be.empty(dt, N * Math.max(C, qd)); xdShared = be.empty(dt, N * Math.max(C, qd));
        ones = be.empty(dt, N, 1);
        be.fill(ones, 1f);
        losses = be.empty(DType.F32, N);
        outIdx = be.empty(DType.I32, N); outTargets = be.empty(DType.I32, N);
        sTok = be.empty(DType.I32, N); dTok = be.empty(DType.I32, N); rows = be.empty(DType.I32, N);
    }

    /**
     * Points xn2[l] and h[l] at a per-layer stash only when the backward reads them: xn2 is read
     * only by gate/up's LoRA (frozen gate/up need just W for dx) and h only by down's LoRA
     * (swiglu's backward reads g and u). Otherwise layer l writes a buffer shared by every layer,
     * so q,k,v,o-only training keeps no (N,I) h and no (N,C) xn2 per layer — PEFT keeps the same
     * set (g, u and, with down adapted, h). Full-parameter training ({@code weightGrads}) keeps both
     * per layer. Buffers are made on first use and kept per shape.
     */
    void bindStash(int l, LoraAdapter lora, boolean training, boolean weightGrads) {
        int C = c.hiddenSize(), I = c.intermediateSize();
        DType dt = be.computeType();
        // full-parameter training reads both for gate/up's and down's weight gradients; checkpointed, the
        // backward recomputes xn2 and h right before it reads them, so one buffer serves every layer
        boolean keepX = !checkpointed && training && (weightGrads || lora != null && (lora.get(l, Projection.GATE) != null || lora.get(l, Projection.UP) != null));
        boolean keepH = !checkpointed && training && (weightGrads || lora != null && lora.get(l, Projection.DOWN) != null);
        if (keepX) { if (xn2Own[l] == null) xn2Own[l] = kb.make(dt, N, C); xn2[l] = xn2Own[l]; }
        else { if (xn2Shared == null) xn2Shared = kb.make(dt, N, C); xn2[l] = xn2Shared; }
        if (keepH) { if (hOwn[l] == null) hOwn[l] = kb.make(dt, N, I); h[l] = hOwn[l]; }
        else { if (hShared == null) hShared = kb.make(dt, N, I); h[l] = hShared; }
    }

    /** Gives every buffer back to the backend (views of them must not be used afterwards). */
    void close() {
        kb.changed();
        java.util.List<Tensor> all = new java.util.ArrayList<>(java.util.List.of(tokens, positions, keyStart, resOut, xf, rstdf,
                tmpC, dres, dxn, dq, dk, dv, datt, dh, dg, du, dxf, s1, s2, s3, xsShared, xdShared, ones, losses, outIdx, outTargets,
                sTok, dTok, rows));
        for (Tensor[] ts : new Tensor[][] {resIn, resMid, xn1, rstd1, rstd2, q, k, v, att, lse, g, u, xn2Own, hOwn}) all.addAll(java.util.Arrays.asList(ts));
        for (Tensor[] ts : loraU) all.addAll(java.util.Arrays.asList(ts));
        for (Tensor[] ts : loraUt) all.addAll(java.util.Arrays.asList(ts));
        all.addAll(java.util.Arrays.asList(xn2Shared, hShared, logits, dLoraU));
        java.util.Set<Tensor> closed = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
        for (Tensor t : all) if (t != null && closed.add(t)) t.close();   // checkpointed layers share their buffers
    }

    Tensor loraU(int l, Projection p, int r) {
        Tensor t = loraU[l][p.ordinal()];
        if (t == null || t.dim(1) != r) {
            if (t != null) t.close();
            loraU[l][p.ordinal()] = t = kb.make(be.computeType(), N, r);
        }
        return t;
    }

    /** The fused group's stash Uᵀ (rows, N) of layer l; slot 0 q/k/v, 1 gate/up. */
    Tensor loraUt(int l, int slot, int rows) {
        Tensor t = loraUt[l][slot];
        if (t == null || t.dim(0) != rows) {
            if (t != null) t.close();
            loraUt[l][slot] = t = kb.make(be.computeType(), rows, N);
        }
        return t;
    }

    /** dUᵀ (rows, N) of a fused group, in the same buffer as {@link #dLoraU}. */
    Tensor dLoraUt(int rows) {
        growDLoraU(rows);
        return dLoraU.view(0, rows, N);
    }

    Tensor dLoraU(int r) {
        growDLoraU(r);
        return dLoraU.view(0, N, r);
    }

    private void growDLoraU(int cols) {
        if (dLoraU != null && dLoraU.numel() >= (long) N * cols) return;
        if (dLoraU != null) dLoraU.close();
        dLoraU = kb.make(be.computeType(), N * cols);
    }

    Tensor logits(int rows) {
        if (logits == null || logits.dim(0) < rows) {
            if (logits != null) logits.close();
            logits = kb.make(be.computeType(), rows, c.vocabSize());
        }
        return logits.view(0, rows, c.vocabSize());
    }
}
