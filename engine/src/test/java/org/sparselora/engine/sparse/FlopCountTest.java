package org.sparselora.engine.sparse;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.EnumSet;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.TinyModels;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.SparsePlan;

/**
 * Pins {@link FlopCount} to counts worked out by hand on a config small enough to do on paper:
 * dense, a sparse plan with token splitting (sliced and cut), LoRA on a subset of projections, the
 * config-priced path agreeing with the executed-plan path, and a sliding window.
 */
class FlopCountTest {
    static final CpuBackend be = new CpuBackend(1);

    @AfterAll
    static void close() { be.close(); }

    // C=4, I=6, 2 layers, 2 query heads over 1 KV head of D=2 (qDim 4, kvDim 2), V=5.
    // Frozen MACs per token: q 16, k 8, v 8, o 16, gate 24, up 24, down 24 = 120 (q+k+v = 32).
    static final LlamaConfig C = new LlamaConfig("LlamaForCausalLM", 4, 6, 2, 2, 1, 2, 5, 16, 1e-5f, 10000f, null, false, false, 1, 2);

    /** B=2, T=3; sequence 1 has one padding token. Context (label -100): seq 0 position 0; seq 1 positions 0 (pad), 1. */
    static Batch batch() {
        int[] tokens = {1, 2, 3, 0, 1, 2};
        int[] targets = {Batch.IGNORE, 3, 4, Batch.IGNORE, Batch.IGNORE, 4};
        int[] positions = {0, 1, 2, 0, 0, 1};
        return new Batch(2, 3, tokens, targets, positions, new int[] {0, 1});
    }

    // N = 6 tokens, 3 output tokens (head), visible pairs: 3·4/2 + 2·3/2 = 9.
    // frozen dense: 2 layers × (fwd 2·6·120 + dX 2·6·120) − layer 0's q/k/v dX 2·6·32 = 5760 − 384 = 5376
    // attention: 4·9·H·D = 144 per layer forward, ×3 (fwd + bwd) × 2 layers = 864
    // head: 2·2·3·C·V = 240
    static final long DENSE_NO_LORA = 5376 + 864 + 240;
    // LoRA r=2 on q and down: q fwd 2·6·2·(4+4) = 192, bwd 24·(2·4+4+4) = 384 (layer 0: no dX, 288);
    // down fwd 24·(6+4) = 240, bwd 24·(2·4+6+6) = 480. Layer 0: 1200, layer 1: 1296.
    static final long LORA = 1200 + 1296;

    static FlopCount.Lora qDown() { return new FlopCount.Lora(2, EnumSet.of(Projection.Q, Projection.DOWN)); }

    @Test
    void denseStepMatchesTheHandCount() {
        Batch b = batch();
        assertEquals(3, b.outputTokenCount());
        assertEquals(new FlopCount.Step(DENSE_NO_LORA, DENSE_NO_LORA, 0), FlopCount.dense(C, FlopCount.Lora.NONE, b));
        assertEquals(DENSE_NO_LORA + LORA, FlopCount.dense(C, qDown(), b).flops());
        // an executed step without a plan is the dense step; from an adapter's config, the same LoRA shape
        LoraConfig lc = new LoraConfig(2, 4f, 0f, EnumSet.of(Projection.Q, Projection.DOWN), false, 1);
        assertEquals(FlopCount.dense(C, qDown(), b), FlopCount.executed(C, FlopCount.Lora.of(lc), b, null, 0));
        assertEquals(FlopCount.Lora.NONE, FlopCount.Lora.of(null));
    }

    @Test
    void denseStepOfTheTinyTestModelMatchesAHandCount() {
        LlamaConfig c = TinyModels.config(true, false, false);
        Batch b = TinyModels.batch(c, 1, 2);
        long N = b.tokenCount(), Cm = c.hiddenSize(), I = c.intermediateSize(), q = c.qDim(), kv = c.kvDim(), L = c.numLayers();
        long perLayerFwd = 2 * N * (Cm * q + 2 * Cm * kv + q * Cm + 3 * Cm * I);
        long layer0Skip = 2 * N * (Cm * q + 2 * Cm * kv);
        long pairs = 7 * 8 / 2 + 5 * 6 / 2;
        long attn = 3 * 4 * pairs * c.numHeads() * c.headDim();
        long head = 4 * b.outputTokenCount() * Cm * c.vocabSize();
        assertEquals(L * (2 * perLayerFwd + attn) - layer0Skip + head, FlopCount.dense(c, FlopCount.Lora.NONE, b).flops());
    }

