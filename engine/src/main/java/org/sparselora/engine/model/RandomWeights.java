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
 */
public final class RandomWeights implements WeightSource {
    private static final ValueLayout.OfFloat LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private static final int CHUNK = 1 << 16;

    private final LlamaConfig config;
    private final long seed;
    private final Map<String, int[]> shapes = new LinkedHashMap<>();

    public RandomWeights(LlamaConfig config, long seed) {
        this.config = config;
        this.seed = seed;
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
        boolean norm = isNorm(name);
        double std = std(name, shape);
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
                seg.setAtIndex(LE, i, (float) (norm ? 1 + 0.1 * g : std * g));
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
        return new float[] {isNorm(name) ? 1f : 0f, (float) std(name, shape)};
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
