package org.sparselora.engine.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Random;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.sparse.SparsityConfig;

/**
 * Tiny configs, batches and adapters for the model, sparse and trainer tests (each runs in
 * milliseconds), and the step-against-step comparison the model tests share (a training step and an
 * evaluation with a switch on, then off: same results up to rounding). Shipped in the engine's
 * test-jar: cuda-kernels' GPU tests build their batches and adapters here too.
 */
public final class TinyModels {
    private TinyModels() {}

    /** C=16, I=24, 2 layers, 4 query heads over 2 KV heads (GQA) of D=4, V=19. */
    public static LlamaConfig config(boolean tied, boolean bias, boolean llama3Rope) {
        return new LlamaConfig(bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM", 16, 24, 2, 4, 2, 4, 19, 64, 1e-5f, 10000f,
                llama3Rope ? new LlamaConfig.RopeScaling("llama3", 8f, 1f, 4f, 16) : null, tied, bias, 1, 2);
    }

    /**
     * Two left-padded sequences of T=7: sequence 0 unpadded, sequence 1 with 2 padding tokens; the
     * first {@code context} real tokens of each are prompt (target -100), the rest predict the next token.
     */
    public static Batch batch(LlamaConfig c, long seed, int context) {
        return batch(c, seed, 7, new int[] {0, 2}, context);
    }

    /**
     * Left-padded sequences of {@code seqLen} tokens, sequence s with {@code keyStart[s]} padding
     * tokens; the first {@code context} real tokens of each are prompt (target -100), the rest
     * predict a random next token.
     */
    public static Batch batch(LlamaConfig c, long seed, int seqLen, int[] keyStart, int context) {
        int b = keyStart.length, t = seqLen;
        Random r = new Random(seed);
        int[] tokens = new int[b * t], targets = new int[b * t], positions = new int[b * t];
        for (int s = 0; s < b; s++)
            for (int i = 0; i < t; i++) {
                int n = s * t + i;
                boolean pad = i < keyStart[s];
                tokens[n] = pad ? 0 : r.nextInt(c.vocabSize());
                positions[n] = pad ? 0 : i - keyStart[s];
                targets[n] = pad || i - keyStart[s] < context ? Batch.IGNORE : r.nextInt(c.vocabSize());
            }
        return new Batch(b, t, tokens, targets, positions, keyStart.clone());
    }

    /** All seven targets, r=2, alpha=3 (s=1.5), with B randomised so every A gradient is non-zero. */
    public static LoraAdapter adapter(Backend be, LlamaConfig c, float dropout, long seed) {
        return adapter(be, c, dropout, seed, EnumSet.allOf(Projection.class));
    }

    /** {@link #adapter(Backend, LlamaConfig, float, long)} on the given targets only. */
    public static LoraAdapter adapter(Backend be, LlamaConfig c, float dropout, long seed, EnumSet<Projection> targets) {
        return adapter(be, c, dropout, seed, targets, dropout == 0f);
    }

    /** {@link #adapter(Backend, LlamaConfig, float, long, EnumSet)} with the fused layout on or off (same values either way). */
    public static LoraAdapter adapter(Backend be, LlamaConfig c, float dropout, long seed, EnumSet<Projection> targets, boolean fused) {
        return adapter(be, c, new LoraConfig(2, 3f, dropout, targets, false, seed), 0.3, fused);
    }

    /** An adapter of {@code cfg} whose B matrices are N(0, bStd²) (seeded by cfg's seed), so every A gradient is non-zero. */
    public static LoraAdapter adapter(Backend be, LlamaConfig c, LoraConfig cfg, double bStd) {
        return adapter(be, c, cfg, bStd, cfg.dropout() == 0f);
    }

    /** {@link #adapter(Backend, LlamaConfig, LoraConfig, double)} with the fused LoRA layout on or off (same values either way). */
    public static LoraAdapter adapter(Backend be, LlamaConfig c, LoraConfig cfg, double bStd, boolean fused) {
        LoraAdapter a = new LoraAdapter(be, c, cfg, fused);
        Random r = new Random(cfg.seed() + 1);
        for (int i = 0; i < a.params().size(); i++) {
            Tensor t = a.params().get(i);
            if (!a.names().get(i).contains("lora_B")) continue;
            float[] x = new float[(int) t.numel()];
            for (int j = 0; j < x.length; j++) x[j] = (float) (r.nextGaussian() * bStd);
            be.copyFromHost(t, x);
        }
        a.syncComputeCopies(); // B was written directly
        return a;
    }

    public static LlamaModel model(Backend be, LlamaConfig c, long seed) {
        return new LlamaModel(be, LlamaWeights.upload(be, new RandomWeights(c, seed)));
    }

    public static Tensor ints(Backend be, int... v) { return be.fromInts(v, v.length); }

    /** Host copies of tensors (an adapter's gradients or parameters), in order. */
    public static List<float[]> host(Backend be, List<Tensor> ts) {
        List<float[]> out = new ArrayList<>();
        for (Tensor t : ts) out.add(be.toFloats(t));
        return out;
    }

    /**
     * SparseLoRA on both layers of a 2-layer tiny model from step 0 (svd_4; MLP 0.5 then 0.75,
     * attention 0.5), plus {@code extra} YAML lines; {@code name} names it in errors.
     */
    public static SparsityConfig sparsity(String extra, String name) {
        return SparsityConfig.parse("""
                start_step: 0
                mode: svd_4
                sparsity:
                  layers.0.mlp: 0.5
                  layers.0.self_attn: 0.5
                  layers.1.mlp: 0.75
                  layers.1.self_attn: 0.5
                """ + extra, name);
    }

    static Tensor f32(Backend be, float[] v) { return be.fromFloats(v, DType.F32, v.length); }

    /** One training step's loss and LoRA gradients (host copies), and the evaluation loss sum of the same batch. */
    record StepRun(double loss, List<float[]> grads, double eval) {
        /** This step with the evaluation loss sum e. */
        StepRun withEval(double e) { return new StepRun(loss, grads, e); }
    }

    /** lora's gradients zeroed, then forward + backward of b under plan: the loss and gradients (eval NaN until withEval). */
    static StepRun trainStep(Backend be, LlamaModel m, Batch b, LoraAdapter lora, SparsePlan plan, long dropoutSeed) {
        lora.zeroGrads();
        double loss = m.forward(b, lora, plan, dropoutSeed);
        m.backward();
        return new StepRun(loss, host(be, lora.grads()), Double.NaN);
    }

    /**
     * got agrees with want within rel: the loss and the evaluation loss relative to want's, each
     * gradient (named by names, in order) in relative L2 ({@link #assertRelL2}).
     */
    static void assertSameStep(StepRun want, StepRun got, List<String> names, double rel, String what) {
        assertEquals(want.loss(), got.loss(), rel * Math.abs(want.loss()), "loss, " + what);
        assertEquals(want.eval(), got.eval(), rel * Math.abs(want.eval()), "evaluate, " + what);
        for (int i = 0; i < want.grads().size(); i++) assertRelL2(want.grads().get(i), got.grads().get(i), rel, names.get(i) + " " + what);
    }

    /** ‖got − want‖ / ‖want‖ ≤ rel (the absolute norm when want is all zero). */
    static void assertRelL2(float[] want, float[] got, double rel, String what) {
        double num = 0, den = 0;
        for (int i = 0; i < want.length; i++) {
            double d = got[i] - want[i];
            num += d * d;
            den += (double) want[i] * want[i];
        }
        double e = den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
        assertTrue(e <= rel, what + ": relative difference " + e + " > " + rel);
    }
}
