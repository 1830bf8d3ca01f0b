package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.List;
import java.util.Random;
import java.util.function.BiFunction;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Nf4;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.OptimizerConfig;
import org.sparselora.engine.train.StepResult;

/**
 * QLoRA on the GPU: the NF4 dequantization kernels (whole tensor, kept rows, kept columns) against
 * the engine's host reference — exact into F32, the reference rounded into BF16 — and a QLoRA
 * training step (NF4 weights, LoRA on all seven projections) on the GPU against the same step on the
 * CPU within GpuTrainingStepTest's bf16 tolerances: dense through the trainer (two updates), with
 * activation checkpointing, and SparseLoRA on a fixed plan whose slices come straight from the codes.
 */
@Tag("gpu")
class GpuQloraTest {
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

    @Test
    void dequantizationKernelsMatchTheHostReference() {
        Random r = new Random(5);
        int R = 96, C = 200;   // blocks of 64 cross rows; the last packed word is full, the last block partial
        float[] w = new float[R * C];
        for (int i = 0; i < w.length; i++) w[i] = (float) (r.nextGaussian() * 0.02);
        Nf4.Quantized q = Nf4.quantize(w);
        int[] rows = IntStream.range(0, R).filter(i -> i % 3 != 1).toArray(), cols = IntStream.range(0, C).filter(i -> i % 5 < 2).toArray();
        float[] whole = Nf4.dequantize(q), wantRows = Nf4.dequantizeRows(q, C, rows), wantCols = Nf4.dequantizeCols(q, C, cols);
        try (Tensor packed = gpu.fromInts(q.packed(), q.packed().length); Tensor absmax = gpu.fromFloats(q.absmax(), DType.F32, q.absmax().length);
             Tensor ri = gpu.fromInts(rows, rows.length); Tensor ci = gpu.fromInts(cols, cols.length)) {
            for (DType dt : new DType[] {DType.F32, DType.BF16}) {
                try (Tensor o = gpu.empty(dt, R, C); Tensor or = gpu.empty(dt, rows.length, C); Tensor oc = gpu.empty(dt, R, cols.length)) {
                    gpu.dequantizeNf4(o, packed, absmax);
                    gpu.dequantizeNf4Rows(or, packed, absmax, ri, C);
                    gpu.dequantizeNf4Cols(oc, packed, absmax, ci, C);
                    assertArrayEquals(round(whole, dt), gpu.toFloats(o), 0f, "whole, " + dt);
                    assertArrayEquals(round(wantRows, dt), gpu.toFloats(or), 0f, "kept rows, " + dt);
                    assertArrayEquals(round(wantCols, dt), gpu.toFloats(oc), 0f, "kept columns, " + dt);
                }
            }
        }
    }

    /** v as a tensor of dtype dt stores it (bf16: round to nearest even), read back as floats. */
    static float[] round(float[] v, DType dt) {
        if (dt == DType.F32) return v;
        try (CpuBackend bf = new CpuBackend(1, DType.BF16); Tensor t = bf.fromFloats(v, DType.BF16, v.length)) {
            return bf.toFloats(t);
        }
    }

    record Result(double loss, List<float[]> grads, List<float[]> params) {}

    static Result denseSteps(Backend be, RandomWeights src, Batch b, boolean checkpointing) {
        try (LlamaWeights w = LlamaWeights.uploadNf4(be, src, true); LlamaModel model = new LlamaModel(be, w);
             LoraAdapter lora = GpuTrainingStepTest.adapter(be, 21)) {
            model.setGradientCheckpointing(checkpointing);
            LoraTrainer t = new LoraTrainer(model, lora, OptimizerConfig.defaults(10));
            double loss = 0;
            List<float[]> grads = null;
            for (int step = 0; step < 2; step++) {
                StepResult r = t.computeGradients(b, step, false);
                loss = r.lossSum();
                grads = GpuTrainingStepTest.host(be, lora.grads());
                t.applyUpdate(step, b.outputTokenCount());
            }
            Result res = new Result(loss, grads, GpuTrainingStepTest.host(be, lora.params()));
            t.close();
            return res;
        }
    }

    @Test
    void aQloraTrainingStepOnTheGpuEqualsTheCpuOne() {
        RandomWeights src = new RandomWeights(GpuTrainingStepTest.C, 17);
        Batch b = GpuTrainingStepTest.batch(4);
        for (boolean ckpt : new boolean[] {false, true})
            GpuTrainingStepTest.compare("QLoRA dense" + (ckpt ? ", checkpointing" : ""),
                    toStep(denseSteps(gpu, src, b, ckpt)), toStep(denseSteps(cpu, src, b, ckpt)));
    }

    static GpuTrainingStepTest.Result toStep(Result r) { return new GpuTrainingStepTest.Result(r.loss(), r.grads(), r.params()); }

    /** Layer 0: MLP half kept; layer 1: MLP, q/k/v/o partly kept; the prompt tokens sparse, the output tokens dense. */
    static SparsePlan plan(Backend be, Batch b, SparsePlan.FrozenGrad fg) {
        var c = GpuTrainingStepTest.C;
        BiFunction<Integer, java.util.function.IntPredicate, Tensor> kept = (n, keep) -> {
            int[] v = IntStream.range(0, n).filter(keep).toArray();
            return be.fromInts(v, v.length);
        };
        Tensor mlp0 = kept.apply(c.intermediateSize(), i -> i % 2 == 0), mlp1 = kept.apply(c.intermediateSize(), i -> i % 3 != 0);
        Tensor q = kept.apply(c.qDim(), i -> i % 16 < 8), k = kept.apply(c.kvDim(), i -> i % 16 < 8);
        Tensor v = kept.apply(c.kvDim(), i -> i % 16 >= 4), o = kept.apply(c.qDim(), i -> i % 16 >= 4);
        SparsePlan.LayerPlan[] lp = {new SparsePlan.LayerPlan(mlp0, null, null, null, null), new SparsePlan.LayerPlan(mlp1, q, k, v, o)};
        int[] ctx = IntStream.range(0, b.tokenCount()).filter(i -> b.targets()[i] == Batch.IGNORE).toArray();
        int[] out = IntStream.range(0, b.tokenCount()).filter(i -> b.targets()[i] != Batch.IGNORE).toArray();
        return new SparsePlan(be.fromInts(ctx, ctx.length), be.fromInts(out, out.length), lp, fg);
    }

    static Result sparseStep(Backend be, RandomWeights src, Batch b, SparsePlan.FrozenGrad fg) {
        try (LlamaWeights w = LlamaWeights.uploadNf4(be, src, false); LlamaModel model = new LlamaModel(be, w);
             LoraAdapter lora = GpuTrainingStepTest.adapter(be, 21)) {
            double loss = model.forward(b, lora, plan(be, b, fg), 3);
            model.backward();
            return new Result(loss, GpuTrainingStepTest.host(be, lora.grads()), null);
        }
    }

    @Test
    void aSparseQloraStepOnTheGpuEqualsTheCpuOne() {
        RandomWeights src = new RandomWeights(GpuTrainingStepTest.C, 17);
        Batch b = GpuTrainingStepTest.batch(4);
        for (SparsePlan.FrozenGrad fg : SparsePlan.FrozenGrad.values()) {
            Result g = sparseStep(gpu, src, b, fg), c = sparseStep(cpu, src, b, fg);
            GpuTrainingStepTest.compare("Sparse-QLoRA " + fg, toStep(g), toStep(c));
            assertTrue(Double.isFinite(g.loss()) && g.loss() > 0, "a real loss");
        }
    }
}
