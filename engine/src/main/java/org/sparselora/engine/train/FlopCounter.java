package org.sparselora.engine.train;

import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.sparse.SparsePlan;

/**
 * Analytic FLOP count of one training step (forward + backward) exactly as {@code LlamaModel}
 * executes it: frozen GEMMs (per token group and kept fraction; the backward's input-gradient GEMM
 * follows {@code frozen_grad}, and layer 0's q/k/v input gradient is skipped since it would only
 * reach the frozen embedding), the dense LoRA branch, causal attention over the non-padded keys,
 * and the head over output tokens only (no head weight gradient). A multiply-add counts 2.
 * Element-wise ops (norms, RoPE, SwiGLU, softmax) are not counted.
 */
public final class FlopCounter {
    private FlopCounter() {}

    /** FLOPs of the step under {@code plan} (null = dense). */
    public static long step(LlamaConfig c, LoraConfig lora, Batch b, SparsePlan plan) {
        int n = b.tokenCount();
        long nS = 0, nD = n;
        boolean sparse = plan != null && plan.sparseTokens() != null && plan.sparseTokens().numel() > 0;
        if (sparse) {
            nS = plan.sparseTokens().numel();
            nD = n - nS;
        }
        boolean sliced = !sparse || plan.frozenGrad() == SparsePlan.FrozenGrad.SLICED;
        long f = 0;
        for (int l = 0; l < c.numLayers(); l++) {
            SparsePlan.LayerPlan lp = sparse ? plan.layers()[l] : null;
            for (Projection p : Projection.values()) {
                long in = p.inDim(c), out = p.outDim(c);
                boolean needDx = l > 0 || !(p == Projection.Q || p == Projection.K || p == Projection.V);
                Long kept = lp == null ? null : keptCount(lp, p);
                if (kept == null) {
                    long g = 2L * n * in * out;
                    f += g + (needDx ? g : 0);
                } else {
                    long dense = 2L * nD * in * out;
                    long slice = p == Projection.O || p == Projection.DOWN ? 2L * nS * kept * out : 2L * nS * in * kept;
                    f += dense + slice;
                    if (needDx) f += dense + (sliced ? slice : 0);
                }
                if (lora != null && lora.targets().contains(p)) {
                    long r = lora.r();
                    f += 2L * n * r * (in + out);                       // U = x·Aᵀ, y += s·U·Bᵀ
                    f += 2L * n * r * (2 * out + in + (needDx ? in : 0)); // dB, dU, dA, dx
                }
            }
            f += 3 * attentionForward(c, b); // forward + backward (2×)
        }
        long outTok = b.outputTokenCount();
        f += 2L * 2L * outTok * c.hiddenSize() * c.vocabSize(); // logits + the head's input gradient
        return f;
    }

    /** 2·(QKᵀ + PV) over the causal, non-padded key range of every sequence and head. */
    static long attentionForward(LlamaConfig c, Batch b) {
        long pairs = 0;
        for (int s = 0; s < b.batch(); s++) {
            long t = b.seqLen() - Math.max(0, b.keyStart()[s]);
            pairs += t * (t + 1) / 2;
        }
        return 2L * 2L * pairs * c.numHeads() * c.headDim();
    }

    private static Long keptCount(SparsePlan.LayerPlan lp, Projection p) {
        var t = switch (p) {
            case Q -> lp.q(); case K -> lp.k(); case V -> lp.v(); case O -> lp.o();
            case GATE, UP, DOWN -> lp.mlp();
        };
        return t == null ? null : t.numel();
    }
}
