package org.sparselora.engine.model;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.io.WeightSource;

/**
 * Seeded random base weights for a config, under HF names: a {@link WeightSource} for tests,
 * benchmarks and {@code --random-init}. Each tensor is drawn from its own stream (seed, name) when
 * first asked for, so the same (config, seed) always gives the same weights whatever order they are
 * read in. Projections ~ N(0, 1/in) (activations keep their scale through a deep stack), embedding
 * ~ N(0, 1) (N(0, 1/C) when tied, as it is also the head; an untied head ~ N(0, 1/C), so logits
 * stay O(1)), norms 1 + N(0, 0.1²), biases N(0, 0.1²). {@link LlamaWeights#random} draws the same
 * distributions on the device itself (other values: a counter-based stream per tensor, see
 * {@code Backend.randomNormal}), which is what the GPU benchmarks use.
 *
 * <p>{@link Scheme#PRETRAIN} is the initializer for training from scratch ({@code --random-init} in
 * full mode): HF's {@code LlamaPreTrainedModel._init_weights} — every matrix (embedding, projections,
 * untied head) ~ N(0, 0.02²), RMSNorm weights exactly 1, biases exactly 0 — with GPT-2's scaled
 * residual init: the two projections that write into the residual stream ({@code o_proj},
 * {@code down_proj}) ~ N(0, (0.02/√(2L))²). Each of the 2L residual branches adds a term of about
 * the same variance, so without the scaling the stream's variance at init grows ∝ 2L with depth and
 * the final norm sees activations dominated by the deepest layers; with it the sum stays O(1)
 * whatever L (Radford et al. 2019, §2.3; Megatron-LM's {@code scaled_init_method}). 0.02 rather
 * than 1/√C: a fixed small scale keeps the initial logits near 0 (loss ≈ ln V at step 0) for the
 * small widths the presets use.
 *
 * <p>{@link #preset} names small Llama-architecture shapes for pretraining from scratch
 * ({@value #PRESET_NAMES}), sized by their non-embedding parameters.
 */
public final class RandomWeights implements WeightSource {
    private static final ValueLayout.OfFloat LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private static final int CHUNK = 1 << 16;

    /** The distributions drawn (see the class comment). */
    public enum Scheme {
        /** Unit-scale weights for tests and timing runs: projections N(0, 1/in), norms 1 + N(0, 0.1²). */
        TEST,
        /** Pretraining from scratch: N(0, 0.02²), residual outputs N(0, 0.02²/2L), norms 1, biases 0. */
        PRETRAIN;

        public static Scheme parse(String s) {
            for (Scheme x : values()) if (x.name().equalsIgnoreCase(s)) return x;
            throw new IllegalArgumentException("unknown init scheme '" + s + "' (test, pretrain)");
        }
    }

    /** The pretraining init's standard deviation (HF's {@code initializer_range} default). */
    public static final double INIT_STD = 0.02;

    /** The preset names, smallest first. */
    public static final String PRESET_NAMES = "tiny-1m, small-8m, base-30m";

    private final LlamaConfig config;
    private final long seed;
    private final Scheme scheme;
    private final Map<String, int[]> shapes = new LinkedHashMap<>();

    public RandomWeights(LlamaConfig config, long seed) { this(config, seed, Scheme.TEST); }

    public RandomWeights(LlamaConfig config, long seed, Scheme scheme) {
        this.config = config;
        this.seed = seed;
        this.scheme = java.util.Objects.requireNonNull(scheme, "scheme");
        int c = config.hiddenSize();
        shapes.put("model.embed_tokens.weight", new int[] {config.vocabSize(), c});
        for (int l = 0; l < config.numLayers(); l++) {
            shapes.put("model.layers." + l + ".input_layernorm.weight", new int[] {c});
            shapes.put("model.layers." + l + ".post_attention_layernorm.weight", new int[] {c});
            for (Projection p : Projection.values())
                shapes.put("model." + p.path(l) + ".weight", new int[] {p.outDim(config), p.inDim(config)});
            if (config.attentionBias())
                for (Projection p : new Projection[] {Projection.Q, Projection.K, Projection.V})
                    shapes.put("model." + p.path(l) + ".bias", new int[] {p.outDim(config)});
        }
        shapes.put("model.norm.weight", new int[] {c});
        if (!config.tieWordEmbeddings()) shapes.put("lm_head.weight", new int[] {config.vocabSize(), c});
    }

