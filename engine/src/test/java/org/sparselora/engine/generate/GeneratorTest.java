package org.sparselora.engine.generate;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.TinyModels;
import org.sparselora.engine.model.Batch;

/** KV-cached generation against re-running the whole sequence, with and without LoRA; sampling rules. */
class GeneratorTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    /** Greedy next tokens by re-running the full (uncached) forward on the growing sequence. */
    static int[] referenceGreedy(LlamaModel m, LoraAdapter lora, int[] prompt, int n) {
        int[] seq = Arrays.copyOf(prompt, prompt.length + n);
        int V = m.config().vocabSize();
        for (int s = 0; s < n; s++) {
            int t = prompt.length + s;
            int[] pos = new int[t], tg = new int[t];
            for (int i = 0; i < t; i++) pos[i] = i;
            Arrays.fill(tg, Batch.IGNORE);
            float[] logits = m.evaluate(new Batch(1, t, Arrays.copyOf(seq, t), tg, pos, new int[] {0}), lora, null, true).logits();
            seq[t] = Generator.argmax(Arrays.copyOfRange(logits, (t - 1) * V, t * V));
        }
        return Arrays.copyOfRange(seq, prompt.length, prompt.length + n);
    }

    @Test
    void cachedGreedyEqualsFullRecompute() {
        for (boolean withLora : new boolean[] {false, true}) {
            LlamaConfig c = TinyModels.config(false, true, true);
            LlamaModel m = TinyModels.model(be, c, 11);
            LoraAdapter lora = withLora ? TinyModels.adapter(be, c, 0.2f, 3) : null; // dropout is never applied here
            int[] prompt = {1, 5, 7};
            int[] got = new Generator(m, lora).generate(prompt, Generator.Options.greedy(12, -1));
            assertArrayEquals(referenceGreedy(m, lora, prompt, 12), got, "lora=" + withLora);
        }
    }

    @Test
    void cachedGreedyWithASlidingWindowEqualsFullRecompute() {
        // window 3 < prompt + 12 new tokens: the KV-cache path must drop the same keys as the full forward
        LlamaConfig c = TinyModels.config(false, false, false).withSlidingWindow(3);
        LlamaModel m = TinyModels.model(be, c, 12);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 4);
        int[] prompt = {1, 5, 7, 2, 9};
        int[] got = new Generator(m, lora).generate(prompt, Generator.Options.greedy(12, -1));
        assertArrayEquals(referenceGreedy(m, lora, prompt, 12), got);
    }

    @Test
    void stopsAtEosAndSamplingIsSeeded() {
        LlamaConfig c = TinyModels.config(true, false, false);
        LlamaModel m = TinyModels.model(be, c, 12);
        Generator g = new Generator(m, null);
        int[] greedy = g.generate(new int[] {1}, Generator.Options.greedy(10, -1));
        int[] stopped = g.generate(new int[] {1}, Generator.Options.greedy(10, greedy[3]));
        int first = 0;
        while (greedy[first] != greedy[3]) first++;
        assertArrayEquals(Arrays.copyOf(greedy, first), stopped, "stops before the first EOS, which is not emitted");
        var o = new Generator.Options(15, 1.5f, 0.9f, 77, -1);
        assertArrayEquals(g.generate(new int[] {1, 2}, o), g.generate(new int[] {1, 2}, o));
        // a tiny nucleus is greedy
        assertArrayEquals(greedy, g.generate(new int[] {1}, new Generator.Options(10, 1f, 1e-6f, 5, -1)));
    }

    @Test
    void topPSamplesOnlyFromTheNucleus() {
        float[] logits = {2f, 1f, 0f, -5f};
        // p ≈ 0.66, 0.24, 0.09, 0.0006: top-p 0.8 keeps ids 0 and 1
        SplittableRandom r = new SplittableRandom(1);
        int[] counts = new int[4];
        for (int i = 0; i < 4000; i++) counts[Generator.pick(logits, new Generator.Options(1, 1f, 0.8f, 0, -1), r)]++;
        assertEquals(0, counts[2] + counts[3]);
        assertTrue(counts[0] > 2 * counts[1] && counts[1] > 600, Arrays.toString(counts));
    }
}
