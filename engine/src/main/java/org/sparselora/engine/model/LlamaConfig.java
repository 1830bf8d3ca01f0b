package org.sparselora.engine.model;

/**
 * The shape of a Llama-family decoder (Llama 2/3.x, Mistral, Qwen2; llama2.c checkpoints map onto
 * it). Field names follow HF {@code config.json}.
 *
 * @param architecture   HF architecture name, e.g. {@code LlamaForCausalLM}, {@code Qwen2ForCausalLM}
 * @param attentionBias  q/k/v projections carry a bias (Qwen2)
 * @param ropeScaling    null for plain RoPE
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
        int eosTokenId) {

    /** Llama-3 style frequency rescaling ({@code rope_scaling.rope_type == "llama3"}). */
    public record RopeScaling(String type, float factor, float lowFreqFactor, float highFreqFactor,
                              int originalMaxPositions) {}

    public int qDim() { return numHeads * headDim; }

    public int kvDim() { return numKvHeads * headDim; }
}
