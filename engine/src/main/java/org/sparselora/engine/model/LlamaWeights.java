package org.sparselora.engine.model;

import java.util.Arrays;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.io.WeightSource;

/**
 * The frozen base model on a backend, in the backend's compute type: embedding, per-layer norms,
 * projections (and q/k/v biases for Qwen2), final norm, head (the embedding itself when tied).
 * Uploaded one tensor at a time from a {@link WeightSource} so the host never holds a second copy
 * of the whole model; every shape is checked against the config. Read-only: nothing here ever gets
 * a gradient.
 */
public final class LlamaWeights implements AutoCloseable {

    /** One decoder layer; biases are null unless {@code attention_bias}. */
    public record Layer(Tensor attnNorm, Tensor wq, Tensor wk, Tensor wv, Tensor wo,
                        Tensor bq, Tensor bk, Tensor bv,
                        Tensor ffnNorm, Tensor wg, Tensor wu, Tensor wd) {
        public Tensor weight(Projection p) {
            return switch (p) {
                case Q -> wq; case K -> wk; case V -> wv; case O -> wo;
                case GATE -> wg; case UP -> wu; case DOWN -> wd;
            };
        }

        public Tensor bias(Projection p) {
            return switch (p) {
                case Q -> bq; case K -> bk; case V -> bv;
                default -> null;
            };
        }
    }

    public final LlamaConfig config;
    public final Tensor embed;     // (V, C)
    public final Tensor finalNorm; // (C)
    public final Tensor head;      // (V, C), == embed when tied
    public final Layer[] layers;
    private final Backend backend;

    private LlamaWeights(Backend backend, LlamaConfig config, Tensor embed, Tensor finalNorm, Tensor head, Layer[] layers) {
        this.backend = backend;
        this.config = config;
        this.embed = embed;
        this.finalNorm = finalNorm;
        this.head = head;
        this.layers = layers;
    }

    public Backend backend() { return backend; }

    public static LlamaWeights upload(Backend be, WeightSource src) {
        LlamaConfig c = src.config();
        int C = c.hiddenSize(), V = c.vocabSize();
        DType dt = be.computeType();
        Tensor embed = load(be, src, "model.embed_tokens.weight", dt, V, C);
        Layer[] layers = new Layer[c.numLayers()];
        for (int l = 0; l < c.numLayers(); l++) {
            String p = "model.layers." + l + ".";
            Tensor[] w = new Tensor[Projection.values().length];
            for (Projection pr : Projection.values())
                w[pr.ordinal()] = load(be, src, "model." + pr.path(l) + ".weight", dt, pr.outDim(c), pr.inDim(c));
            Tensor bq = null, bk = null, bv = null;
            if (c.attentionBias()) {
                bq = load(be, src, p + "self_attn.q_proj.bias", dt, c.qDim());
                bk = load(be, src, p + "self_attn.k_proj.bias", dt, c.kvDim());
                bv = load(be, src, p + "self_attn.v_proj.bias", dt, c.kvDim());
            }
            layers[l] = new Layer(load(be, src, p + "input_layernorm.weight", dt, C),
                    w[0], w[1], w[2], w[3], bq, bk, bv,
                    load(be, src, p + "post_attention_layernorm.weight", dt, C), w[4], w[5], w[6]);
        }
        Tensor norm = load(be, src, "model.norm.weight", dt, C);
        Tensor head = c.tieWordEmbeddings() ? embed : load(be, src, "lm_head.weight", dt, V, C);
        return new LlamaWeights(be, c, embed, norm, head, layers);
    }

    private static Tensor load(Backend be, WeightSource src, String name, DType dt, int... shape) {
        HostTensor h = src.get(name);
        if (!Arrays.equals(h.shape(), shape))
            throw new IllegalArgumentException("weight " + name + " has shape " + Arrays.toString(h.shape()) + ", the config needs " + Arrays.toString(shape));
        return be.fromFloats(h.toFloats(), dt, shape);
    }

    @Override
    public void close() {
        embed.close();
        finalNorm.close();
        if (head != embed) head.close();
        for (Layer l : layers)
            for (Tensor t : new Tensor[] {l.attnNorm, l.wq, l.wk, l.wv, l.wo, l.bq, l.bk, l.bv, l.ffnNorm, l.wg, l.wu, l.wd})
                if (t != null) t.close();
    }
}
