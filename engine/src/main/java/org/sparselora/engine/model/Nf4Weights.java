package org.sparselora.engine.model;

import java.util.SplittableRandom;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Nf4;
import org.sparselora.engine.backend.Tensor;

/**
 * QLoRA's frozen projections: every layer's q, k, v, o, gate, up and down weights stored as NF4
 * ({@link Nf4}: 4-bit codes packed in I32, one F32 absmax per block of 64 — 4.5 bits a weight), and
 * one scratch tensor per projection in the compute type that holds one layer's weights at a time.
 * The layers' {@link LlamaWeights.Layer} projections all point at the scratch tensors; the model
 * calls {@link #materialize} before it runs a layer (forward, recompute, backward), and the
 * SparseLoRA path dequantizes its kept slices straight from the codes ({@link #packed}, {@link #absmax}).
 * Embedding, norms, biases and the head stay in the compute type, as in QLoRA.
 */
public final class Nf4Weights implements AutoCloseable {
    private final Backend be;
    private final LlamaConfig c;
    private final Tensor[][] packed, absmax;   // [layer][projection]
    private final Tensor[] scratch;            // [projection] (out, in) compute type
    private final boolean doubleQuant;
    private int current = -1;                  // the layer the scratch holds (-1: none)

    Nf4Weights(Backend be, LlamaConfig c, boolean doubleQuant) {
        this.be = be;
        this.c = c;
        this.doubleQuant = doubleQuant;
        int L = c.numLayers(), np = Projection.values().length;
        packed = new Tensor[L][np];
        absmax = new Tensor[L][np];
        scratch = new Tensor[np];
        for (Projection p : Projection.values()) scratch[p.ordinal()] = be.empty(be.computeType(), p.outDim(c), p.inDim(c));
    }

    /** Quantizes (l, p)'s weight from host floats (out·in, row-major) and returns the scratch tensor the layer reads. */
    Tensor put(int l, Projection p, float[] w) {
        Nf4.Quantized q = Nf4.quantize(w);
        float[] am = doubleQuant ? Nf4.absmax(Nf4.doubleQuantize(q.absmax())) : q.absmax();
        return put(l, p, q.packed(), am);
    }

    /**
     * Random codes and absmax for (l, p) (timing runs: an 8B model without quantizing 7B host floats):
     * uniform codes, absmax about what a block of 64 draws of N(0, std²) has (2–3 std).
     */
    Tensor putRandom(int l, Projection p, float std, long seed) {
        int n = p.outDim(c) * p.inDim(c);
        SplittableRandom r = new SplittableRandom(seed);
        int[] pk = new int[(n + 7) / 8];
        for (int i = 0; i < pk.length; i++) pk[i] = r.nextInt();
        float[] am = new float[Nf4.blocks(n)];
        for (int i = 0; i < am.length; i++) am[i] = (float) (std * (2 + r.nextDouble()));
        return put(l, p, pk, am);
    }

    private Tensor put(int l, Projection p, int[] pk, float[] am) {
        packed[l][p.ordinal()] = be.fromInts(pk, pk.length);
        absmax[l][p.ordinal()] = be.fromFloats(am, DType.F32, am.length);
        current = -1;
        return scratch[p.ordinal()];
    }

    /** Dequantizes layer l's seven projections into the scratch tensors (nothing when they already hold it). */
    public void materialize(int l) {
        if (current == l) return;
        for (Projection p : Projection.values()) be.dequantizeNf4(scratch[p.ordinal()], packed[l][p.ordinal()], absmax[l][p.ordinal()]);
        current = l;
    }

    /**
     * Forgets which layer the scratch holds, so the next {@link #materialize} dequantizes again: a
     * recorded step (CUDA graph) must contain every dequantization, whatever the scratch held when
     * it was recorded.
     */
    public void invalidate() { current = -1; }

    /** The (l, p) codes, (⌈out·in/8⌉) I32. */
    public Tensor packed(int l, Projection p) { return packed[l][p.ordinal()]; }

    /** The (l, p) absmax constants, (⌈out·in/64⌉) F32. */
    public Tensor absmax(int l, Projection p) { return absmax[l][p.ordinal()]; }

    public boolean doubleQuant() { return doubleQuant; }

    /** Device bytes of the codes and constants (what the frozen projections cost), not counting the scratch. */
    public long quantizedBytes() {
        long b = 0;
        for (Tensor[] ts : packed) for (Tensor t : ts) if (t != null) b += 4L * t.numel();
        for (Tensor[] ts : absmax) for (Tensor t : ts) if (t != null) b += 4L * t.numel();
        return b;
    }

    @Override
    public void close() {
        for (Tensor[][] tss : new Tensor[][][] {packed, absmax})
            for (Tensor[] ts : tss) for (Tensor t : ts) if (t != null) t.close();
        for (Tensor t : scratch) t.close();
    }
}