    /**
     * A Llama-architecture shape for pretraining from scratch, or null if {@code name} is none of
     * {@value #PRESET_NAMES}. Head dim 32 (tiny) or 64, SwiGLU width 4·C (3.5·C for base), full
     * multi-head attention, tied embeddings (at these widths an untied head would be most of the
     * model), RoPE θ 10000, RMSNorm ε 1e-5, 2048 positions. The vocabulary and special ids are the
     * tokenizer's, so they are arguments. Positions: 8192 (pretraining rows of 2k–8k tokens). Non-embedding parameters: tiny-1m 1.05M (C 128, 4 layers),
     * small-8m 8.4M (C 256, 8 layers), base-30m 30.4M (C 512, 8 layers).
     */
    public static LlamaConfig preset(String name, int vocabSize, int bosId, int eosId) {
        if (vocabSize < 1) throw new IllegalArgumentException("preset " + name + ": vocabulary size must be >= 1, got " + vocabSize);
        int[] s = switch (name) {         // hidden, intermediate, layers, heads
            case "tiny-1m" -> new int[] {128, 512, 4, 4};
            case "small-8m" -> new int[] {256, 1024, 8, 4};
            case "base-30m" -> new int[] {512, 1792, 8, 8};
            default -> null;
        };
        if (s == null) return null;
        return new LlamaConfig("LlamaForCausalLM", s[0], s[1], s[2], s[3], s[3], s[0] / s[3], vocabSize, 8192, 1e-5f, 10000f, null,
                true, false, bosId, eosId);
    }

    public Scheme scheme() { return scheme; }

    @Override public LlamaConfig config() { return config; }

    @Override public Set<String> names() { return shapes.keySet(); }

    @Override
    public HostTensor get(String name) {
        int[] shape = shapes.get(name);
        if (shape == null) throw new IllegalArgumentException("random weights (seed " + seed + "): no tensor named " + name);
        int n = 1;
        for (int d : shape) n *= d;
        SplittableRandom r = new SplittableRandom(streamSeed(name));
        MemorySegment seg = Arena.ofAuto().allocate((long) n * 4, 4);
        double[] ms = distribution(name, shape);
        double mean = ms[0], std = ms[1];
        if (std == 0) {   // PRETRAIN's norms and biases: constants, and exactly so (no −0 from 0·g)
            for (long i = 0; i < n; i++) seg.setAtIndex(LE, i, (float) mean);
            return new HostTensor(name, DType.F32, shape, seg);
        }
        // Chunks of CHUNK elements each draw from their own stream (split off in order), so the
        // values do not depend on how many threads fill them: an 8B-shape model fills in seconds.
        int chunks = (int) ((n + CHUNK - 1) / CHUNK);
        SplittableRandom[] streams = new SplittableRandom[chunks];
        for (int c = 0; c < chunks; c++) streams[c] = r.split();
        final int total = n;
        java.util.stream.IntStream.range(0, chunks).parallel().forEach(c -> {
            SplittableRandom rc = streams[c];
            int end = (int) Math.min(total, (long) (c + 1) * CHUNK);
            for (int i = c * CHUNK; i < end; i++) {
                double g = gaussian(rc);
                seg.setAtIndex(LE, i, (float) (mean + std * g));
            }
        });
        return new HostTensor(name, DType.F32, shape, seg);
    }

    /** The shape of a tensor of this config (HF name), or null. */
    public int[] shape(String name) {
        int[] s = shapes.get(name);
        return s == null ? null : s.clone();
    }

    /** The seed of a tensor's own stream: the same tensor gets the same values in any read order. */
    public long streamSeed(String name) {
        return seed ^ (name.hashCode() * 0x9E3779B97F4A7C15L);
    }

    /** {mean, std} of a tensor's normal distribution (see the class comment). */
    public float[] meanStd(String name) {
        int[] shape = shapes.get(name);
        if (shape == null) throw new IllegalArgumentException("random weights (seed " + seed + "): no tensor named " + name);
        double[] d = distribution(name, shape);
        return new float[] {(float) d[0], (float) d[1]};
    }

    /** {mean, std} in double (the host draw uses these exactly). */
    private double[] distribution(String name, int[] shape) {
        if (scheme == Scheme.PRETRAIN) {
            if (isNorm(name)) return new double[] {1, 0};
            if (name.endsWith(".bias")) return new double[] {0, 0};
            boolean residual = name.endsWith("o_proj.weight") || name.endsWith("down_proj.weight");
            return new double[] {0, residual ? INIT_STD / Math.sqrt(2.0 * config.numLayers()) : INIT_STD};
        }
        return new double[] {isNorm(name) ? 1 : 0, std(name, shape)};
    }

    private static boolean isNorm(String name) {
        return name.endsWith("layernorm.weight") || name.equals("model.norm.weight");
    }

    private double std(String name, int[] shape) {
        return isNorm(name) || name.endsWith(".bias") ? 0.1
                : name.contains("embed_tokens") && !config.tieWordEmbeddings() ? 1.0
                : 1.0 / Math.sqrt(shape[shape.length - 1]);
    }

    private static double gaussian(SplittableRandom r) {
        // Box–Muller; SplittableRandom has no nextGaussian of its own on every JDK level we target
        double u = 1 - r.nextDouble(), v = r.nextDouble();
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    }
}
