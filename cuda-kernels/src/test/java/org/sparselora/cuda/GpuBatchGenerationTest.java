package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.generate.BatchGenerator;
import org.sparselora.engine.generate.Generator;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.model.TinyModels;

/**
 * Batched generation on the GPU: the batched cached forward (left-padded prompts of different
 * lengths, LoRA on every projection, GQA) against the one-sequence forward on the GPU row by row
 * and against the same batch on CpuBackend, teacher-forced so that bf16 near-ties cannot make the
 * paths diverge; the cache compaction (finished rows dropped by a row gather) against the uncompacted
 * cache; and BatchGenerator end to end. Tolerance: 2e-2 relative per logits row (bf16 activations).
 */
@Tag("gpu")
class GpuBatchGenerationTest {
    // C=64, I=96, 2 layers, 4 query heads over 2 KV heads of D=16, V=67, 128 positions
    static final LlamaConfig C = new LlamaConfig("LlamaForCausalLM", 64, 96, 2, 4, 2, 16, 67, 128, 1e-5f, 10000f,
            null, false, false, 1, 2);
    static final double TOL = 2e-2;
    static final int[][] PROMPTS = {{1, 5, 7, 9, 11}, {1, 3}, {1, 2, 4, 8, 16, 32, 64, 6}};
    static final int[][] FED = {{10, 20, 30, 40}, {11, 21, 31, 41}, {12, 22, 32, 42}}; // tokens fed after the prompts

    static GpuBackend gpu;
    static CpuBackend cpu;

    @BeforeAll
    static void setUp() {
        if (!Gpu.available()) fail("GPU tests need a CUDA GPU: " + Gpu.reason());
        gpu = GpuBackend.create(0);
        cpu = new CpuBackend(2);
    }

    @AfterAll
    static void tearDown() {
        if (gpu != null) gpu.close();
        if (cpu != null) cpu.close();
    }

    static LlamaModel model(Backend be) { return new LlamaModel(be, LlamaWeights.upload(be, new RandomWeights(C, 31))); }

    static LoraAdapter adapter(Backend be) {
        return TinyModels.adapter(be, C, new LoraConfig(4, 8f, 0f, EnumSet.allOf(Projection.class), false, 5), 0.2, true);
    }

    static int maxLen() { return Arrays.stream(PROMPTS).mapToInt(p -> p.length).max().orElseThrow(); }

    static int[] keyStart() {
        int L = maxLen();
        return Arrays.stream(PROMPTS).mapToInt(p -> L - p.length).toArray();
    }

    /** Logits (B, V) of the prefill and of each fed step, through forwardCachedBatch. */
    static float[][] batched(LlamaModel m, LoraAdapter lora) {
        int B = PROMPTS.length, L = maxLen(), steps = FED[0].length;
        int[] ks = keyStart();
        int[][] padded = new int[B][L];
        for (int b = 0; b < B; b++) System.arraycopy(PROMPTS[b], 0, padded[b], ks[b], PROMPTS[b].length);
        float[][] out = new float[steps + 1][];
        try (LlamaModel.BatchKvCache cache = m.newBatchKvCache(ks, L + steps)) {
            out[0] = m.forwardCachedBatch(padded, 0, cache, lora);
            for (int s = 0; s < steps; s++) {
                int[][] next = new int[B][1];
                for (int b = 0; b < B; b++) next[b][0] = FED[b][s];
                out[s + 1] = m.forwardCachedBatch(next, L + s, cache, lora);
            }
        }
        return out;
    }

    static float[] row(float[] logits, int b) { return Arrays.copyOfRange(logits, b * C.vocabSize(), (b + 1) * C.vocabSize()); }

    static void close(String what, float[] got, float[] want) {
        double e = GpuOpsTestSupport.relErr(got, want);
        System.out.printf("  %-44s rel err %.2e%n", what, e);
        assertTrue(e <= TOL, what + ": relative error " + e + " > " + TOL);
    }

    @Test
    void batchedForwardMatchesOneSequenceAtATimeAndTheCpu() {
        LlamaModel gm = model(gpu), cm = model(cpu);
        LoraAdapter gl = adapter(gpu), cl = adapter(cpu);
        float[][] g = batched(gm, gl), c = batched(cm, cl);
        for (int b = 0; b < PROMPTS.length; b++) {
            try (LlamaModel.KvCache one = gm.newKvCache(PROMPTS[b].length + FED[b].length)) {
                float[] alone = gm.forwardCached(PROMPTS[b], 0, one, gl);
                close("prefill row " + b + " vs alone (GPU)", row(g[0], b), alone);
                for (int s = 0; s < FED[b].length; s++) {
                    alone = gm.forwardCached(new int[] {FED[b][s]}, PROMPTS[b].length + s, one, gl);
                    close("step " + s + " row " + b + " vs alone (GPU)", row(g[s + 1], b), alone);
                }
            }
            for (int s = 0; s < g.length; s++) close("step " + s + " row " + b + " vs CPU", row(g[s], b), row(c[s], b));
        }
    }

    @Test
    void droppingFinishedRowsKeepsTheOthersLogits() {
        LlamaModel m = model(gpu);
        LoraAdapter lora = adapter(gpu);
        int B = PROMPTS.length, L = maxLen();
        int[] ks = keyStart();
        int[][] padded = new int[B][L];
        for (int b = 0; b < B; b++) System.arraycopy(PROMPTS[b], 0, padded[b], ks[b], PROMPTS[b].length);
        try (LlamaModel.BatchKvCache cache = m.newBatchKvCache(ks, L + 2)) {
            m.forwardCachedBatch(padded, 0, cache, lora);
            float[] all = m.forwardCachedBatch(new int[][] {{FED[0][0]}, {FED[1][0]}, {FED[2][0]}}, L, cache, lora);
            try (LlamaModel.BatchKvCache kept = cache.keep(new int[] {2, 0}, L)) {
                float[] two = m.forwardCachedBatch(new int[][] {{FED[2][0]}, {FED[0][0]}}, L, kept, lora);
                close("kept row 2", row(two, 0), row(all, 2));
                close("kept row 0", row(two, 1), row(all, 0));
            }
        }
    }

    @Test
    void batchGeneratorRunsEndToEnd() {
        LlamaModel m = model(gpu);
        LoraAdapter lora = adapter(gpu);
        List<int[]> prompts = Arrays.stream(PROMPTS).toList();
        var o = Generator.Options.greedy(12, 3);
        List<BatchGenerator.Result> got = new BatchGenerator(m, lora).generate(prompts, o, new int[] {12, 4, 9});
        int[] budgets = {12, 4, 9};
        double[] scored = new BatchGenerator(m, lora).score(prompts, got.stream()
                .map(r -> r.stoppedAtEos() ? append(r.ids(), 3) : r.ids()).toList());
        for (int b = 0; b < prompts.size(); b++) {
            BatchGenerator.Result r = got.get(b);
            assertTrue(r.ids().length <= budgets[b] && (r.stoppedAtEos() || r.ids().length == budgets[b]), "row " + b);
            for (int id : r.ids()) assertTrue(id >= 0 && id < C.vocabSize() && id != 3, "row " + b + " id " + id);
            // the generator's own log-prob against the teacher-forced forward (bf16 both ways)
            assertEquals(scored[b], r.logProb(), 5e-2 * Math.max(1, Math.abs(scored[b])), "log-prob row " + b);
        }
    }

    static int[] append(int[] a, int x) {
        int[] r = Arrays.copyOf(a, a.length + 1);
        r[a.length] = x;
        return r;
    }
}