    /** Layer 0 dense; layer 1: 3 of 6 MLP channels, 1 of 2 KV channels (2 of 4 q channels / o columns). Tokens 0, 3, 4 sparse. */
    static SparsePlan plan(SparsePlan.FrozenGrad fg) {
        SparsePlan.LayerPlan l1 = new SparsePlan.LayerPlan(TinyModels.ints(be, 0, 2, 5), TinyModels.ints(be, 1, 3),
                TinyModels.ints(be, 1), TinyModels.ints(be, 1), TinyModels.ints(be, 1, 3));
        return new SparsePlan(TinyModels.ints(be, 0, 3, 4), TinyModels.ints(be, 1, 2, 5), new SparsePlan.LayerPlan[] {null, l1}, fg);
    }

    // Layer 1's kept slices, MACs per token: q 4·2, k 4·1, v 4·1, o 2·4, gate 4·3, up 4·3, down 3·4 = 60.
    // Layer 1 frozen, 3 dense + 3 sparse tokens: fwd 2·(3·120 + 3·60) = 1080; dX sliced 1080, cut 2·3·120 = 720.
    // Layer 0 (dense): 1440 + 1440 − 384 = 2496.
    static final long FROZEN_SLICED = 2496 + 1080 + 1080, FROZEN_CUT = 2496 + 1080 + 720;

    @Test
    void sparsePlanWithTokenSplitMatchesTheHandCount() {
        Batch b = batch();
        long common = 864 + 240 + LORA;
        FlopCount.Step sliced = FlopCount.executed(C, qDown(), b, plan(SparsePlan.FrozenGrad.SLICED), 100);
        assertEquals(new FlopCount.Step(FROZEN_SLICED + common + 100, DENSE_NO_LORA + LORA, 100), sliced);
        FlopCount.Step cut = FlopCount.executed(C, qDown(), b, plan(SparsePlan.FrozenGrad.CUT), 0);
        assertEquals(new FlopCount.Step(FROZEN_CUT + common, DENSE_NO_LORA + LORA, 0), cut);
        // the same kept counts priced from ratios (layer 1: MLP 0.5 → 3 of 6, attention 0.5 → 1 of 2 KV channels)
        SparsityConfig.Resolved r = new SparsityConfig.Resolved(C, new double[] {0, 0.5}, new double[] {0, 0.5});
        assertEquals(sliced, FlopCount.sparse(C, qDown(), b, r, 3, 3, SparsePlan.FrozenGrad.SLICED, 100));
        assertEquals(cut, FlopCount.sparse(C, qDown(), b, r, 3, 3, SparsePlan.FrozenGrad.CUT, 0));
        // a plan with no sparse token runs densely
        SparsePlan none = new SparsePlan(TinyModels.ints(be), TinyModels.ints(be, 0, 1, 2, 3, 4, 5), plan(SparsePlan.FrozenGrad.CUT).layers(),
                SparsePlan.FrozenGrad.CUT);
        assertEquals(FlopCount.dense(C, qDown(), b), FlopCount.executed(C, qDown(), b, none, 0));
        assertThrows(IllegalArgumentException.class, () -> FlopCount.sparse(C, qDown(), b, r, 3, 2, SparsePlan.FrozenGrad.CUT, 0));
    }

    @Test
    void cutOnlySkipsTheBackwardOfSparseProjections() {
        // attention sparse, MLP dense in layer 1: the MLP's backward is full under cut too
        Batch b = batch();
        SparsityConfig.Resolved r = new SparsityConfig.Resolved(C, new double[] {0, 0}, new double[] {0, 0.5});
        long slicedAttn = 4 * 2 + 4 + 4 + 2 * 4; // q, k, v, o slice MACs per token = 24 (of 48)
        long layer1Sliced = 2 * (3 * 120 + 3 * (72 + slicedAttn)) * 2;
        long layer1Cut = 2 * (3 * 120 + 3 * (72 + slicedAttn)) + 2 * (3 * 120 + 3 * 72);
        long common = 864 + 240;
        assertEquals(2496 + layer1Sliced + common, FlopCount.sparse(C, FlopCount.Lora.NONE, b, r, 3, 3, SparsePlan.FrozenGrad.SLICED, 0).flops());
        assertEquals(2496 + layer1Cut + common, FlopCount.sparse(C, FlopCount.Lora.NONE, b, r, 3, 3, SparsePlan.FrozenGrad.CUT, 0).flops());
    }

    @Test
    void aSlidingWindowCountsOnlyTheVisiblePairs() {
        // window 2: seq 0 (3 tokens) sees 1 + 2 + 2 = 5 pairs, seq 1 (2 tokens) 1 + 2 = 3: 8 instead of 9
        long attn = 4 * 8 * 2 * 2 * 3 * 2;
        assertEquals(5376 + attn + 240, FlopCount.dense(C.withSlidingWindow(2), FlopCount.Lora.NONE, batch()).flops());
        assertEquals(DENSE_NO_LORA, FlopCount.dense(C.withSlidingWindow(3), FlopCount.Lora.NONE, batch()).flops());
        assertEquals(10, FlopCount.visiblePairs(4, 0));
        assertEquals(1 + 2 + 3 + 3 + 3, FlopCount.visiblePairs(5, 3));
    }
}
