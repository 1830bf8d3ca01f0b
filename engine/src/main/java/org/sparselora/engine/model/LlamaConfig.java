package org.sparselora.engine.model;

/**
 * The shape of a Llama-family decoder (Llama 2/3.x, Mistral, Qwen2; llama2.c checkpoints map onto
 * it). Field names follow HF {@code config.json}.
 *
 * @param architecture   HF architecture name, e.g. {@code LlamaForCausalLM}, {@code Qwen2ForCausalLM}
 * @param attentionBias  q/k/v projections carry a bias (Qwen2)
 * @param ropeScaling    null for plain RoPE
 * @param slidingWindow  Mistral-style sliding-window attention: query i sees key j only if
 *                       i − j < slidingWindow; 0 = none (full causal attention)
 */
public record LlamaConfig(
        String architecture,
        int hiddenSize,
        int intermediateSize,
        int numLayers,
        int numHeads,
        int numKvHeads,
        int headDim,
        int vocabSize,
        int maxPositions,
        float rmsNormEps,
        float ropeTheta,
        RopeScaling ropeScaling,
        boolean tieWordEmbeddings,
        boolean attentionBias,
        int bosTokenId,
        int eosTokenId,
        int slidingWindow) {

    public LlamaConfig {
        if (slidingWindow < 0) throw new IllegalArgumentException("slidingWindow must be >= 0 (0 = none), got " + slidingWindow);
    }

    /** A config with full causal attention (no sliding window): every family except Mistral's windowed models. */
    public LlamaConfig(String architecture, int hiddenSize, int intermediateSize, int numLayers, int numHeads, int numKvHeads,
                       int headDim, int vocabSize, int maxPositions, float rmsNormEps, float ropeTheta, RopeScaling ropeScaling,
                       boolean tieWordEmbeddings, boolean attentionBias, int bosTokenId, int eosTokenId) {
        this(architecture, hiddenSize, intermediateSize, numLayers, numHeads, numKvHeads, headDim, vocabSize, maxPositions,
                rmsNormEps, ropeTheta, ropeScaling, tieWordEmbeddings, attentionBias, bosTokenId, eosTokenId, 0);
    }

    /** This config with another sliding window (0 = none). */
    public LlamaConfig withSlidingWindow(int window) {
        return new LlamaConfig(architecture, hiddenSize, intermediateSize, numLayers, numHeads, numKvHeads, headDim, vocabSize,
                maxPositions, rmsNormEps, ropeTheta, ropeScaling, tieWordEmbeddings, attentionBias, bosTokenId, eosTokenId, window);
    }

    /** Whether attention is windowed at all (a window is only applied where it is shorter than the sequence). */
    public boolean hasSlidingWindow() { return slidingWindow > 0; }

    /** Llama-3 style frequency rescaling ({@code rope_scaling.rope_type == "llama3"}). */
    public record RopeScaling(String type, float factor, float lowFreqFactor, float highFreqFactor,
                              int originalMaxPositions) {}

    public int qDim() { return numHeads * headDim; }

    public int kvDim() { return numKvHeads * headDim; }
}
