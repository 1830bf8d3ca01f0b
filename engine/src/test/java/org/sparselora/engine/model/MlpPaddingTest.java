package org.sparselora.engine.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.SparsePlan.FrozenGrad;

/**
 * The sparse MLP's kept-channel padding (WeightSlices, KeptPadding: the kept set widened to a multiple
 * of 8 with unkept channels whose slice weights are 0) changes no result beyond float rounding: the
 * same step with padding turned off gives the same loss, evaluation loss and LoRA gradients, on the
 * compact MLP (q,k,v,o) and the full-width one (all seven), sliced and cut, gathered and row-block
 * token groups. Also the two Backend ops it uses, on the CPU (their reference defaults).
 */
class MlpPaddingTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    @Test
    void padIndexSetTakesTheLowestFreeIndices() {
        Tensor out = be.empty(DType.I32, 8), idx = TinyModels.ints(be, 5, 0, 2, 9, 3);
        be.padIndexSet(out, idx, 12);
        assertArrayEquals(new int[] {5, 0, 2, 9, 3, 1, 4, 6}, be.toInts(out));
        Tensor same = be.empty(DType.I32, 5);
        be.padIndexSet(same, idx, 12);
        assertArrayEquals(new int[] {5, 0, 2, 9, 3}, be.toInts(same));
        var e = assertThrows(IllegalArgumentException.class, () -> be.padIndexSet(be.empty(DType.I32, 13), idx, 12));
        assertTrue(e.getMessage().contains("padIndexSet"), e.getMessage());
        var rep = assertThrows(IllegalArgumentException.class, () -> be.padIndexSet(out, TinyModels.ints(be, 1, 1), 12));
        assertTrue(rep.getMessage().contains("repeated"), rep.getMessage());
    }

    @Test
    void fillColsWritesOnlyTheTrailingColumns() {
        Tensor t = be.fromFloats(new float[] {1, 2, 3, 4, 5, 6, 7, 8}, DType.F32, 2, 4);
        be.fillCols(t, 3, 0f);
        assertArrayEquals(new float[] {1, 2, 3, 0, 5, 6, 7, 0}, be.toFloats(t));
        be.fillCols(t, 4, 9f);                       // nothing to fill
        assertArrayEquals(new float[] {1, 2, 3, 0, 5, 6, 7, 0}, be.toFloats(t));
        assertThrows(IllegalArgumentException.class, () -> be.fillCols(t, 5, 0f));
    }

    @Test
    void paddedCountIsTheNextMultipleOfEightWithinTheWidth() {
        assertEquals(144, KeptPadding.MULTIPLE_OF_8.width(143, 14336));
        assertEquals(1432, KeptPadding.MULTIPLE_OF_8.width(1432, 14336));
        assertEquals(16, KeptPadding.MULTIPLE_OF_8.width(12, 24));
        assertEquals(21, KeptPadding.MULTIPLE_OF_8.width(20, 21));
    }

    @Test
    void paddingChangesNothingBeyondRounding() {
        LlamaConfig c = TinyModels.config(false, true, true);       // intermediate 24: the half-kept plan keeps 12, padded to 16
        LlamaModel m = TinyModels.model(be, c, 8);
        Batch b = TinyModels.batch(c, 9, 6, new int[3], 4);        // equal positions: row blocks are possible
        for (boolean all : new boolean[] {true, false}) {
            LoraAdapter lora = all ? TinyModels.adapter(be, c, 0f, 4) : TinyModels.adapter(be, c, 0f, 4, SparseExecutionTest.QKVO);
            for (FrozenGrad fg : new FrozenGrad[] {FrozenGrad.SLICED, FrozenGrad.CUT})
                for (RowBlockMode mode : new RowBlockMode[] {RowBlockMode.OFF, RowBlockMode.SPARSE}) {
                    SparsePlan plan = SparseExecutionTest.partial(c, b, fg);
                    m.setRowBlockMode(mode);
                    String what = (all ? "all seven " : "q,k,v,o ") + fg + " " + mode;
                    TinyModels.StepRun[] runs = new TinyModels.StepRun[2];
                    List<String> widths = new ArrayList<>();
                    for (int run = 0; run < 2; run++) {
                        m.keptPadding = run == 0 ? KeptPadding.MULTIPLE_OF_8 : KeptPadding.NONE;
                        TinyModels.StepRun s = TinyModels.trainStep(be, m, b, lora, plan, 3);
                        m.frozenHook = (l, p, ys) -> { if (p == Projection.GATE) widths.add(ys.dim(1) + ""); };
                        runs[run] = s.withEval(m.evaluate(b, lora, plan, false).lossSum());
                        m.frozenHook = null;
                    }
                    m.keptPadding = KeptPadding.MULTIPLE_OF_8;
                    assertEquals(List.of("16", "16", "12", "12"), widths, "padded then unpadded kept widths, " + what);
                    TinyModels.assertSameStep(runs[1], runs[0], lora.names(), 1e-5, what);
                }
        }
        m.setRowBlockMode(RowBlockMode.CONTIGUOUS);
    }
}
