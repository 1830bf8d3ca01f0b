package org.sparselora.engine.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.EnumSet;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.SparsePlan.FrozenGrad;

/**
 * The fused LoRA layout (q,k,v's A stacked in one (3r,in) tensor, gate,up's in one (2r,in); one GEMM
 * for their x·Aᵀ, one for dA and one for dx) against the per-projection path on the same values:
 * loss and every LoRA gradient within 1e-6 (relative to the tensor's largest entry; only the order
 * of fp32 sums differs), dense and sparse (sliced and cut, token split), for every kind of target
 * subset; groups form only from projections that share an input and are present.
 */
class FusedLoraTest {
    static final CpuBackend be = SparseExecutionTest.be;
    static final EnumSet<Projection> ALL = EnumSet.allOf(Projection.class);
    static final List<EnumSet<Projection>> SUBSETS = List.of(ALL,
            EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O),
            EnumSet.of(Projection.Q, Projection.V),
            EnumSet.of(Projection.K, Projection.V, Projection.GATE, Projection.DOWN),
            EnumSet.of(Projection.GATE, Projection.UP),
            EnumSet.of(Projection.Q, Projection.UP, Projection.O));

    static void assertClose(List<float[]> want, List<float[]> got, List<String> names, String what) {
        for (int t = 0; t < want.size(); t++) {
            float[] a = want.get(t), b = got.get(t);
            assertEquals(a.length, b.length);
            double max = 0, diff = 0;
            for (int i = 0; i < a.length; i++) {
                max = Math.max(max, Math.abs(a[i]));
                diff = Math.max(diff, Math.abs(a[i] - b[i]));
            }
            assertTrue(max > 0, what + ": " + names.get(t) + " has a zero gradient (the test would prove nothing)");
            assertTrue(diff <= 1e-6 * max, what + ": " + names.get(t) + " differs by " + diff + " (max " + max + ")");
        }
    }

    @Test
    void groupsFormOnlyFromPresentProjectionsSharingAnInput() {
        LlamaConfig c = TinyModels.config(false, false, false);
        LoraAdapter all = TinyModels.adapter(be, c, 0f, 1);
        LoraAdapter.Group qkv = all.group(1, Projection.K), gu = all.group(1, Projection.UP);
        assertEquals(List.of(Projection.Q, Projection.K, Projection.V), qkv.members());
        assertSame(qkv, all.group(1, Projection.Q));
        assertArrayEquals(new int[] {6, c.hiddenSize()}, qkv.a().shape());
        assertEquals(List.of(Projection.GATE, Projection.UP), gu.members());
        assertNull(all.group(1, Projection.O));
        assertNull(all.group(1, Projection.DOWN));
        // a member's A is rows [j·r, (j+1)·r) of the fused tensor
        float[] fused = be.toFloats(qkv.a()), k = be.toFloats(all.get(1, Projection.K).a());
        for (int i = 0; i < k.length; i++) assertEquals(fused[2 * c.hiddenSize() + i], k[i]);
        LoraAdapter qv = TinyModels.adapter(be, c, 0f, 1, EnumSet.of(Projection.Q, Projection.V, Projection.UP));
        assertEquals(List.of(Projection.Q, Projection.V), qv.group(0, Projection.V).members());
        assertNull(qv.group(0, Projection.UP), "a lone projection is not a group");
        assertFalse(TinyModels.adapter(be, c, 0.1f, 1).fused(), "dropout > 0: per-projection masks, no fusion");
        assertThrows(IllegalArgumentException.class, () -> new LoraAdapter(be, c, new LoraConfig(2, 3f, 0.1f, ALL, false, 1), true));
        // names, values and PEFT layout do not depend on the layout
        LoraAdapter plain = TinyModels.adapter(be, c, 0f, 1, ALL, false);
        assertEquals(plain.names(), all.names());
        var hp = plain.toHost();
        all.toHost().forEach((n, v) -> assertArrayEquals(hp.get(n), v, n));
    }

    @Test
    void fusedEqualsPerProjectionDenseAndSparse() {
        LlamaConfig c = TinyModels.config(false, true, true);
        LlamaModel m = TinyModels.model(be, c, 3);
        Batch b = TinyModels.batch(c, 6, 2);
        for (EnumSet<Projection> targets : SUBSETS) {
            LoraAdapter fused = TinyModels.adapter(be, c, 0f, 5, targets, true), plain = TinyModels.adapter(be, c, 0f, 5, targets, false);
            SparsePlan[] plans = {null, SparseExecutionTest.partial(c, b, FrozenGrad.SLICED), SparseExecutionTest.partial(c, b, FrozenGrad.CUT),
                    SparseExecutionTest.allKept(c, b, FrozenGrad.SLICED, true)};
            String[] planNames = {"dense", "sliced", "cut", "all kept, split"};
            for (int i = 0; i < plans.length; i++) {
                String what = targets + " " + planNames[i];
                fused.zeroGrads();
                plain.zeroGrads();
                double lf = m.forward(b, fused, plans[i], 0);
                m.backward();
                double lp = m.forward(b, plain, plans[i], 0);
                m.backward();
                assertEquals(lp, lf, 1e-6 * Math.abs(lp), what + ": loss");
                assertClose(SparseExecutionTest.grads(plain), SparseExecutionTest.grads(fused), plain.names(), what);
                assertEquals(m.evaluate(b, plain, plans[i], false).lossSum(), m.evaluate(b, fused, plans[i], false).lossSum(), 1e-6 * Math.abs(lp), what + ": evaluate");
            }
        }
    }

    @Test
    void fusedGradientsMatchFiniteDifferences() {
        LlamaConfig c = TinyModels.config(false, false, false);
        LlamaModel m = TinyModels.model(be, c, 8);
        Batch b = TinyModels.batch(c, 2, 2);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 9, EnumSet.of(Projection.Q, Projection.V, Projection.GATE, Projection.UP), true);
        assertNotNull(lora.group(0, Projection.Q));
        SparsePlan plan = SparseExecutionTest.partial(c, b, FrozenGrad.SLICED);
        LlamaModelTest.checkLoraGradients(m, lora, () -> { m.forward(b, lora, plan, 0); m.backward(); },
                () -> m.evaluate(b, lora, plan, false).lossSum(), "fused, sliced");
    }
}
