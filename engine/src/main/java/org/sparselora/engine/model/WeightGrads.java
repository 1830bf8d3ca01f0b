package org.sparselora.engine.model;

import java.util.Arrays;
import java.util.function.Function;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * Where a full-parameter step's weight gradients go: one F32 tensor per base-model parameter, laid
 * out like {@link LlamaWeights} (a tied head's gradient is the embedding's), and the backward pieces
 * that write them — dW += dyᵀ·x of each projection (through {@link DenseLinear.WeightGrad}), a bias's
 * column sums of dy, a norm weight's Σ dout ⊙ x̂, the lookup's rows scattered back into the
 * embedding, the head's dlogitsᵀ·h. Every piece adds, so several micro-batches accumulate.
 * {@link #NONE} is LoRA training: every piece does nothing and the frozen weights get no buffers.
 */
public final class WeightGrads {
    /** Nothing trains: the LoRA path. */
    static final WeightGrads NONE = new WeightGrads(null, null, null, null, null, null, null, null);

    private final Backend be;
    final Tensor embed, finalNorm, head;    // (V,C) (C) (V,C); head == embed when tied
    final Tensor[] attnNorm, ffnNorm;       // [layer] (C)
    final Tensor[][] w, b;                  // [layer][projection] (out,in) / (out) or null

    private WeightGrads(Backend be, Tensor embed, Tensor finalNorm, Tensor head, Tensor[] attnNorm, Tensor[] ffnNorm, Tensor[][] w, Tensor[][] b) {
        this.be = be;
        this.embed = embed;
        this.finalNorm = finalNorm;
        this.head = head;
        this.attnNorm = attnNorm;
        this.ffnNorm = ffnNorm;
        this.w = w;
        this.b = b;
    }

    /**
     * The gradients of config {@code c}'s parameters, each found by its HF name
     * ({@code model.layers.0.self_attn.q_proj.weight}, …; {@code lm_head.weight} only when untied) and
     * checked: F32, on {@code be}, the parameter's shape.
     */
    public static WeightGrads of(Backend be, LlamaConfig c, Function<String, Tensor> byName) {
        int C = c.hiddenSize(), V = c.vocabSize(), L = c.numLayers();
        Tensor embed = get(byName, "model.embed_tokens.weight", V, C);
        Tensor[] an = new Tensor[L], fn = new Tensor[L];
        Tensor[][] w = new Tensor[L][Projection.values().length], b = new Tensor[L][Projection.values().length];
        for (int l = 0; l < L; l++) {
            an[l] = get(byName, "model.layers." + l + ".input_layernorm.weight", C);
            fn[l] = get(byName, "model.layers." + l + ".post_attention_layernorm.weight", C);
            for (Projection p : Projection.values()) {
                w[l][p.ordinal()] = get(byName, "model." + p.path(l) + ".weight", p.outDim(c), p.inDim(c));
                if (c.attentionBias() && p.ordinal() <= Projection.V.ordinal())
                    b[l][p.ordinal()] = get(byName, "model." + p.path(l) + ".bias", p.outDim(c));
            }
        }
        Tensor norm = get(byName, "model.norm.weight", C);
        Tensor head = c.tieWordEmbeddings() ? embed : get(byName, "lm_head.weight", V, C);
        return new WeightGrads(be, embed, norm, head, an, fn, w, b);
    }

    private static Tensor get(Function<String, Tensor> byName, String name, int... shape) {
        Tensor t = byName.apply(name);
        if (t == null) throw new IllegalArgumentException("no gradient for parameter " + name);
        if (t.dtype() != DType.F32 || !Arrays.equals(t.shape(), shape))
            throw new IllegalArgumentException("gradient of " + name + " is " + Tensor.describe(t) + ", needs F32 " + Arrays.toString(shape));
        return t;
    }

    /** Whether anything trains (not {@link #NONE}). */
    boolean active() { return be != null; }

    /** Projection (l, p)'s weight gradient in the step of activations a: dW += dyᵀ·x, db += Σ_n dy[n,:]. */
    DenseLinear.WeightGrad linear(Activations a, int l, Projection p) {
        if (!active()) return DenseLinear.WeightGrad.FROZEN;
        Tensor dW = w[l][p.ordinal()], db = b[l][p.ordinal()];
        if (db == null) return (dy, x) -> be.matmul(dW, dy, true, x, false, 1, 1);           // (out,in) += (N,out)ᵀ·(N,in)
        Tensor db2 = db.reshape(1, (int) db.numel());
        return (dy, x) -> {
            be.matmul(dW, dy, true, x, false, 1, 1);
            be.matmul(db2, a.ones, true, dy, false, 1, 1);                                // (1,out) += (N,1)ᵀ·(N,out)
        };
    }

    /** Layer l's input norm weight: += Σ_n dout[n,:] ⊙ x[n,:]·rstd[n] (x the norm's input, dout its output's gradient). */
    void attnNorm(int l, Tensor dout, Tensor x, Tensor rstd) {
        if (active()) be.rmsNormWeightGrad(attnNorm[l], dout, x, rstd);
    }

    /** Layer l's post-attention norm weight, likewise. */
    void ffnNorm(int l, Tensor dout, Tensor x, Tensor rstd) {
        if (active()) be.rmsNormWeightGrad(ffnNorm[l], dout, x, rstd);
    }

    /** The final norm weight, likewise. */
    void finalNorm(Tensor dout, Tensor x, Tensor rstd) {
        if (active()) be.rmsNormWeightGrad(finalNorm, dout, x, rstd);
    }

    /** The head's gradient from one chunk of rows: dHead (V,C) += dlogits (r,V)ᵀ · h (r,C). */
    void head(Tensor dlogits, Tensor h) {
        if (active()) be.matmul(head, dlogits, true, h, false, 1, 1);
    }

    /** The lookup's gradient: dres (N,C) (∂loss/∂ the embedding's output) added into the rows of the tokens. */
    void embedding(Tensor dres, Tensor tokens) {
        if (active()) be.embeddingBackward(embed, dres, tokens);
    }
}
