package org.sparselora.engine.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.EnumSet;
import java.util.List;
import java.util.function.Function;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.SparsePlan.FrozenGrad;

/**
 * Activation checkpointing (keep each layer's input, recompute the layer inside the backward) gives
 * the LoRA gradients and the loss of the run without it, bit for bit on the CPU: dense, SparseLoRA
 * with {@code frozen_grad: sliced} and {@code cut}, every MLP strategy and row-block mode, with and
 * without LoRA dropout (the recompute draws the same masks) and with a bias model.
 */
class GradientCheckpointingTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    /** SparseExecutionTest's plan on this test's backend: layer 0 MLP half-kept; layer 1 MLP, Q/K, V and O partly kept; context tokens sparse. */
    static SparsePlan partial(LlamaConfig c, Batch b, FrozenGrad fg) {
        int[] mlp = IntStream.range(0, c.intermediateSize()).filter(i -> i % 2 == 0).toArray();
        int[] q = IntStream.range(0, c.qDim()).filter(i -> i % 4 == 0 || i % 4 == 3).toArray();
        int[] k = IntStream.range(0, c.kvDim()).filter(i -> i % 4 == 0 || i % 4 == 3).toArray();
        int[] v = IntStream.range(0, c.kvDim()).filter(i -> i % 4 == 1 || i % 4 == 2).toArray();
        int[] o = IntStream.range(0, c.qDim()).filter(i -> i % 4 == 1 || i % 4 == 2).toArray();
        SparsePlan.LayerPlan[] lp = {new SparsePlan.LayerPlan(ints(mlp), null, null, null, null),
                new SparsePlan.LayerPlan(ints(mlp), ints(q), ints(k), ints(v), ints(o))};
        int[] ctx = IntStream.range(0, b.tokenCount()).filter(i -> b.targets()[i] == Batch.IGNORE).toArray();
        int[] out = IntStream.range(0, b.tokenCount()).filter(i -> b.targets()[i] != Batch.IGNORE).toArray();
        return new SparsePlan(ints(ctx), ints(out), lp, fg);
    }

    static org.sparselora.engine.backend.Tensor ints(int... v) { return TinyModels.ints(be, v); }

    record Run(double loss, List<float[]> grads) {}

    static Run step(LlamaConfig c, boolean checkpointing, float dropout, EnumSet<Projection> targets, RowBlockMode mode,
                    Function<Batch, SparsePlan> plan, EnumSet<Mlp.Kind> kinds) {
        try (LlamaModel m = TinyModels.model(be, c, 1); LoraAdapter lora = TinyModels.adapter(be, c, dropout, 2, targets)) {
            m.setGradientCheckpointing(checkpointing);
            m.setRowBlockMode(mode);
            m.mlpKinds = kinds;
            Batch b = TinyModels.batch(c, 3, 2);
            double loss = 0;
            for (int i = 0; i < 2; i++) {   // twice: the second step reuses the activation set
                lora.zeroGrads();
                loss = m.forward(b, lora, plan == null ? null : plan.apply(b), 7 + i);
                m.backward();
            }
            return new Run(loss, TinyModels.host(be, lora.grads()));
        }
    }

    static void assertSame(Run want, Run got, String what) {
        assertEquals(want.loss(), got.loss(), 0.0, "loss, " + what);
        boolean nonZero = false;
        for (int i = 0; i < want.grads().size(); i++) {
            assertArrayEquals(want.grads().get(i), got.grads().get(i), 0f, "gradient " + i + ", " + what);
            for (float x : want.grads().get(i)) nonZero |= x != 0;
        }
        assertTrue(nonZero, "gradients are non-zero, " + what);
    }

    @Test
    void denseGradientsAreBitwiseTheSame() {
        for (boolean bias : new boolean[] {false, true})
            for (float dropout : new float[] {0f, 0.1f})
                for (EnumSet<Projection> t : List.of(EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O), EnumSet.allOf(Projection.class))) {
                    LlamaConfig c = TinyModels.config(false, bias, true);
                    String what = "dense, bias " + bias + ", dropout " + dropout + ", targets " + t;
                    assertSame(step(c, false, dropout, t, RowBlockMode.OFF, null, EnumSet.allOf(Mlp.Kind.class)),
                            step(c, true, dropout, t, RowBlockMode.OFF, null, EnumSet.allOf(Mlp.Kind.class)), what);
                }
    }

    @Test
    void sparseSlicedAndCutGradientsAreBitwiseTheSame() {
        LlamaConfig c = TinyModels.config(false, false, false);
        for (FrozenGrad fg : FrozenGrad.values())
            for (RowBlockMode mode : new RowBlockMode[] {RowBlockMode.OFF, RowBlockMode.CONTIGUOUS, RowBlockMode.ALL})
                for (Mlp.Kind kind : Mlp.Kind.values())
                    for (EnumSet<Projection> t : List.of(EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O), EnumSet.allOf(Projection.class))) {
                        EnumSet<Mlp.Kind> kinds = EnumSet.of(kind, Mlp.Kind.values()[Mlp.Kind.values().length - 1]);
                        Function<Batch, SparsePlan> plan = b -> partial(c, b, fg);
                        String what = fg + ", row blocks " + mode + ", MLP " + kinds + ", targets " + t;
                        assertSame(step(c, false, 0f, t, mode, plan, kinds), step(c, true, 0f, t, mode, plan, kinds), what);
                    }
    }
}
