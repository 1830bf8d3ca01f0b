package org.sparselora.engine.generate;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaModel;

/**
 * {@link Generator} for many prompts at once: the prompts are left-padded to one length and decoded
 * in lockstep against one batched KV cache ({@link LlamaModel#forwardCachedBatch}), so a step is one
 * forward (one launch per op on a device) for every sequence. Each sequence picks its own tokens —
 * greedy, or temperature + top-p from its own seeded generator — and stops at EOS (not emitted) or
 * its budget; a finished sequence's output no longer grows, its row leaves the batch once a quarter
 * of the rows have finished, and the loop ends when none is left.
 * A sequence's budget is the options' maxNewTokens, capped (as in Generator) by the positions left
 * after its own prompt. Each result carries the log-probability of its tokens under the model
 * (softmax of the raw logits, whatever the sampling temperature), which ranks candidates;
 * {@link #score} gives the same for given continuations in one forward.
 */
public final class BatchGenerator {
    /**
     * Default slots per prefill forward: a long batched prompt is run in chunks of this many slots so
     * that its activations (chunk·B rows) stay bounded; decoding is not affected.
     */
    public static final int PREFILL_CHUNK = 512;

    /**
     * One sequence's output.
     *
     * @param ids           generated ids, without the prompt and without the EOS that stopped it
     * @param logProb       Σ log p over the generated tokens: {@code ids}, then the EOS that stopped it
     *                      (the sequence's chance of being exactly this answer)
     * @param stoppedAtEos  whether EOS ended it (false: it ran out of budget or positions)
     */
    public record Result(int[] ids, double logProb, boolean stoppedAtEos) {
        /** Tokens that logProb sums over: ids, and the EOS when it stopped there. */
        public int scoredTokens() { return ids.length + (stoppedAtEos ? 1 : 0); }

        /** logProb per scored token (0 when none). */
        public double meanLogProb() { return scoredTokens() == 0 ? 0 : logProb / scoredTokens(); }
    }

    private final LlamaModel model;
    private final LoraAdapter lora;
    private final int prefillChunk;

    public BatchGenerator(LlamaModel model, LoraAdapter lora) { this(model, lora, PREFILL_CHUNK); }

    /** @param prefillChunk slots per prefill forward (see {@link #PREFILL_CHUNK}) */
    public BatchGenerator(LlamaModel model, LoraAdapter lora, int prefillChunk) {
        if (prefillChunk <= 0) throw new IllegalArgumentException("prefill chunk must be > 0, got " + prefillChunk);
        this.model = model;
        this.lora = lora;
        this.prefillChunk = prefillChunk;
    }

    /**
     * Generates for every prompt with the same options; sequence b samples from its own generator
     * seeded {@code o.seed() + b} (so sequence 0 draws what {@link Generator} draws with that seed).
     */
    public List<Result> generate(List<int[]> prompts, Generator.Options o) { return generate(prompts, o, null); }

