package org.sparselora.engine.generate;

import java.util.Arrays;
import java.util.SplittableRandom;
import java.util.function.IntConsumer;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaModel;

/**
 * Autoregressive generation with a KV cache on the model's backend: one prefill of the prompt, then
 * one token at a time with {@code attentionCached}. Greedy (temperature 0) or temperature + top-p
 * (nucleus) sampling from a seeded generator; stops at EOS (not emitted) or after maxNewTokens.
 * Works with or without a LoRA adapter (applied densely, no dropout).
 */
public final class Generator {

    /**
     * @param temperature 0 = greedy (argmax, ties to the lower id)
     * @param topP        nucleus mass in (0,1]; 1 = plain temperature sampling
     * @param eosId       stop token, or -1 for none
     */
    public record Options(int maxNewTokens, float temperature, float topP, long seed, int eosId) {
        public Options {
            if (maxNewTokens < 0) throw new IllegalArgumentException("max new tokens must be >= 0, got " + maxNewTokens);
            if (!(temperature >= 0)) throw new IllegalArgumentException("temperature must be >= 0, got " + temperature);
            if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("top-p must be in (0,1], got " + topP);
        }

        public static Options greedy(int maxNewTokens, int eosId) { return new Options(maxNewTokens, 0f, 1f, 0L, eosId); }
    }

    private final LlamaModel model;
    private final LoraAdapter lora;

    public Generator(LlamaModel model, LoraAdapter lora) {
        this.model = model;
        this.lora = lora;
    }

    /** Generated ids (without the prompt and without the EOS that stopped it). */
    public int[] generate(int[] prompt, Options o) { return generate(prompt, o, t -> {}); }

    /** As {@link #generate(int[], Options)}, handing each new token to {@code onToken} as it is produced. */
    public int[] generate(int[] prompt, Options o, IntConsumer onToken) {
        if (prompt.length == 0) throw new IllegalArgumentException("prompt must hold at least one token (e.g. BOS)");
        int maxT = Math.min(prompt.length + o.maxNewTokens(), Math.min(model.config().maxPositions(), 16384));
        if (prompt.length > maxT) throw new IllegalArgumentException("prompt of " + prompt.length + " tokens exceeds the model's " + maxT + " positions");
        int[] out = new int[o.maxNewTokens()];
        int n = 0;
        if (o.maxNewTokens() == 0) return out;
        SplittableRandom rnd = new SplittableRandom(o.seed());
        try (LlamaModel.KvCache cache = model.newKvCache(maxT)) {
            float[] logits = model.forwardCached(prompt, 0, cache, lora);
            int pos = prompt.length;
            while (true) {
                int next = pick(logits, o, rnd);
                if (next == o.eosId()) break;
                out[n++] = next;
                onToken.accept(next);
                if (n == o.maxNewTokens() || pos >= maxT) break;
                logits = model.forwardCached(new int[] {next}, pos++, cache, lora);
            }
        }
        return Arrays.copyOf(out, n);
    }

    static int pick(float[] logits, Options o, SplittableRandom rnd) {
        if (o.temperature() == 0f) return argmax(logits);
        int v = logits.length;
        double max = Double.NEGATIVE_INFINITY;
        for (float x : logits) max = Math.max(max, x);
        double[] p = new double[v];
        double sum = 0;
        for (int i = 0; i < v; i++) { p[i] = Math.exp((logits[i] - max) / o.temperature()); sum += p[i]; }
        for (int i = 0; i < v; i++) p[i] /= sum;
        if (o.topP() >= 1f) return sample(p, null, v, 1.0, rnd);
        Integer[] order = new Integer[v];
        for (int i = 0; i < v; i++) order[i] = i;
        Arrays.sort(order, (a, b) -> { int c = Double.compare(p[b], p[a]); return c != 0 ? c : Integer.compare(a, b); });
        int k = 0;
        double mass = 0;
        while (k < v && mass < o.topP()) mass += p[order[k++]];
        return sample(p, order, k, mass, rnd);
    }

    private static int sample(double[] p, Integer[] order, int k, double mass, SplittableRandom rnd) {
        double u = rnd.nextDouble() * mass, c = 0;
        for (int j = 0; j < k; j++) {
            int i = order == null ? j : order[j];
            c += p[i];
            if (u < c) return i;
        }
        return order == null ? k - 1 : order[k - 1];
    }

    static int argmax(float[] x) {
        int best = 0;
        for (int i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
