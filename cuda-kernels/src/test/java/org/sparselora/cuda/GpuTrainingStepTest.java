package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.RowBlockMode;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.model.TinyModels;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.sparse.SparsePlanner;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.engine.sparse.SvdPredictor;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.OptimizerConfig;
import org.sparselora.engine.train.StepResult;

/**
 * A whole tiny-model LoRA training step on the GPU against the same step on CpuBackend (same random
 * weights, adapter, batch and plan): loss, every LoRA gradient and the AdamW-updated parameters,
 * dense and sparse (token splitting on, GQA, left padding). The GPU stores activations in bf16, so
 * the step tolerances are looser than the per-op ones: loss 2e-2, gradients 5e-2, updated
 * parameters 1e-2 (relative, per tensor). The sparse step replays the CPU's channel choice on the
 * GPU (a bf16 predictor may break near-ties differently); the GPU's own in-flight selection is run
 * too and must agree on most channels.
 */
@Tag("gpu")
class GpuTrainingStepTest {
    // C=64, I=96, 2 layers, 4 query heads over 2 KV heads of D=16, V=67
    static final LlamaConfig C = new LlamaConfig("LlamaForCausalLM", 64, 96, 2, 4, 2, 16, 67, 128, 1e-5f, 10000f,
            null, false, false, 1, 2);
    static final double LOSS_TOL = 2e-2, GRAD_TOL = 5e-2, PARAM_TOL = 1e-2;

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

    /** Two left-padded sequences of T=12 (sequence 1 has 3 padding tokens); the first 5 real tokens are prompt. */
    static Batch batch(long seed) { return TinyModels.batch(C, seed, 12, new int[] {0, 3}, 5); }

    /** All seven targets, r=4, alpha=8, B randomised so every A gradient is non-zero. */
    static LoraAdapter adapter(Backend be, long seed) { return adapter(be, seed, true); }

    /** @param fused q,k,v and gate,up's LoRA A in the fused layout (one GEMM per shared input) or per projection */
    static LoraAdapter adapter(Backend be, long seed, boolean fused) {
        return TinyModels.adapter(be, C, new LoraConfig(4, 8f, 0f, EnumSet.allOf(Projection.class), false, seed), 0.2, fused);
    }

    static SparsityConfig sparsity() { return TinyModels.sparsity("", "gpu-step-test"); }

    record Result(double loss, List<float[]> grads, List<float[]> params) {}

    static List<float[]> host(Backend be, List<Tensor> ts) { return TinyModels.host(be, ts); }

    /** Two dense trainer steps; the result holds the second step's loss and gradients and the parameters after both updates. */
    static Result denseSteps(Backend be, RandomWeights src, Batch b) { return denseSteps(be, src, b, true); }

    static Result denseSteps(Backend be, RandomWeights src, Batch b, boolean fused) {
        LlamaModel model = new LlamaModel(be, LlamaWeights.upload(be, src));
        LoraAdapter lora = adapter(be, 21, fused);
        LoraTrainer t = new LoraTrainer(model, lora, OptimizerConfig.defaults(10));
        double loss = 0;
        List<float[]> grads = null;
        for (int step = 0; step < 2; step++) {
            StepResult r = t.computeGradients(b, step, false);
            loss = r.lossSum();
            grads = host(be, lora.grads());
            t.applyUpdate(step, b.outputTokenCount());
        }
        return new Result(loss, grads, host(be, lora.params()));
    }

    static Tensor to(Backend be, Backend from, Tensor t) {
        return t == null ? null : be.fromInts(from.toInts(t), (int) t.numel());
    }

    static double relErr(float[] got, float[] want) { return GpuOpsTestSupport.relErr(got, want); }

