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
        DType dt = be.computeType();
        return build(be, src.config(), (name, shape) -> load(be, src, name, dt, shape));
    }

    /**
     * Random base weights made on the backend itself ({@link Backend#randomNormal}: on the GPU no
     * byte passes through the host — an 8B-shape model in well under a second instead of a minute
     * of host drawing and upload), with {@link RandomWeights}' distributions per tensor. For timing
     * runs ({@code --random-init}); the values differ from {@code upload(be, new RandomWeights(c, seed))}.
     */
    public static LlamaWeights random(Backend be, LlamaConfig c, long seed) {
        RandomWeights rw = new RandomWeights(c, seed);
        DType dt = be.computeType();
        return build(be, c, (name, shape) -> {
            int[] want = rw.shape(name);
            if (!Arrays.equals(want, shape)) throw new IllegalStateException("random init: " + name + " " + Arrays.toString(want) + " vs " + Arrays.toString(shape));
            float[] ms = rw.meanStd(name);
            Tensor t = be.empty(dt, shape);
            be.randomNormal(t, rw.streamSeed(name), ms[0], ms[1]);
            return t;
        });
    }

    /** Makes one named tensor of the given shape on the backend. */
    private interface Loader {
        Tensor get(String name, int... shape);
    }

    private static LlamaWeights build(Backend be, LlamaConfig c, Loader ld) {
        int C = c.hiddenSize(), V = c.vocabSize();
        Tensor embed = ld.get("model.embed_tokens.weight", V, C);
        Layer[] layers = new Layer[c.numLayers()];
        for (int l = 0; l < c.numLayers(); l++) {
            String p = "model.layers." + l + ".";
            Tensor[] w = new Tensor[Projection.values().length];
            for (Projection pr : Projection.values())
                w[pr.ordinal()] = ld.get("model." + pr.path(l) + ".weight", pr.outDim(c), pr.inDim(c));
            Tensor bq = null, bk = null, bv = null;
            if (c.attentionBias()) {
                bq = ld.get(p + "self_attn.q_proj.bias", c.qDim());
                bk = ld.get(p + "self_attn.k_proj.bias", c.kvDim());
                bv = ld.get(p + "self_attn.v_proj.bias", c.kvDim());
            }
            layers[l] = new Layer(ld.get(p + "input_layernorm.weight", C),
                    w[0], w[1], w[2], w[3], bq, bk, bv,
                    ld.get(p + "post_attention_layernorm.weight", C), w[4], w[5], w[6]);
        }
        Tensor norm = ld.get("model.norm.weight", C);
        Tensor head = c.tieWordEmbeddings() ? embed : ld.get("lm_head.weight", V, C);
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
