package org.sparselora.engine.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;
import java.util.function.Function;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Nf4;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.SparsePlan.FrozenGrad;

/**
 * QLoRA: a model whose projections are stored as NF4 ({@link LlamaWeights#uploadNf4}) trains exactly
 * like a plain model whose projections hold the dequantized values — loss and LoRA gradients bit
 * for bit on the CPU, dense and SparseLoRA (whose kept slices are dequantized straight from the
 * codes), with and without activation checkpointing and double quantization — and evaluation and
 * generation read the right layer's weights. The NF4 projections take 4.5 bits a weight.
 */
class QloraTest {
    static final CpuBackend be = new CpuBackend(2);

    @AfterAll
    static void close() { be.close(); }

    /** src with every projection replaced by its NF4 round trip (absmax double-quantized when asked). */
    record Dequantized(WeightSource src, boolean doubleQuant) implements WeightSource {
        @Override public LlamaConfig config() { return src.config(); }
        @Override public Set<String> names() { return src.names(); }
        @Override public HostTensor get(String name) {
            HostTensor h = src.get(name);
            if (!name.endsWith("_proj.weight")) return h;
            Nf4.Quantized q = Nf4.quantize(h.toFloats());
            if (doubleQuant) q = new Nf4.Quantized(q.packed(), Nf4.absmax(Nf4.doubleQuantize(q.absmax())), q.numel());
            float[] d = Nf4.dequantize(q);
            MemorySegment seg = Arena.ofAuto().allocate(4L * d.length, 4);
            for (int i = 0; i < d.length; i++) seg.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i, d[i]);
            return new HostTensor(name, DType.F32, h.shape(), seg);
        }
    }

    record Run(double loss, List<float[]> grads, double eval) {}

    static Run step(LlamaWeights w, boolean checkpointing, Function<Batch, SparsePlan> plan) {
        LlamaConfig c = w.config;
        try (LlamaModel m = new LlamaModel(be, w); LoraAdapter lora = TinyModels.adapter(be, c, 0.1f, 2, EnumSet.allOf(Projection.class))) {
            m.setGradientCheckpointing(checkpointing);
            Batch b = TinyModels.batch(c, 3, 2);
            double loss = 0;
            for (int i = 0; i < 2; i++) {
                lora.zeroGrads();
                loss = m.forward(b, lora, plan == null ? null : plan.apply(b), 7 + i);
                m.backward();
            }
            List<float[]> g = TinyModels.host(be, lora.grads());
            double eval = m.evaluate(b, lora, null, false).lossSum();
            return new Run(loss, g, eval);
        }
    }

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

    static void assertSame(Run want, Run got, String what) {
        assertEquals(want.loss(), got.loss(), 0.0, "loss, " + what);
        assertEquals(want.eval(), got.eval(), 0.0, "evaluation, " + what);
        for (int i = 0; i < want.grads().size(); i++) assertArrayEquals(want.grads().get(i), got.grads().get(i), 0f, "gradient " + i + ", " + what);
    }

    @Test
    void nf4TrainsLikeItsDequantizedWeights() {
        for (boolean bias : new boolean[] {false, true})
            for (boolean dq : new boolean[] {false, true}) {
                LlamaConfig c = TinyModels.config(false, bias, false);
                RandomWeights src = new RandomWeights(c, 1);
                List<Function<Batch, SparsePlan>> plans = List.of(b -> null, b -> partial(c, b, FrozenGrad.SLICED), b -> partial(c, b, FrozenGrad.CUT));
                for (int pi = 0; pi < plans.size(); pi++)
                    for (boolean ckpt : new boolean[] {false, true}) {
                        Function<Batch, SparsePlan> plan = plans.get(pi);
                        try (LlamaWeights plain = LlamaWeights.upload(be, new Dequantized(src, dq));
                             LlamaWeights nf4 = LlamaWeights.uploadNf4(be, src, dq)) {
                            assertSame(step(plain, ckpt, plan), step(nf4, ckpt, plan),
                                    "bias " + bias + ", double quant " + dq + ", plan " + pi + ", checkpointing " + ckpt);
                        }
                    }
            }
    }

    @Test
    void quantizationChangesTheModelALittleAndStoresFourAndAHalfBits() {
        LlamaConfig c = TinyModels.config(false, false, false);
        RandomWeights src = new RandomWeights(c, 1);
        try (LlamaWeights plain = LlamaWeights.upload(be, src); LlamaWeights nf4 = LlamaWeights.uploadNf4(be, src, false)) {
            Run a = step(plain, false, null), b = step(nf4, false, null);
            assertNotEquals(a.loss(), b.loss(), "the NF4 model is a different model");
            // close to the original: NF4's relative RMS error on normally distributed weights is about 0.1
            for (Projection p : Projection.values()) {
                float[] w = src.get("model." + p.path(1) + ".weight").toFloats(), d = Nf4.dequantize(Nf4.quantize(w));
                double num = 0, den = 0;
                for (int i = 0; i < w.length; i++) { num += (d[i] - w[i]) * (d[i] - w[i]); den += w[i] * w[i]; }
                assertTrue(Math.sqrt(num / den) < 0.15, p + ": relative RMS error " + Math.sqrt(num / den));
            }
            long n = 0;
            for (Projection p : Projection.values()) n += (long) c.numLayers() * p.outDim(c) * p.inDim(c);
            long bytes = nf4.nf4().quantizedBytes();
            assertTrue(bytes <= n / 2 + 4 * (n / 64 + 8L * c.numLayers() * 7), "NF4 bytes " + bytes + " for " + n + " weights");
        }
    }

    @Test
    void generationReadsEachLayersOwnWeights() {
        LlamaConfig c = TinyModels.config(false, false, false);
        RandomWeights src = new RandomWeights(c, 1);
        try (LlamaWeights plain = LlamaWeights.upload(be, new Dequantized(src, false)); LlamaWeights nf4 = LlamaWeights.uploadNf4(be, src, false);
             LlamaModel mp = new LlamaModel(be, plain); LlamaModel mq = new LlamaModel(be, nf4);
             LlamaModel.KvCache kp = mp.newKvCache(8); LlamaModel.KvCache kq = mq.newKvCache(8)) {
            assertArrayEquals(mp.forwardCached(new int[] {1, 5, 7}, 0, kp, null), mq.forwardCached(new int[] {1, 5, 7}, 0, kq, null), 0f);
            assertArrayEquals(mp.forwardCached(new int[] {3}, 3, kp, null), mq.forwardCached(new int[] {3}, 3, kq, null), 0f);
        }
    }
}