    static void compare(String what, Result g, Result c) {
        double le = Math.abs(g.loss() - c.loss()) / Math.max(1e-9, Math.abs(c.loss()));
        System.out.printf("  %-28s loss gpu %.6f cpu %.6f (rel %.2e)%n", what, g.loss(), c.loss(), le);
        assertTrue(le <= LOSS_TOL, what + ": loss " + g.loss() + " vs " + c.loss());
        double worst = 0;
        for (int i = 0; i < c.grads().size(); i++) {
            double e = relErr(g.grads().get(i), c.grads().get(i));
            worst = Math.max(worst, e);
            assertTrue(e <= GRAD_TOL, what + ": gradient " + i + " relative error " + e);
        }
        System.out.printf("  %-28s worst gradient rel err %.2e over %d tensors%n", what, worst, c.grads().size());
        if (c.params() != null) {
            double pw = 0;
            for (int i = 0; i < c.params().size(); i++) {
                double e = relErr(g.params().get(i), c.params().get(i));
                pw = Math.max(pw, e);
                assertTrue(e <= PARAM_TOL, what + ": parameter " + i + " relative error " + e);
            }
            System.out.printf("  %-28s worst updated-parameter rel err %.2e%n", what, pw);
        }
    }

    @Test
    void denseTrainingStepsMatchTheCpu() {
        RandomWeights src = new RandomWeights(C, 5);
        Batch b = batch(6);
        compare("dense, 2 steps", denseSteps(gpu, src, b), denseSteps(cpu, src, b));
    }

    /**
     * Device memory of a training step is given back whole: a model, adapter and trainer closed
     * after dense and sparse steps leave the live tensor bytes where they were (what the step
     * benchmark relies on when it reports each row's own peak), and a second step of the same
     * shape allocates nothing new (buffers are reused, LoRA GEMMs need no conversion scratch).
     */
    @Test
    void aClosedStepGivesBackEveryDeviceByte() {
        RandomWeights src = new RandomWeights(C, 5);
        LlamaWeights w = LlamaWeights.upload(gpu, src);
        Batch b = batch(6);
        gpu.synchronize();
        long base = gpu.tensorMemoryInUse();
        LlamaModel model = new LlamaModel(gpu, w);
        LoraAdapter lora = adapter(gpu, 21);
        LoraTrainer t = new LoraTrainer(model, lora, OptimizerConfig.defaults(10));
        t.computeGradients(b, 0, false);
        t.applyUpdate(0, b.outputTokenCount());
        long afterOne = gpu.tensorMemoryInUse(), held = gpu.allocatedMemory();
        t.computeGradients(b, 1, false);
        t.applyUpdate(1, b.outputTokenCount());
        assertEquals(afterOne, gpu.tensorMemoryInUse(), "a second step of the same shape holds the same tensors");
        assertEquals(held, gpu.allocatedMemory(), "a second step of the same shape takes no new device memory");
        t.close();
        lora.close();
        model.close();
        assertEquals(base, gpu.tensorMemoryInUse(), "closing the model, adapter and trainer gives back every tensor byte");
    }

