package org.sparselora.engine.model;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.SparseOps;
import org.sparselora.engine.backend.Tensor;

/**
 * One step of the model, from {@code prepareStep} (or an evaluation) to its backward: what the host
 * decided for it — the activation set, the LoRA branch, the token split ({@link TokenGroups}, null
 * when nothing runs sparse), the plan and the in-flight selector — and the strategies each layer
 * chose, once, as the forward reached it (a selector decides a layer's kept channels only then):
 * q/k/v/o's {@link FrozenLinear}s, q/k/v's {@link QkvInputGrad} and the {@link Mlp}. The backward runs
 * what the forward chose.
 */
final class Step {
    final Activations a;
    final LoraBranch lora;
    final TokenGroups groups;        // null: every projection dense on every token
    final SparsePlan plan;
    final LayerSelector selector;    // null: the plan comes complete
    final boolean training;
    /** The selector scores every row with the padding rows zeroed (shape buckets) instead of the non-padding rows. */
    final boolean maskPadding;
    /** Non-padding rows the selector scores (-1: no selector, -2: every row, padding zeroed): shapes its GEMMs. */
    final int realRows;
    /** Where the base weights' gradients go: {@link WeightGrads#NONE} unless the step trains every parameter (dense only). */
    WeightGrads grads = WeightGrads.NONE;
    int outputs;                     // rows of the loss head (output rows, bucketed)
    boolean prepared, stashed;       // queueForward may follow; backward may follow

    final FrozenLinear[][] attention;   // [layer][q, k, v, o]
    final QkvInputGrad[] qkvGrad;
    final Mlp[] mlp;

    Step(Activations a, LoraBranch lora, TokenGroups groups, SparsePlan plan, LayerSelector selector, boolean training,
         boolean maskPadding, int realRows, int layers) {
        this.a = a;
        this.lora = lora;
        this.groups = groups;
        this.plan = plan;
        this.selector = selector;
        this.training = training;
        this.maskPadding = maskPadding;
        this.realRows = realRows;
        this.attention = new FrozenLinear[layers][4];
        this.qkvGrad = new QkvInputGrad[layers];
        this.mlp = new Mlp[layers];
    }

    /** Layer l's entry of the plan; null when the layer (or the whole step) runs dense. */
    SparsePlan.LayerPlan layerPlan(int l) { return groups == null ? null : plan.layers()[l]; }

    /** The MLP strategies the layers chose (tests check which path ran). */
    List<Mlp.Kind> mlpKinds() {
        List<Mlp.Kind> r = new ArrayList<>();
        for (Mlp m : mlp) if (m != null) r.add(m.kind());
        return r;
    }

    /**
     * Chooses layer l's strategies from the step and the layer's plan entry: the frozen projections
     * dense, sliced or on row blocks; the MLP compact, joined or projected (the first of
     * {@code kinds}, in that order, that the layer allows).
     */
    static final class Choice {
        private final Backend be;
        private final SparseOps sp;      // null on a backend without SparseLoRA ops: only dense steps
        private final LlamaWeights w;
        private final WeightSlices slices;
        private final Set<Mlp.Kind> kinds;

        Choice(Backend be, SparseOps sp, LlamaWeights w, WeightSlices slices, Set<Mlp.Kind> kinds) {
            this.be = be;
            this.sp = sp;
            this.w = w;
            this.slices = slices;
            this.kinds = kinds;
        }

        /** Layer l's q, k, v, o and q/k/v's input gradient, once its attention channels are known. */
        void attention(Step s, int l) {
            SparsePlan.LayerPlan lp = s.layerPlan(l);
            Projection[] ps = {Projection.Q, Projection.K, Projection.V, Projection.O};
            for (int i = 0; i < 4; i++) s.attention[l][i] = linear(s, l, ps[i], lp == null ? null : WeightSlices.keptIndex(lp, ps[i]));
            s.qkvGrad[l] = s.groups == null ? QkvInputGrad.dense(be, w.layers[l])
                    : QkvInputGrad.of(sp, s.groups, w, slices, l, lp == null ? new Tensor[3] : new Tensor[] {lp.q(), lp.k(), lp.v()});
            if (s.grads.active()) s.qkvGrad[l] = QkvInputGrad.withWeightGrads(s.qkvGrad[l], s.attention[l], l);
        }

        /** Layer l's MLP, once its MLP channels are known. */
        void mlp(Step s, int l) {
            SparsePlan.LayerPlan lp = s.layerPlan(l);
            Tensor kept = lp == null ? null : slices.mlpKept(l, lp.mlp());
            TokenGroups g = s.groups;
            if (kept != null && kinds.contains(Mlp.Kind.COMPACT) && compactAllowed(s, l))
                s.mlp[l] = g.sBlocks != null ? new CompactMlpRowBlocks(be, g, w, slices, l, kept) : new CompactMlp(be, g, w, slices, l, kept);
            else if (kept != null && kinds.contains(Mlp.Kind.JOINED) && joinedAllowed(s, l))
                s.mlp[l] = new JoinedMlp(sp, g, s.lora, w, slices, l, kept);
            else
                s.mlp[l] = new ProjectedMlp(be, linear(s, l, Projection.GATE, kept), linear(s, l, Projection.UP, kept),
                        linear(s, l, Projection.DOWN, kept), s.lora);
        }

        /** The frozen part of (l, p) on the kept set idx (null: dense). */
        private FrozenLinear linear(Step s, int l, Projection p, Tensor idx) {
            if (idx == null || s.groups == null)
                return new DenseLinear(be, w.layers[l].weight(p), w.layers[l].bias(p), s.grads.linear(s.a, l, p));
            return s.groups.sBlocks != null ? new RowBlockLinear(sp, s.groups, w, slices, l, p, idx)
                    : new SlicedLinear(sp, s.groups, w, slices, l, p, idx);
        }

        private boolean noMlpBias(int l) {
            LlamaWeights.Layer lw = w.layers[l];
            for (Projection p : new Projection[] {Projection.GATE, Projection.UP, Projection.DOWN})
                if (lw.bias(p) != null) return false;
            return true;
        }

        /**
         * Compact: gate/up/down carry neither LoRA nor bias, so the sparse tokens' MLP never needs the
         * full intermediate width.
         */
        private boolean compactAllowed(Step s, int l) {
            if (!noMlpBias(l)) return false;
            for (Projection p : new Projection[] {Projection.GATE, Projection.UP, Projection.DOWN})
                if (s.lora.has(l, p)) return false;
            return true;
        }

        /** Joined: LoRA present, the token groups gathered (not row blocks), no MLP bias, no LoRA dropout in this forward. */
        private boolean joinedAllowed(Step s, int l) {
            return s.groups.sBlocks == null && s.lora.adapter != null && !s.lora.dropoutOn() && noMlpBias(l);
        }
    }
}
