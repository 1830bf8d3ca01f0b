package org.sparselora.engine.backend;

/**
 * A backend whose attention kernels take the sliding window themselves (the CPU backend and the
 * reference): the windowed calls are what it implements, and the plain calls are window 0 (no
 * window), so each backend writes each attention op once.
 */
public interface WindowedAttention extends Backend {

    @Override
    void attention(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyStart,
                   int batch, int seqLen, int heads, int kvHeads, int headDim, float scale, int window);

    @Override
    void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                           Tensor q, Tensor k, Tensor v, Tensor keyStart,
                           int batch, int seqLen, int heads, int kvHeads, int headDim, float scale, int window);

    @Override
    void attentionCached(Tensor out, Tensor q, Tensor kCache, Tensor vCache, int pos0,
                         int heads, int kvHeads, int headDim, float scale, int window);

    @Override
    default void attention(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyStart,
                           int batch, int seqLen, int heads, int kvHeads, int headDim, float scale) {
        attention(out, lse, q, k, v, keyStart, batch, seqLen, heads, kvHeads, headDim, scale, 0);
    }

    @Override
    default void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor out, Tensor lse,
                                   Tensor q, Tensor k, Tensor v, Tensor keyStart,
                                   int batch, int seqLen, int heads, int kvHeads, int headDim, float scale) {
        attentionBackward(dq, dk, dv, dout, out, lse, q, k, v, keyStart, batch, seqLen, heads, kvHeads, headDim, scale, 0);
    }

    @Override
    default void attentionCached(Tensor out, Tensor q, Tensor kCache, Tensor vCache, int pos0,
                                 int heads, int kvHeads, int headDim, float scale) {
        attentionCached(out, q, kCache, vCache, pos0, heads, kvHeads, headDim, scale, 0);
    }
}
