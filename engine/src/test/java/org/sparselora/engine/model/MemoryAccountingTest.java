package org.sparselora.engine.model;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.EnumSet;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.OptimizerConfig;

/**
 * What a training step holds, byte for byte, at the device's dtype sizes (CpuBackend in BF16 counts
 * 2 bytes per activation element, as the GPU stores them): on a model with Llama-3-8B's ratios
 * (I = 3.5·C, 4:1 GQA, head dim C/Hq) the memory a step adds on top of the frozen weights must be
 * exactly the activation stash PEFT would keep plus the LoRA tensors — per layer for q,k,v,o: the
 * residual stream, xn1 (LoRA A of q/k/v reads it), q/k/v/attention output, g and u (swiglu's
 * backward), the per-row statistics, the (N,r) LoRA intermediates; with all seven targets
 * additionally h (down's LoRA reads it) and xn2 (gate/up's LoRA reads it). A layer whose backward
 * does not read h or xn2 must not keep them.
 */
class MemoryAccountingTest {
    // 8B ratios scaled down: C 4096→64, I 14336→224, 32/8 heads of 128 → 4/1 heads of 16
    static final LlamaConfig CFG = config(4);
    static final int B = 2, T = 32, N = B * T, R = 8;

    static LlamaConfig config(int layers) {
        return new LlamaConfig("LlamaForCausalLM", 64, 224, layers, 4, 1, 16, 128, 256, 1e-5f, 500000f, null, false, false, 1, 2);
    }

    static Batch batch(LlamaConfig c) {
        Random r = new Random(3);
        int[] tokens = new int[N], targets = new int[N], pos = new int[N];
        for (int i = 0; i < N; i++) {
            tokens[i] = r.nextInt(c.vocabSize());
            pos[i] = i % T;
            targets[i] = i % T >= T - 8 ? r.nextInt(c.vocabSize()) : Batch.IGNORE;
        }
        return new Batch(B, T, tokens, targets, pos, new int[B]);
    }

    /** Bytes a whole training step (forward, backward, AdamW) holds on top of the weights; checks that closing gives them all back. */
    static long stepBytes(LlamaConfig c, EnumSet<Projection> targets) { return stepBytes(c, targets, false); }