    /**
     * Recorded steps (CUDA graphs): six trainer steps over batches of one shape whose tokens,
     * targets and (sparse) token split change every step, recorded at the second step and replayed
     * after, against the same steps run eagerly — dense LoRA and SparseLoRA with in-flight
     * selection on the device (predictor, top-k, slice gathers inside the graph). The replays run
     * the eager step's kernels, so losses and weights agree to float rounding (the attention
     * backward's fp32 atomics may reorder sums); 1e-3 relative. Then the same over batches whose
     * padding and prompt lengths differ, made one shape by shape buckets of 4 rows (padding rows
     * zeroed on the device before each selection, dense token group and head rows bucketed).
     */
    @Test
    void recordedStepsEqualEagerStepsOnTheGpu() {
        RandomWeights src = new RandomWeights(C, 9);
        // bucket 0: one batch layout; bucket 4: three layouts (padding and prompt lengths differ, 11
        // output tokens each) that shape buckets of 4 rows make one shape
        for (int bucket : new int[] {0, 4})
            for (boolean sparse : new boolean[] {false, true}) {
                double[][] losses = new double[2][];
                List<float[]>[] params = new List[2];
                long[] replays = new long[2];
                for (int rec = 0; rec < 2; rec++) {
                    LlamaModel model = new LlamaModel(gpu, LlamaWeights.upload(gpu, src));
                    LoraAdapter lora = adapter(gpu, 41);
                    LoraTrainer t = new LoraTrainer(model, lora, OptimizerConfig.defaults(6)).setRecordSteps(rec == 1).setShapeBucket(bucket);
                    SparsePlanner p = sparse ? SparsePlanner.create(gpu, src, TinyModels.sparsity("sparse_output_tokens: 0.5\n", "gpu-graph-test"),
                            null, 6, 3, SvdPredictor.Progress.NONE) : null;
                    if (p != null) t.setSparsePlanner(p);
                    losses[rec] = new double[6];
                    for (int s = 0; s < 6; s++) {
                        Batch b = bucket == 0 ? batch(50 + s) : switch (s % 3) {
                            case 0 -> TinyModels.batch(C, 60 + s, 12, new int[] {0, 3}, 5);
                            case 1 -> TinyModels.batch(C, 60 + s, 12, new int[] {1, 2}, 5);
                            default -> TinyModels.batch(C, 60 + s, 12, new int[] {0, 1}, 6);
                        };
                        losses[rec][s] = t.computeGradients(b, s, sparse).lossSum();
                        t.applyUpdate(s, b.outputTokenCount());
                    }
                    params[rec] = host(gpu, lora.params());
                    replays[rec] = t.replayedSteps();
                    t.close();
                    if (p != null) p.close();
                    lora.close();
                    model.close();
                }
                String what = (sparse ? "SparseLoRA" : "dense") + ", bucket " + bucket;
                assertEquals(0, replays[0], what + ": recording off replays nothing");
                assertEquals(4, replays[1], what + ": steps 3..6 replayed");
                double worst = 0;
                for (int s = 0; s < 6; s++) {
                    double e = Math.abs(losses[1][s] - losses[0][s]) / Math.abs(losses[0][s]);
                    worst = Math.max(worst, e);
                    assertTrue(e <= 1e-3, what + " step " + s + ": recorded loss " + losses[1][s] + " vs eager " + losses[0][s]);
                }
                double pw = 0;
                for (int i = 0; i < params[0].size(); i++) {
                    double e = relErr(params[1].get(i), params[0].get(i));
                    pw = Math.max(pw, e);
                    assertTrue(e <= 1e-3, what + ": parameter " + i + " relative error " + e);
                }
                System.out.printf("  recorded vs eager, %-22s worst loss rel %.2e, worst parameter rel %.2e, %d replays%n", what, worst, pw, replays[1]);
            }
    }

    /** The per-projection LoRA GEMMs on the GPU (fused layout off) against the CPU's fused run (equal to its per-projection run within 1e-6, FusedLoraTest). */
    @Test
    void perProjectionLoraStepsMatchTheCpuToo() {
        RandomWeights src = new RandomWeights(C, 5);
        Batch b = batch(6);
        compare("dense, per-projection LoRA", denseSteps(gpu, src, b, false), denseSteps(cpu, src, b, true));
    }

    @Test
    void sparseStepMatchesTheCpuOnTheSamePlanAndSelectsSimilarChannels() {
        sparseStepCase(batch(8), false);
    }

    /**
     * Every sequence with its prompt and output tokens at the same positions (no padding, the first 5
     * of 12 tokens are prompt, as in the timing batches): the frozen GEMMs run on row blocks of the
     * activations (cuBLAS strided-batched, no token gathers), on both backends; same checks.
     */
    @Test
    void sparseStepOnRowBlockTokenGroupsMatchesTheCpu() {
        Batch batch = TinyModels.batch(C, 21, 12, new int[] {0, 0}, 5);
        for (RowBlockMode mode : new RowBlockMode[] {RowBlockMode.SPARSE, RowBlockMode.ALL})
            sparseStepCase(batch, true, mode);
    }

    static void sparseStepCase(Batch b, boolean rowBlocks) { sparseStepCase(b, rowBlocks, RowBlockMode.SPARSE); }

