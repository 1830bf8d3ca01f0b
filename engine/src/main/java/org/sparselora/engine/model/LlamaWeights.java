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
    /** NF4 storage of the projections (QLoRA), whose scratch tensors the layers' projections are; null: plain weights. */
    private final Nf4Weights nf4;

    private LlamaWeights(Backend backend, LlamaConfig config, Tensor embed, Tensor finalNorm, Tensor head, Layer[] layers, Nf4Weights nf4) {
        this.backend = backend;
        this.nf4 = nf4;
        this.config = config;
        this.embed = embed;
        this.finalNorm = finalNorm;
        this.head = head;
        this.layers = layers;
    }

    public Backend backend() { return backend; }

    /** The NF4 storage of the projections, or null when they are plain tensors. */
    public Nf4Weights nf4() { return nf4; }

    /**
     * Makes layer l's projections readable through {@link Layer#weight}: with NF4 storage they are
     * dequantized into the scratch tensors every layer shares; plain weights need nothing. The model
     * calls it before running layer l.
     */
    public void materialize(int l) {
        if (nf4 != null) nf4.materialize(l);
    }

    /**
     * QLoRA: like {@link #upload}, with every layer's projections quantized to NF4 on load (from the
     * checkpoint's bf16 or f32, one tensor at a time) and optionally their absmax double-quantized.
     */
    public static LlamaWeights uploadNf4(Backend be, WeightSource src, boolean doubleQuant) {
        DType dt = be.computeType();
        Nf4Weights q = new Nf4Weights(be, src.config(), doubleQuant);
        try {
            return build(be, src.config(), (name, shape) -> load(be, src, name, dt, shape), q,
                    (l, p, name, shape) -> q.put(l, p, hostFloats(src, name, shape)));
        } catch (RuntimeException e) {
            q.close();
            throw e;
        }
    }

    /** {@link #random} with NF4 projections of random codes (timing runs: {@link Nf4Weights#putRandom}). */
    public static LlamaWeights randomNf4(Backend be, LlamaConfig c, long seed) {
        RandomWeights rw = new RandomWeights(c, seed);
        Nf4Weights q = new Nf4Weights(be, c, false);
        DType dt = be.computeType();
        return build(be, c, (name, shape) -> {
            float[] ms = rw.meanStd(name);
            Tensor t = be.empty(dt, shape);
            be.randomNormal(t, rw.streamSeed(name), ms[0], ms[1]);
            return t;
        }, q, (l, p, name, shape) -> q.putRandom(l, p, rw.meanStd(name)[1], rw.streamSeed(name)));
    }

    /** Makes one layer projection's weight tensor (out, in). */
    private interface ProjectionLoader {
        Tensor get(int l, Projection p, String name, int... shape);
    }
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
        return build(be, c, ld, null, (l, p, name, shape) -> ld.get(name, shape));
    }

    private static LlamaWeights build(Backend be, LlamaConfig c, Loader ld, Nf4Weights nf4, ProjectionLoader pl) {
        int C = c.hiddenSize(), V = c.vocabSize();
        Tensor embed = ld.get("model.embed_tokens.weight", V, C);
        Layer[] layers = new Layer[c.numLayers()];
        for (int l = 0; l < c.numLayers(); l++) {
            String p = "model.layers." + l + ".";
            Tensor[] w = new Tensor[Projection.values().length];
            for (Projection pr : Projection.values())
                w[pr.ordinal()] = pl.get(l, pr, "model." + pr.path(l) + ".weight", pr.outDim(c), pr.inDim(c));
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
        return new LlamaWeights(be, c, embed, norm, head, layers, nf4);
    }

    private static Tensor load(Backend be, WeightSource src, String name, DType dt, int... shape) {
        return be.fromFloats(hostFloats(src, name, shape), dt, shape);
    }

    private static float[] hostFloats(WeightSource src, String name, int... shape) {
        HostTensor h = src.get(name);
        if (!Arrays.equals(h.shape(), shape))
            throw new IllegalArgumentException("weight " + name + " has shape " + Arrays.toString(h.shape()) + ", the config needs " + Arrays.toString(shape));
        return h.toFloats();
    }

    @Override
    public void close() {
        embed.close();
        finalNorm.close();
        if (head != embed) head.close();
        for (Layer l : layers) {
            Tensor[] own = nf4 != null ? new Tensor[] {l.attnNorm, l.bq, l.bk, l.bv, l.ffnNorm}   // the projections are nf4's scratch
                    : new Tensor[] {l.attnNorm, l.wq, l.wk, l.wv, l.wo, l.bq, l.bk, l.bv, l.ffnNorm, l.wg, l.wu, l.wd};
            for (Tensor t : own) if (t != null) t.close();
        }
        if (nf4 != null) nf4.close();
    }
}
