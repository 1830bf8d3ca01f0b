package org.sparselora.bench.cpu;

import java.util.EnumSet;
import java.util.Random;
import java.util.stream.IntStream;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.model.Batch;

/**
 * Shapes shared by the CPU benchmarks: the "frozen GEMMs dominate" model (hidden 512,
 * intermediate 1408, 4 layers, 8 heads over 4 KV heads, vocab 2048), a batch of 4×256 with 75%
 * context tokens, and a hand-built plan shaped like the published math10k config scaled to 4 layers
 * (first and last layers dense; MLP 0.99 at layers 1–2; attention 0.75 at layer 2). Channel choice
 * is random here — benchmarks time execution, the predictor's choice is not what they measure.
 */
public final class BenchModels {
    private BenchModels() {}

    public static LlamaConfig stepModel() {
        return new LlamaConfig("LlamaForCausalLM", 512, 1408, 4, 8, 4, 64, 2048, 2048, 1e-5f, 10000f, null, false, false, 1, 2);
    }

    public static LoraConfig lora() {
        return new LoraConfig(32, 64f, 0f, EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O), false, 7);
    }

    /** B sequences of T tokens, the first {@code contextFraction} of each without loss. */
    public static Batch batch(LlamaConfig c, int b, int t, double contextFraction, long seed) {
        Random r = new Random(seed);
        int n = b * t, ctx = (int) Math.round(t * contextFraction);
        int[] tokens = new int[n], targets = new int[n], pos = new int[n];
        for (int i = 0; i < n; i++) {
            tokens[i] = r.nextInt(c.vocabSize());
            pos[i] = i % t;
            targets[i] = i % t < ctx ? Batch.IGNORE : r.nextInt(c.vocabSize());
        }
        return new Batch(b, t, tokens, targets, pos, new int[b]);
    }

    /** MLP and attention sparsity per layer (0 = dense), math10k-shaped for 4 layers. */
    public static double[][] math10kScaled() {
        return new double[][] {{0, 0}, {0.99, 0}, {0.99, 0.75}, {0, 0}};
    }

    public static SparsePlan plan(Backend be, LlamaConfig c, Batch b, double[][] sparsity, SparsePlan.FrozenGrad fg, long seed) {
        Random r = new Random(seed);
        int[] ctx = IntStream.range(0, b.tokenCount()).filter(i -> b.targets()[i] == Batch.IGNORE).toArray();
        int[] out = IntStream.range(0, b.tokenCount()).filter(i -> b.targets()[i] != Batch.IGNORE).toArray();
        SparsePlan.LayerPlan[] layers = new SparsePlan.LayerPlan[c.numLayers()];
        int D = c.headDim(), group = c.numHeads() / c.numKvHeads();
        for (int l = 0; l < layers.length; l++) {
            double ms = sparsity[l][0], as = sparsity[l][1];
            var mlp = ms > 0 ? be.fromInts(pick(r, c.intermediateSize(), keep(c.intermediateSize(), ms)), keep(c.intermediateSize(), ms)) : null;
            org.sparselora.engine.backend.Tensor q = null, k = null, v = null, o = null;
            if (as > 0) {
                int kd = keep(D, as);
                int[] dq = pick(r, D, kd), dv = pick(r, D, kd);
                k = be.fromInts(perHead(dq, c.numKvHeads(), D), kd * c.numKvHeads());
                q = be.fromInts(perHead(dq, c.numHeads(), D), kd * c.numHeads());
                v = be.fromInts(perHead(dv, c.numKvHeads(), D), kd * c.numKvHeads());
                o = be.fromInts(perHead(dv, c.numHeads(), D), kd * c.numHeads());
                if (group < 1) throw new IllegalStateException();
            }
            layers[l] = mlp == null && q == null ? null : new SparsePlan.LayerPlan(mlp, q, k, v, o);
        }
        return new SparsePlan(be.fromInts(ctx, ctx.length), out.length == 0 ? null : be.fromInts(out, out.length), layers, fg);
    }

    static int keep(int dim, double sparsity) { return Math.max(1, (int) Math.floor(dim * (1 - sparsity))); }

    static int[] pick(Random r, int n, int k) {
        int[] all = IntStream.range(0, n).toArray();
        for (int i = 0; i < k; i++) { int j = i + r.nextInt(n - i); int t = all[i]; all[i] = all[j]; all[j] = t; }
        int[] s = java.util.Arrays.copyOf(all, k);
        java.util.Arrays.sort(s);
        return s;
    }

    static int[] perHead(int[] d, int heads, int headDim) {
        int[] out = new int[d.length * heads];
        for (int h = 0; h < heads; h++) for (int i = 0; i < d.length; i++) out[h * d.length + i] = h * headDim + d[i];
        return out;
    }
}