    static void sparseStepCase(Batch b, boolean rowBlocks, RowBlockMode mode) {
        RandomWeights src = new RandomWeights(C, 7);
        long seed = 11;
        LlamaModel mc = new LlamaModel(cpu, LlamaWeights.upload(cpu, src)), mg = new LlamaModel(gpu, LlamaWeights.upload(gpu, src));
        mc.setRowBlockMode(mode);
        mg.setRowBlockMode(mode);
        LoraAdapter lc = adapter(cpu, 31), lg = adapter(gpu, 31);
        try (SparsePlanner pc = SparsePlanner.create(cpu, src, sparsity(), null, 10, 1, SvdPredictor.Progress.NONE);
             SparsePlanner pg = SparsePlanner.create(gpu, src, sparsity(), null, 10, 1, SvdPredictor.Progress.NONE)) {
            SparsePlan gpuPlan;
            Result cpuRes;
            List<int[]> cpuChoice = new ArrayList<>();
            try (SparsePlanner.Step step = pc.begin(b, 0)) {
                SparsePlan plan = step.plan();
                double loss = mc.forward(b, lc, plan, step, seed);
                mc.backward();
                cpuRes = new Result(loss, host(cpu, lc.grads()), null);
                SparsePlan.LayerPlan[] lps = new SparsePlan.LayerPlan[C.numLayers()];
                for (int l = 0; l < lps.length; l++) {
                    SparsePlan.LayerPlan lp = plan.layers()[l];
                    lps[l] = new SparsePlan.LayerPlan(to(gpu, cpu, lp.mlp()), to(gpu, cpu, lp.q()), to(gpu, cpu, lp.k()),
                            to(gpu, cpu, lp.v()), to(gpu, cpu, lp.o()));
                    cpuChoice.add(cpu.toInts(lp.mlp()));
                    cpuChoice.add(cpu.toInts(lp.k()));
                    cpuChoice.add(cpu.toInts(lp.v()));
                }
                gpuPlan = new SparsePlan(to(gpu, cpu, plan.sparseTokens()), to(gpu, cpu, plan.denseTokens()), lps, plan.frozenGrad());
            }
            assertEquals(rowBlocks, mc.usedRowBlocks(), "CPU token groups as row blocks");
            // the same plan on the GPU
            double loss = mg.forward(b, lg, gpuPlan, null, seed);
            assertEquals(rowBlocks, mg.usedRowBlocks(), "GPU token groups as row blocks");
            assertEquals(rowBlocks && mode == RowBlockMode.ALL, mg.usedDenseRowBlocks(), "GPU dense group as row blocks");
            mg.backward();
            compare("sparse, CPU's plan", new Result(loss, host(gpu, lg.grads()), null), cpuRes);

            // the GPU's own in-flight selection (predictor, norms, top-k, GQA expansion on the device)
            lg.zeroGrads();
            try (SparsePlanner.Step step = pg.begin(b, 0)) {
                double own = mg.forward(b, lg, step.plan(), step, seed);
                mg.backward();
                assertTrue(Double.isFinite(own), "GPU-selected sparse step loss " + own);
                List<int[]> gpuChoice = new ArrayList<>();
                for (SparsePlan.LayerPlan lp : step.plan().layers()) {
                    gpuChoice.add(gpu.toInts(lp.mlp()));
                    gpuChoice.add(gpu.toInts(lp.k()));
                    gpuChoice.add(gpu.toInts(lp.v()));
                }
                for (int i = 0; i < cpuChoice.size(); i++) {
                    int[] cc = cpuChoice.get(i), gc = gpuChoice.get(i);
                    assertEquals(cc.length, gc.length, "kept count " + i);
                    for (int j = 1; j < gc.length; j++) assertTrue(gc[j - 1] < gc[j], "GPU indices ascending and distinct");
                    Set<Integer> s = new HashSet<>();
                    for (int x : cc) s.add(x);
                    int common = 0;
                    for (int x : gc) if (s.contains(x)) common++;
                    double overlap = (double) common / cc.length;
                    System.out.printf("  selection %d: %d of %d channels shared with the CPU's choice%n", i, common, cc.length);
                    assertTrue(overlap >= 0.6, "GPU selection " + i + " shares only " + common + " of " + cc.length + " channels with the CPU's");
                }
                System.out.printf("  sparse, GPU's own plan       loss %.6f (CPU plan on CPU: %.6f)%n", own, cpuRes.loss());
            }
        }
    }
}
