package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.model.TinyModels;
import org.sparselora.engine.train.FullTrainer;
import org.sparselora.engine.train.LlamaFullModel;
import org.sparselora.engine.train.ModelGrads;
import org.sparselora.engine.train.OptimizerConfig;
import org.sparselora.engine.train.TrainerState;

/**
 * A full-parameter step of a tiny model on the GPU against the same step on CpuBackend (same random
 * weights and batch, GQA, left padding): the loss and the gradient of every parameter (embedding,
 * norms, all projections, Qwen2's biases, the head untied or tied into the embedding), then three
 * {@link FullTrainer} updates (fp32 masters, decay mask on the fused AdamW group) — and the same
 * steps recorded as CUDA graphs against eager ones on the GPU. Tolerances as
 * {@link GpuTrainingStepTest}'s (bf16 activations): loss 2e-2, gradients 5e-2, updated parameters
 * 1e-2 (relative, per tensor); recorded vs eager 1e-3 (the attention backward's fp32 atomics may
 * reorder sums).
 */
@Tag("gpu")
class GpuFullStepTest {
    static final LlamaConfig LLAMA = GpuTrainingStepTest.C;
    // the same shape as Qwen2: q/k/v biases, tied head
    static final LlamaConfig QWEN = new LlamaConfig("Qwen2ForCausalLM", 64, 96, 2, 4, 2, 16, 67, 128, 1e-6f, 1e6f, null, true, true, 1, 2);
    static final double LOSS_TOL = GpuTrainingStepTest.LOSS_TOL, GRAD_TOL = GpuTrainingStepTest.GRAD_TOL, PARAM_TOL = GpuTrainingStepTest.PARAM_TOL;

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

    static Batch batch(LlamaConfig c, long seed) { return TinyModels.batch(c, seed, 12, new int[] {0, 3}, 5); }

    static LlamaFullModel model(Backend be, RandomWeights src) {
        return new LlamaFullModel(new LlamaModel(be, LlamaWeights.upload(be, src)));
    }

    static OptimizerConfig opt() {
        return new OptimizerConfig(1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 1f, OptimizerConfig.Schedule.CONSTANT, 0, 100);
    }

    static double relErr(float[] got, float[] want) {
        double num = 0, den = 0;
        for (int i = 0; i < want.length; i++) {
            if (!Float.isFinite(got[i])) return Double.POSITIVE_INFINITY;
            double d = got[i] - want[i];
            num += d * d;
            den += (double) want[i] * want[i];
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }

    @Test
    void oneFullStepOnTheGpuEqualsTheCpuStep() {
        for (LlamaConfig c : new LlamaConfig[] {LLAMA, QWEN}) {
            String fam = c.attentionBias() ? "qwen2" : "llama";
            RandomWeights src = new RandomWeights(c, 17);
            LlamaFullModel g = model(gpu, src), h = model(cpu, src);
            Batch b = batch(c, 3);
            try (ModelGrads gg = ModelGrads.zerosLike(gpu, g.parameters()); ModelGrads gc = ModelGrads.zerosLike(cpu, h.parameters())) {
                double lg = g.forwardBackward(b, gg), lc = h.forwardBackward(b, gc);
                assertTrue(Math.abs(lg - lc) <= LOSS_TOL * Math.abs(lc), fam + " loss " + lg + " vs " + lc);
                double worst = 0;
                for (String n : gc.names()) {
                    float[] want = gc.toHost(n), got = gg.toHost(n);
                    double e = relErr(got, want);
                    worst = Math.max(worst, e);
                    assertTrue(e <= GRAD_TOL, fam + " gradient " + n + ": relative error " + e);
                }
                System.out.printf("  full step %-6s loss %.5f vs %.5f, worst gradient rel %.2e%n", fam, lg, lc, worst);
            }
            g.model().close();
            h.model().close();
        }
    }

    @Test
    void trainerUpdatesMatchTheCpuAndRecordedStepsMatchEagerOnes() {
        for (LlamaConfig c : new LlamaConfig[] {LLAMA, QWEN}) {
            String fam = c.attentionBias() ? "qwen2" : "llama";
            RandomWeights src = new RandomWeights(c, 23);
            Map<String, float[]>[] masters = new Map[3];   // cpu, gpu eager, gpu recorded
            double[][] losses = new double[3][5];
            long replays = 0;
            for (int k = 0; k < 3; k++) {
                Backend be = k == 0 ? cpu : gpu;
                LlamaFullModel m = model(be, src);
                try (FullTrainer t = new FullTrainer(m, null, opt(), false).setRecordSteps(k == 2)) {
                    if (k > 0) assertEquals(1, t.groupCount(), "the GPU's fused group takes the decay mask");
                    for (int s = 0; s < 5; s++) {
                        Batch b = batch(c, 30 + s);
                        losses[k][s] = t.computeGradients(b, s, false).lossSum();
                        t.applyUpdate(s, b.outputTokenCount());
                    }
                    TrainerState st = t.state();
                    masters[k] = new LinkedHashMap<>();
                    for (String n : t.names()) masters[k].put(n, st.tensors().get(n));
                    if (k == 2) replays = t.replayedSteps();
                }
                m.model().close();
            }
            assertTrue(replays > 0, fam + ": recorded steps were replayed");
            for (int s = 0; s < 5; s++) {
                assertTrue(Math.abs(losses[1][s] - losses[0][s]) <= LOSS_TOL * Math.abs(losses[0][s]), fam + " step " + s + " loss vs cpu");
                assertTrue(Math.abs(losses[2][s] - losses[1][s]) <= 1e-3 * Math.abs(losses[1][s]), fam + " step " + s + " recorded vs eager loss");
            }
            for (String n : masters[0].keySet()) {
                double e = relErr(masters[1].get(n), masters[0].get(n)), r = relErr(masters[2].get(n), masters[1].get(n));
                assertTrue(e <= PARAM_TOL, fam + " " + n + " after 5 updates: relative error " + e + " vs the CPU");
                assertTrue(r <= 1e-3, fam + " " + n + ": recorded vs eager relative error " + r);
            }
        }
    }
}
