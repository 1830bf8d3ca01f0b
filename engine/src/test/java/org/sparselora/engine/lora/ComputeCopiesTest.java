package org.sparselora.engine.lora;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.EnumSet;
import java.util.LinkedHashMap;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.Dtypes;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.TinyModels;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.OptimizerConfig;

/**
 * The compute-type copies of the LoRA parameters: the parameters themselves on an F32 backend (so
 * CPU results do not change), bf16 roundings of the masters on a bf16 backend, kept current by
 * every writer (init, fromHost, the trainer's update and restore), and what the model's GEMMs read.
 */
class ComputeCopiesTest {
    static final LlamaConfig C = TinyModels.config(false, false, false);

    static void assertCopiesCurrent(CpuBackend be, LoraAdapter a, String when) {
        for (int i = 0; i < a.params().size(); i++) {
            Tensor p = a.params().get(i), c = a.computeCopies().get(i);
            assertEquals(DType.BF16, c.dtype(), a.names().get(i));
            assertArrayEquals(p.shape(), c.shape(), a.names().get(i));
            float[] m = be.toFloats(p), want = new float[m.length];
            for (int j = 0; j < m.length; j++) want[j] = Dtypes.bf16ToFloat(Dtypes.floatToBf16(m[j]));
            assertArrayEquals(want, be.toFloats(c), when + ": " + a.names().get(i));
        }
    }

    @Test
    void onF32TheCopiesAreTheParameters() {
        try (CpuBackend be = new CpuBackend(1)) {
            LoraAdapter a = new LoraAdapter(be, C, new LoraConfig(2, 4f, 0f, EnumSet.allOf(Projection.class), false, 3));
            assertEquals(a.params().size(), a.computeCopies().size());
            for (int i = 0; i < a.params().size(); i++) assertSame(a.params().get(i), a.computeCopies().get(i));
        }
    }

    @Test
    void onBf16EveryWriterRefreshesTheCopies() {
        try (CpuBackend be = new CpuBackend(1, DType.BF16)) {
            LoraAdapter a = TinyModels.adapter(be, C, 0f, 4);
            assertCopiesCurrent(be, a, "after init and a direct write + sync");
            LinkedHashMap<String, float[]> h = a.toHost();
            for (float[] v : h.values()) for (int j = 0; j < v.length; j++) v[j] = v[j] * 1.37f + 0.011f;
            a.fromHost(h);
            assertCopiesCurrent(be, a, "after fromHost");
            LlamaModel m = TinyModels.model(be, C, 2);
            LoraTrainer tr = new LoraTrainer(m, a, OptimizerConfig.defaults(5));
            Batch b = TinyModels.batch(C, 1, 2);
            var state = tr.state();
            tr.computeGradients(b, 0, false);
            tr.applyUpdate(0, b.outputTokenCount());
            assertCopiesCurrent(be, a, "after an AdamW update");
            tr.restore(state);
            assertCopiesCurrent(be, a, "after restore");
        }
    }

    /** The flat storage's claim: one element-wise AdamW over the flat tensors equals the per-tensor steps, padding stays zero. */
    @Test
    void aFlatAdamwStepEqualsThePerTensorSteps() {
        try (CpuBackend be = new CpuBackend(1)) {
            LoraAdapter x = TinyModels.adapter(be, C, 0f, 4), y = TinyModels.adapter(be, C, 0f, 4);
            assertTrue(x.flatParams().numel() > x.parameterCount(), "the tiny shapes leave padding between views");
            java.util.Random r = new java.util.Random(2);
            for (int i = 0; i < x.grads().size(); i++) {
                float[] g = new float[(int) x.grads().get(i).numel()];
                for (int j = 0; j < g.length; j++) g[j] = (float) r.nextGaussian();
                be.copyFromHost(x.grads().get(i), g);
                be.copyFromHost(y.grads().get(i), g);
            }
            for (int i = 0; i < x.params().size(); i++) {
                Tensor p = x.params().get(i);
                be.adamw(p, x.grads().get(i), be.zeros(DType.F32, p.shape()), be.zeros(DType.F32, p.shape()), 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, 1, 0.5f);
            }
            int n = (int) y.flatParams().numel();
            be.adamw(y.flatParams(), y.flatGrads(), be.zeros(DType.F32, n), be.zeros(DType.F32, n), 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, 1, 0.5f);
            for (int i = 0; i < x.params().size(); i++)
                assertArrayEquals(be.toFloats(x.params().get(i)), be.toFloats(y.params().get(i)), x.names().get(i));
            long flatNonZero = 0, viewNonZero = 0;
            for (float v : be.toFloats(y.flatParams())) if (v != 0f) flatNonZero++;
            for (Tensor t : y.params()) for (float v : be.toFloats(t)) if (v != 0f) viewNonZero++;
            assertEquals(viewNonZero, flatNonZero, "padding stays zero");
        }
    }

    @Test
    void theModelReadsTheCopies() {
        try (CpuBackend be = new CpuBackend(1, DType.BF16)) {
            LoraAdapter a = TinyModels.adapter(be, C, 0f, 4);
            LlamaModel m = TinyModels.model(be, C, 2);
            Batch b = TinyModels.batch(C, 1, 2);
            double before = m.evaluate(b, a, null, false).lossSum();
            // a master written without a sync: the GEMMs still see the old copy ...
            int bq = a.names().indexOf(LoraAdapter.name(0, Projection.Q, "B"));
            Tensor p = a.params().get(bq);
            float[] v = be.toFloats(p);
            for (int j = 0; j < v.length; j++) v[j] += 0.5f;
            be.copyFromHost(p, v);
            assertEquals(before, m.evaluate(b, a, null, false).lossSum(), 0.0);
            // ... and the new value once synced
            a.syncComputeCopies();
            assertNotEquals(before, m.evaluate(b, a, null, false).lossSum());
        }
    }
}