    /**
     * {@link #generate(List, Generator.Options)} with a budget per sequence: sequence b generates at
     * most {@code maxNewTokens[b]} tokens (null: the options' for all).
     */
    public List<Result> generate(List<int[]> prompts, Generator.Options o, int[] maxNewTokens) {
        int B = prompts.size();
        if (maxNewTokens != null && maxNewTokens.length != B)
            throw new IllegalArgumentException(maxNewTokens.length + " budgets for " + B + " prompts");
        if (B == 0) return List.of();
        // Generator's position limit per sequence: tokens are fed up to position cap − 1 and one more is
        // picked from the last, so cap − len + 1; slots add the left padding on top of positions
        int cap = Math.min(model.config().maxPositions(), 16384), L = 0, maxBudget = 0;
        int[] budget = new int[B];
        for (int b = 0; b < B; b++) {
            int len = prompts.get(b).length;
            if (len == 0) throw new IllegalArgumentException("prompt " + b + " must hold at least one token (e.g. BOS)");
            if (len > cap) throw new IllegalArgumentException("prompt " + b + " of " + len + " tokens exceeds the model's " + cap + " positions");
            int want = maxNewTokens == null ? o.maxNewTokens() : maxNewTokens[b];
            if (want < 0) throw new IllegalArgumentException("max new tokens of prompt " + b + " must be >= 0, got " + want);
            budget[b] = Math.min(want, cap - len + 1);
            L = Math.max(L, len);
            maxBudget = Math.max(maxBudget, budget[b]);
        }
        int[][] out = new int[B][];
        int[] count = new int[B];
        double[] logProb = new double[B];
        boolean[] eos = new boolean[B], done = new boolean[B];
        for (int b = 0; b < B; b++) out[b] = new int[budget[b]];
        if (maxBudget == 0) return results(out, count, logProb, eos);
        int[] keyStart = new int[B];
        int[][] padded = new int[B][L];
        SplittableRandom[] rnd = new SplittableRandom[B];
        for (int b = 0; b < B; b++) {
            int[] p = prompts.get(b);
            keyStart[b] = L - p.length;
            System.arraycopy(p, 0, padded[b], keyStart[b], p.length); // padding ids are 0: masked, never read
            rnd[b] = new SplittableRandom(o.seed() + b);
        }
        int V = model.config().vocabSize();
        // the last token is picked, not fed: L + maxBudget − 1 slots are written
        LlamaModel.BatchKvCache cache = model.newBatchKvCache(keyStart, L + maxBudget - 1);
        try {
            float[] logits = null;
            for (int s = 0; s < L; s += prefillChunk) {
                int e = Math.min(L, s + prefillChunk);
                int[][] chunk = new int[B][];
                for (int b = 0; b < B; b++) chunk[b] = Arrays.copyOfRange(padded[b], s, e);
                logits = model.forwardCachedBatch(chunk, s, cache, lora);
            }
            int pos = L;
            int[] live = new int[B], last = new int[B]; // cache row j holds sequence live[j]
            for (int b = 0; b < B; b++) live[b] = b;
            while (true) {
                int left = 0;
                for (int j = 0; j < live.length; j++) {
                    int b = live[j];
                    if (done[b]) continue;
                    float[] row = Arrays.copyOfRange(logits, j * V, (j + 1) * V);
                    int id = Generator.pick(row, o, rnd[b]);
                    logProb[b] += logSoftmax(row, id);
                    if (id == o.eosId()) {
                        eos[b] = done[b] = true;
                    } else {
                        out[b][count[b]++] = id;
                        last[b] = id;
                        done[b] = count[b] == budget[b];
                    }
                    if (!done[b]) left++;
                }
                if (left == 0) break;
                if (left <= live.length * 3 / 4) {
                    // a quarter or more of the rows have finished: drop them from the cache, so later
                    // steps stop computing them (one gather of the cache per layer, paid once)
                    int[] keepRows = new int[left], keepSeqs = new int[left];
                    for (int j = 0, k = 0; j < live.length; j++)
                        if (!done[live[j]]) { keepRows[k] = j; keepSeqs[k++] = live[j]; }
                    LlamaModel.BatchKvCache kept = cache.keep(keepRows, pos);
                    cache.close();
                    cache = kept;
                    live = keepSeqs;
                }
                int[][] next = new int[live.length][1];
                for (int j = 0; j < live.length; j++) next[j][0] = done[live[j]] ? LlamaModel.NO_TOKEN : last[live[j]]; // a finished row runs, unread
                logits = model.forwardCachedBatch(next, pos++, cache, lora);
            }
        } finally {
            cache.close();
        }
        return results(out, count, logProb, eos);
    }

    private static List<Result> results(int[][] out, int[] count, double[] logProb, boolean[] eos) {
        List<Result> r = new ArrayList<>(out.length);
        for (int b = 0; b < out.length; b++) r.add(new Result(Arrays.copyOf(out[b], count[b]), logProb[b], eos[b]));
        return r;
    }

    /** log softmax(x)[i], in double. */
    static double logSoftmax(float[] x, int i) {
        double max = Double.NEGATIVE_INFINITY, sum = 0;
        for (float v : x) max = Math.max(max, v);
        for (float v : x) sum += Math.exp(v - max);
        return x[i] - max - Math.log(sum);
    }

    /**
     * Σ log p(continuation[b] | prompt[b]) for every pair, in one left-padded forward without a cache
     * (the model's evaluation path). A continuation may be empty (0).
     */
    public double[] score(List<int[]> prompts, List<int[]> continuations) {
        int B = prompts.size();
        if (continuations.size() != B) throw new IllegalArgumentException(B + " prompts but " + continuations.size() + " continuations");
        if (B == 0) return new double[0];
        int T = 0;
        for (int b = 0; b < B; b++) {
            if (prompts.get(b).length == 0) throw new IllegalArgumentException("prompt " + b + " must hold at least one token (e.g. BOS)");
            T = Math.max(T, prompts.get(b).length + continuations.get(b).length);
        }
        // the last token predicts nothing: drop it, so T − 1 positions carry every target
        int S = Math.max(1, T - 1);
        int[] tokens = new int[B * S], targets = new int[B * S], positions = new int[B * S], keyStart = new int[B];
        Arrays.fill(targets, Batch.IGNORE);
        for (int b = 0; b < B; b++) {
            int[] p = prompts.get(b), c = continuations.get(b);
            int len = p.length + c.length, ks = S - (len - 1);
            keyStart[b] = Math.max(0, ks);
            for (int t = 0; t < len - 1; t++) {
                int i = b * S + ks + t;
                tokens[i] = t < p.length ? p[t] : c[t - p.length];
                positions[i] = t;
                if (t + 1 >= p.length) targets[i] = c[t + 1 - p.length];
            }
            if (len == 1) { tokens[b * S + S - 1] = p[0]; keyStart[b] = S - 1; } // a lone prompt token, nothing to score
        }
        LlamaModel.Output o = model.evaluate(new Batch(B, S, tokens, targets, positions, keyStart), lora, null, false);
        double[] r = new double[B];
        for (int b = 0; b < B; b++)
            for (int t = 0; t < S; t++) if (targets[b * S + t] != Batch.IGNORE) r[b] -= o.tokenLosses()[b * S + t];
        return r;
    }
}
