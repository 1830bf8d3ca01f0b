package org.sparselora.engine.generate;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.TinyModels;

/**
 * Batched generation against the one-sequence {@link Generator}, row by row: left-padded prompts of
 * different lengths, with and without LoRA, with a sliding window, chunked prefill; a batch of one
 * is the old path bit for bit; log-probabilities agree with an independent recomputation and with
 * {@link BatchGenerator#score}; EOS and budgets end rows independently (and finished rows leave the
 * cache: those tests compare the rows that stay against Generator after the cache is compacted).
 */
class BatchGeneratorTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    static final List<int[]> PROMPTS = List.of(new int[] {1, 5, 7}, new int[] {1}, new int[] {1, 2, 3, 4, 5, 6, 7}, new int[] {3, 9});

    /** Every row of the batch equals Generator on its prompt alone (greedy). */
    static void checkGreedyRows(LlamaModel m, LoraAdapter lora, int prefillChunk, String what) {
        var o = Generator.Options.greedy(10, -1);
        List<BatchGenerator.Result> got = new BatchGenerator(m, lora, prefillChunk).generate(PROMPTS, o);
        assertEquals(PROMPTS.size(), got.size());
        for (int b = 0; b < PROMPTS.size(); b++) {
            int[] want = new Generator(m, lora).generate(PROMPTS.get(b), o);
            assertArrayEquals(want, got.get(b).ids(), what + ": row " + b);
            assertFalse(got.get(b).stoppedAtEos());
        }
    }

    @Test
    void greedyRowsEqualTheOneSequenceGenerator() {
        for (boolean withLora : new boolean[] {false, true}) {
            LlamaConfig c = TinyModels.config(false, true, true);
            LlamaModel m = TinyModels.model(be, c, 11);
            LoraAdapter lora = withLora ? TinyModels.adapter(be, c, 0f, 3) : null;
            checkGreedyRows(m, lora, BatchGenerator.PREFILL_CHUNK, "lora=" + withLora);
            checkGreedyRows(m, lora, 3, "prefill in chunks of 3, lora=" + withLora);
        }
    }

    @Test
    void greedyRowsWithASlidingWindow() {
        LlamaConfig c = TinyModels.config(false, false, false).withSlidingWindow(3);
        LlamaModel m = TinyModels.model(be, c, 12);
        checkGreedyRows(m, TinyModels.adapter(be, c, 0f, 4), 2, "window 3");
    }

    @Test
    void aBatchOfOneIsTheOldPathBitForBit() {
        LlamaConfig c = TinyModels.config(true, true, false);
        LlamaModel m = TinyModels.model(be, c, 13);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 5);
        int[] prompt = {1, 4, 9, 2, 6};
        try (LlamaModel.KvCache one = m.newKvCache(12); LlamaModel.BatchKvCache batch = m.newBatchKvCache(new int[] {0}, 12)) {
            float[] a = m.forwardCached(prompt, 0, one, lora), b = m.forwardCachedBatch(new int[][] {prompt}, 0, batch, lora);
            assertArrayEquals(a, b, "prefill logits");
            for (int p = prompt.length; p < 12; p++) {
                int next = Generator.argmax(a);
                a = m.forwardCached(new int[] {next}, p, one, lora);
                b = m.forwardCachedBatch(new int[][] {{next}}, p, batch, lora);
                assertArrayEquals(a, b, "step at " + p);
            }
        }
    }

    @Test
    void logProbsAreTheModelsAndScoreAgrees() {
        LlamaConfig c = TinyModels.config(false, true, false);
        LlamaModel m = TinyModels.model(be, c, 14);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 6);
        var o = new Generator.Options(8, 1.3f, 0.95f, 99, -1); // sampled: the log-probs are of the raw logits all the same
        BatchGenerator g = new BatchGenerator(m, lora);
        List<BatchGenerator.Result> got = g.generate(PROMPTS, o);
        double[] scored = g.score(PROMPTS, got.stream().map(BatchGenerator.Result::ids).toList());
        for (int b = 0; b < PROMPTS.size(); b++) {
            // sequence b samples what Generator samples with seed + b
            var ob = new Generator.Options(8, 1.3f, 0.95f, 99 + b, -1);
            int[] ids = got.get(b).ids();
            assertArrayEquals(new Generator(m, lora).generate(PROMPTS.get(b), ob), ids, "sampled row " + b);
            // Σ log softmax over the one-sequence path's logits
            double want = 0;
            try (LlamaModel.KvCache kv = m.newKvCache(PROMPTS.get(b).length + ids.length)) {
                float[] logits = m.forwardCached(PROMPTS.get(b), 0, kv, lora);
                for (int t = 0; t < ids.length; t++) {
                    want += BatchGenerator.logSoftmax(logits, ids[t]);
                    if (t + 1 < ids.length) logits = m.forwardCached(new int[] {ids[t]}, PROMPTS.get(b).length + t, kv, lora);
                }
            }
            assertEquals(want, got.get(b).logProb(), 1e-9 * Math.max(1, Math.abs(want)), "log-prob row " + b);
            assertEquals(want / ids.length, got.get(b).meanLogProb(), 1e-9 * Math.max(1, Math.abs(want)));
            assertTrue(want < 0);
            // the uncached, left-padded evaluation forward gives the same numbers to float precision
            assertEquals(want, scored[b], 1e-4 * Math.max(1, Math.abs(want)), "score row " + b);
        }
    }

    @Test
    void rowsStopAtEosOrTheirBudgetIndependently() {
        LlamaConfig c = TinyModels.config(true, false, false);
        LlamaModel m = TinyModels.model(be, c, 12);
        int[] greedy1 = new Generator(m, null).generate(PROMPTS.get(1), Generator.Options.greedy(10, -1));
        int eos = greedy1[3];
        var o = Generator.Options.greedy(10, eos);
        List<BatchGenerator.Result> got = new BatchGenerator(m, null).generate(PROMPTS, o);
        boolean anyEos = false;
        for (int b = 0; b < PROMPTS.size(); b++) {
            int[] want = new Generator(m, null).generate(PROMPTS.get(b), o);
            assertArrayEquals(want, got.get(b).ids(), "row " + b);
            assertEquals(want.length < 10, got.get(b).stoppedAtEos(), "row " + b + " stopped at EOS");
            anyEos |= got.get(b).stoppedAtEos();
        }
        assertTrue(anyEos && got.get(1).ids().length <= 3, "row 1 stops at its EOS");
        // the log-prob counts the EOS that stopped a row: the teacher-forced score of ids + EOS
        List<int[]> withEos = got.stream().map(r -> r.stoppedAtEos() ? append(r.ids(), eos) : r.ids()).toList();
        double[] scored = new BatchGenerator(m, null).score(PROMPTS, withEos);
        for (int b = 0; b < PROMPTS.size(); b++) {
            assertEquals(scored[b], got.get(b).logProb(), 1e-4 * Math.max(1, Math.abs(scored[b])), "log-prob with EOS, row " + b);
            assertEquals(withEos.get(b).length, got.get(b).scoredTokens());
        }
        // a zero budget, and an empty prompt is one clear error
        assertEquals(0, new BatchGenerator(m, null).generate(PROMPTS, Generator.Options.greedy(0, -1)).get(0).ids().length);
        var e = assertThrows(IllegalArgumentException.class, () -> new BatchGenerator(m, null).generate(List.of(new int[] {1}, new int[0]), o));
        assertTrue(e.getMessage().contains("prompt 1"), e.getMessage());
        assertEquals(0, new BatchGenerator(m, null).score(List.of(new int[] {1, 2}), List.of(new int[0]))[0]);
        assertArrayEquals(new double[0], new BatchGenerator(m, null).score(List.of(), List.of()));
        assertTrue(Arrays.stream(new BatchGenerator(m, null).score(PROMPTS, PROMPTS)).allMatch(x -> x < 0));
    }

    @Test
    void budgetsFollowEachSequencesOwnRoomInThePositions() {
        // 64 positions: the long prompt has room for 4 tokens (fed at positions 61..63, the last one
        // only picked), the short one for all 10, so the slots (61 + 9) pass the RoPE table while every
        // position stays inside it
        LlamaConfig c = TinyModels.config(false, true, true);
        LlamaModel m = TinyModels.model(be, c, 15);
        assertEquals(64, c.maxPositions());
        int[] longPrompt = new int[61];
        for (int i = 0; i < longPrompt.length; i++) longPrompt[i] = 1 + i % 17;
        List<int[]> prompts = List.of(longPrompt, new int[] {1, 8});
        var o = Generator.Options.greedy(10, -1);
        List<BatchGenerator.Result> got = new BatchGenerator(m, null, 16).generate(prompts, o);
        assertEquals(4, got.get(0).ids().length);
        assertEquals(10, got.get(1).ids().length);
        for (int b = 0; b < 2; b++) assertArrayEquals(new Generator(m, null).generate(prompts.get(b), o), got.get(b).ids(), "row " + b);
        // budgets per sequence
        List<BatchGenerator.Result> own = new BatchGenerator(m, null).generate(prompts, o, new int[] {2, 5});
        assertArrayEquals(Arrays.copyOf(got.get(0).ids(), 2), own.get(0).ids());
        assertArrayEquals(Arrays.copyOf(got.get(1).ids(), 5), own.get(1).ids());
        assertThrows(IllegalArgumentException.class, () -> new BatchGenerator(m, null).generate(prompts, o, new int[] {2}));
    }

    static int[] append(int[] a, int x) {
        int[] r = Arrays.copyOf(a, a.length + 1);
        r[a.length] = x;
        return r;
    }
}
