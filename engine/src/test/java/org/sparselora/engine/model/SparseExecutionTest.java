package org.sparselora.engine.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.sparse.SparsePlan;
import org.sparselora.engine.sparse.SparsePlan.FrozenGrad;
import org.sparselora.engine.sparse.SparsePlan.LayerPlan;
import org.sparselora.engine.train.Batch;

/**
 * SparseLoRA's execution in the model, with hand-built plans: every channel kept is bit-for-bit
 * dense; LoRA gradients of the sparse forward match finite differences with token splitting on,
 * for {@code frozen_grad: sliced} (FD of the sparse forward itself) and {@code cut} (FD of the
 * sparse forward with the sparse tokens' frozen outputs held constant — what a cut means).
 */
class SparseExecutionTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    static int[] where(Batch b, boolean context) {
        return IntStream.range(0, b.tokenCount()).filter(i -> (b.targets()[i] == Batch.IGNORE) == context).toArray();
    }

    static Tensor ints(int... v) { return TinyModels.ints(be, v); }

    static SparsePlan allKept(LlamaConfig c, Batch b, FrozenGrad fg, boolean split) {
        LayerPlan[] lp = new LayerPlan[c.numLayers()];
        for (int l = 0; l < lp.length; l++)
            lp[l] = new LayerPlan(ints(IntStream.range(0, c.intermediateSize()).toArray()), ints(IntStream.range(0, c.qDim()).toArray()),
                    ints(IntStream.range(0, c.kvDim()).toArray()), ints(IntStream.range(0, c.kvDim()).toArray()), ints(IntStream.range(0, c.qDim()).toArray()));
        return split ? new SparsePlan(ints(where(b, true)), ints(where(b, false)), lp, fg)
                : new SparsePlan(ints(IntStream.range(0, b.tokenCount()).toArray()), null, lp, fg);
    }

    /** Layer 0: MLP half-kept; layer 1: MLP, Q/K (d ∈ {0,3} in every head), V (d ∈ {1,2}) and O following V. */
    static SparsePlan partial(LlamaConfig c, Batch b, FrozenGrad fg) {
        int[] mlp = IntStream.range(0, c.intermediateSize()).filter(i -> i % 2 == 0).toArray();
        int[] q = IntStream.range(0, c.qDim()).filter(i -> i % 4 == 0 || i % 4 == 3).toArray();
        int[] k = IntStream.range(0, c.kvDim()).filter(i -> i % 4 == 0 || i % 4 == 3).toArray();
        int[] v = IntStream.range(0, c.kvDim()).filter(i -> i % 4 == 1 || i % 4 == 2).toArray();
        int[] o = IntStream.range(0, c.qDim()).filter(i -> i % 4 == 1 || i % 4 == 2).toArray();
        LayerPlan[] lp = {new LayerPlan(ints(mlp), null, null, null, null), new LayerPlan(ints(mlp), ints(q), ints(k), ints(v), ints(o))};
        return new SparsePlan(ints(where(b, true)), ints(where(b, false)), lp, fg);
    }

    static List<float[]> grads(LoraAdapter lora) {
        List<float[]> g = new ArrayList<>();
        for (Tensor t : lora.grads()) g.add(be.toFloats(t));
        return g;
    }

    @Test
    void everyChannelKeptIsBitForBitDense() {
        LlamaConfig c = TinyModels.config(false, true, true);
        LlamaModel m = TinyModels.model(be, c, 1);
        LoraAdapter lora = TinyModels.adapter(be, c, 0.1f, 2);
        Batch b = TinyModels.batch(c, 3, 2);
        double dense = m.forward(b, lora, null, 7);
        m.backward();
        List<float[]> g0 = grads(lora);
        for (boolean split : new boolean[] {true, false}) {
            lora.zeroGrads();
            double sparse = m.forward(b, lora, allKept(c, b, FrozenGrad.SLICED, split), 7);
            m.backward();
            assertEquals(dense, sparse, 0.0, "loss, split=" + split);
            List<float[]> g1 = grads(lora);
            for (int i = 0; i < g0.size(); i++) assertArrayEquals(g0.get(i), g1.get(i), lora.names().get(i) + " split=" + split);
        }
    }

    @Test
    void slicedGradientsMatchFiniteDifferencesOfTheSparseForward() {
        LlamaConfig c = TinyModels.config(false, true, true);
        LlamaModel m = TinyModels.model(be, c, 4);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 5);
        Batch b = TinyModels.batch(c, 6, 2);
        SparsePlan plan = partial(c, b, FrozenGrad.SLICED);
        double dense = m.evaluate(b, lora, null, false).lossSum(), sparse = m.evaluate(b, lora, plan, false).lossSum();
        assertTrue(Math.abs(dense - sparse) > 1e-3, "the plan must actually prune something");
        LlamaModelTest.checkLoraGradients(m, lora, () -> { m.forward(b, lora, plan, 0); m.backward(); },
                () -> m.evaluate(b, lora, plan, false).lossSum(), "sliced");
    }

    @Test
    void cutGradientsMatchFiniteDifferencesWithFrozenSparseOutputsHeldConstant() {
        LlamaConfig c = TinyModels.config(true, false, true);
        LlamaModel m = TinyModels.model(be, c, 8);
        LoraAdapter lora = TinyModels.adapter(be, c, 0f, 9);
        Batch b = TinyModels.batch(c, 10, 3);
        SparsePlan cut = partial(c, b, FrozenGrad.CUT);
        // record the sparse tokens' frozen outputs at the current parameters, then replay them in FD
        Map<String, float[]> recorded = new HashMap<>();
        m.frozenHook = (l, p, ys) -> recorded.put(l + "/" + p, be.toFloats(ys));
        m.evaluate(b, lora, cut, false);
        m.frozenHook = (l, p, ys) -> be.copyFromHost(ys, recorded.get(l + "/" + p));
        LlamaModelTest.checkLoraGradients(m, lora, () -> { m.forward(b, lora, cut, 0); m.backward(); },
                () -> m.evaluate(b, lora, cut, false).lossSum(), "cut");
        m.frozenHook = null;
        // and cut really differs from sliced (layer-0 adapters see less gradient)
        lora.zeroGrads();
        m.forward(b, lora, cut, 0);
        m.backward();
        List<float[]> gc = grads(lora);
        lora.zeroGrads();
        m.forward(b, lora, partial(c, b, FrozenGrad.SLICED), 0);
        m.backward();
        List<float[]> gs = grads(lora);
        assertTrue(!java.util.Arrays.equals(gc.get(0), gs.get(0)), "layer-0 q_proj.lora_A gradient must differ between cut and sliced");
        int last = gc.size() - 1; // layer 1 down_proj.lora_B: no frozen projection between it and the loss
        assertArrayEquals(gs.get(last), gc.get(last));
    }

    @Test
    void planMustCoverTheBatch() {
        LlamaConfig c = TinyModels.config(false, false, false);
        LlamaModel m = TinyModels.model(be, c, 1);
        Batch b = TinyModels.batch(c, 3, 2);
        SparsePlan p = allKept(c, b, FrozenGrad.SLICED, true);
        SparsePlan bad = new SparsePlan(p.sparseTokens(), ints(0), p.layers(), FrozenGrad.SLICED);
        var e = assertThrows(IllegalArgumentException.class, () -> m.evaluate(b, null, bad, false));
        assertTrue(e.getMessage().contains("the batch has 14"), e.getMessage());
        SparsePlan few = new SparsePlan(p.sparseTokens(), p.denseTokens(), new LayerPlan[1], FrozenGrad.SLICED);
        assertThrows(IllegalArgumentException.class, () -> m.evaluate(b, null, few, false));
    }
}