    static long stepBytes(LlamaConfig c, EnumSet<Projection> targets, boolean checkpointing) {
        try (CpuBackend be = new CpuBackend(1, DType.BF16)) {
            LlamaWeights w = LlamaWeights.upload(be, new RandomWeights(c, 5));
            long base = be.liveBytes();
            be.resetPeakBytes();
            LlamaModel m = new LlamaModel(be, w);
            m.setGradientCheckpointing(checkpointing);
            LoraAdapter lora = new LoraAdapter(be, c, new LoraConfig(R, 16f, 0f, targets, false, 1));
            LoraTrainer tr = new LoraTrainer(m, lora, OptimizerConfig.defaults(10));
            Batch b = batch(c);
            for (int s = 0; s < 1; s++) {
                tr.computeGradients(b, s, false);
                tr.applyUpdate(s, b.outputTokenCount());
            }
            long peak = be.peakBytes() - base;
            tr.close();
            lora.close();
            m.close();
            assertEquals(base, be.liveBytes(), "closing the model, adapter and trainer gives back every byte they took");
            org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class, () -> m.forward(b, null, null, 0), "a closed model refuses work");
            return peak;
        }
    }

    /** LoRA bytes of one target per layer: fp32 A and B, their gradients, AdamW's m and v, and the bf16 compute copies of A and B. */
    static long loraBytes(LlamaConfig c, Projection p) {
        long n = (long) R * (p.inDim(c) + p.outDim(c));
        return n * (4 * 4 + 2);
    }

    /** The per-layer stash of a q,k,v,o step at the device's sizes. */
    static long qkvoLayerBytes(LlamaConfig c) {
        long C = c.hiddenSize(), I = c.intermediateSize(), qd = c.qDim(), kd = c.kvDim();
        long bf = 2, f32 = 4;
        long stash = bf * N * (3 * C          // resIn, resMid, xn1
                + 2 * qd + 2 * kd             // q, att; k, v
                + 2 * I)                      // g, u
                + f32 * (2L * N + (long) B * c.numHeads() * T) // rstd1, rstd2, lse
                + bf * 4L * N * R;            // (N,r) LoRA intermediates of q, k, v, o
        long lora = 0;
        for (Projection p : EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O)) lora += loraBytes(c, p);
        return stash + lora;
    }

    @Test
    void aQkvoLayerHoldsExactlyPeftsStash() {
        long four = stepBytes(config(4), EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O));
        long two = stepBytes(config(2), EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O));
        assertEquals(qkvoLayerBytes(CFG), (four - two) / 2, "bytes per layer of a q,k,v,o step (no h, no xn2 kept)");
    }

    @Test
    void allSevenAddsOnlyHXn2AndTheirLora() {
        long qkvo = stepBytes(CFG, EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O));
        long all = stepBytes(CFG, EnumSet.allOf(Projection.class));
        int L = CFG.numLayers();
        long C = CFG.hiddenSize(), I = CFG.intermediateSize();
        long perLayer = 2L * N * (I + C)  // h and xn2 kept per layer ...
                + 2L * 3 * N * R          // gate/up/down's (N,r) intermediates
                + loraBytes(CFG, Projection.GATE) + loraBytes(CFG, Projection.UP) + loraBytes(CFG, Projection.DOWN);
        long sharedGone = 2L * N * (I + C); // ... where q,k,v,o had one h and one xn2 shared by all layers
        assertEquals(L * perLayer - sharedGone, all - qkvo, "all seven − q,k,v,o");
        // at the 8B timing shape the same formula gives the expected gap (printed for the record)
        long n8 = 8 * 512, r8 = 32;
        long gap = 32 * (2 * n8 * (14336 + 4096) + 2 * 3 * n8 * r8 + 3 * r8 * (4096 + 14336) * 18) - 2 * n8 * (14336 + 4096);
        System.out.printf("8B shape, all seven − q,k,v,o: %.2f GiB (h and xn2 per layer, LoRA of gate/up/down)%n", gap / (double) (1L << 30));
    }

    /**
     * Activation checkpointing keeps per layer only the layer's input (the residual stream, (N,C))
     * and the (N,r) LoRA intermediates; the layer's other activations live in one set of buffers
     * that the backward refills by recomputing each layer.
     */
    @Test
    void checkpointingKeepsOnlyTheLayerInputPerLayer() {
        EnumSet<Projection> qkvo = EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O);
        long four = stepBytes(config(4), qkvo, true), two = stepBytes(config(2), qkvo, true);
        long C = CFG.hiddenSize();
        long lora = 0;
        for (Projection p : qkvo) lora += loraBytes(CFG, p);
        assertEquals(2L * N * C + 2L * 4 * N * R + lora, (four - two) / 2, "bytes per layer of a checkpointed q,k,v,o step");
        for (EnumSet<Projection> t : java.util.List.of(qkvo, EnumSet.allOf(Projection.class))) {
            long plain = stepBytes(CFG, t, false), ckpt = stepBytes(CFG, t, true);
            org.junit.jupiter.api.Assertions.assertTrue(ckpt < plain, "checkpointing holds less: " + ckpt + " vs " + plain + " for " + t);
        }
        // at the 8B timing shape (batch 1 × 8k tokens, q,k,v,o r=32) what a layer stops keeping (printed for the record)
        long n8 = 8192, C8 = 4096, I8 = 14336, kv8 = 1024;
        long saved = 32 * (2 * n8 * (2 * C8 + 2 * C8 + 2 * kv8 + 2 * I8) + 4 * (2 * n8 + 32 * n8));
        System.out.printf("8B shape, 1 x 8192 tokens, q,k,v,o: checkpointing frees %.2f GiB of activations%n", saved / (double) (1L << 30));
    }
}
