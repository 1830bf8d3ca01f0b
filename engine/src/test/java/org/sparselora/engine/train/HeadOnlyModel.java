package org.sparselora.engine.train;

import java.util.LinkedHashMap;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.RandomWeights;

/**
 * CPU test double of {@link FullParameterModel}: a Llama with no decoder layers, which is exactly
 * embedding → final RMSNorm → head (tied or untied), its forward and backward written out on the host.
 * It lists its parameters under the HF names a real model uses, in the canonical order, as tensors of
 * the backend's compute type (so on a BF16 {@code CpuBackend} the trainer keeps separate fp32 masters),
 * and adds Σ-loss gradients like the real model must. {@code FullTrainerTest} checks its gradients by
 * finite differences before trusting it.
 */
final class HeadOnlyModel implements FullParameterModel {
    final Backend be;
    final LlamaConfig c;
    final LinkedHashMap<String, Tensor> params = new LinkedHashMap<>();
    int calls;

    HeadOnlyModel(Backend be, int vocab, int hidden, boolean tied, long seed) {
        this.be = be;
        this.c = config(vocab, hidden, tied);
        RandomWeights rw = new RandomWeights(c, seed);
        DType dt = be.computeType();
        for (String n : rw.names()) params.put(n, be.fromFloats(rw.get(n).toFloats(), dt, rw.shape(n)));
    }

    static LlamaConfig config(int vocab, int hidden, boolean tied) {
        return new LlamaConfig("LlamaForCausalLM", hidden, 2 * hidden, 0, 2, 2, hidden / 2, vocab, 64, 1e-5f, 10000f, null,
                tied, false, 1, 2);
    }

    @Override public LlamaConfig config() { return c; }

    @Override public Backend backend() { return be; }

    @Override public LinkedHashMap<String, Tensor> parameters() { return params; }

    Tensor head() { return c.tieWordEmbeddings() ? params.get("model.embed_tokens.weight") : params.get("lm_head.weight"); }

    /** Σ CE over the output tokens with the current compute weights (and gradients into grads when non-null). */
    double run(Batch b, ModelGrads grads) {
        int C = c.hiddenSize(), V = c.vocabSize();
        float[] E = be.toFloats(params.get("model.embed_tokens.weight")), g = be.toFloats(params.get("model.norm.weight"));
        float[] H = be.toFloats(head());
        double[] dE = new double[E.length], dg = new double[C], dH = new double[H.length];
        double loss = 0;
        for (int i = 0; i < b.tokenCount(); i++) {
            int tgt = b.targets()[i];
            if (tgt == Batch.IGNORE) continue;
            int tok = b.tokens()[i];
            // x = E[tok]; r = 1/sqrt(mean x² + eps); h = g ⊙ x · r; z = H h; loss = logsumexp(z) − z[tgt]
            double ms = 0;
            for (int k = 0; k < C; k++) ms += (double) E[tok * C + k] * E[tok * C + k];
            double r = 1 / Math.sqrt(ms / C + c.rmsNormEps());
            double[] xh = new double[C], h = new double[C];
            for (int k = 0; k < C; k++) { xh[k] = E[tok * C + k] * r; h[k] = g[k] * xh[k]; }
            double[] z = new double[V];
            double max = Double.NEGATIVE_INFINITY;
            for (int v = 0; v < V; v++) {
                double s = 0;
                for (int k = 0; k < C; k++) s += H[v * C + k] * h[k];
                z[v] = s;
                max = Math.max(max, s);
            }
            double se = 0;
            for (int v = 0; v < V; v++) se += Math.exp(z[v] - max);
            loss += max + Math.log(se) - z[tgt];
            if (grads == null) continue;
            double[] dh = new double[C];
            for (int v = 0; v < V; v++) {
                double dz = Math.exp(z[v] - max) / se - (v == tgt ? 1 : 0);
                for (int k = 0; k < C; k++) { dH[v * C + k] += dz * h[k]; dh[k] += dz * H[v * C + k]; }
            }
            double dot = 0;   // RMSNorm backward: dx = r·(g⊙dh − x̂·mean(x̂ ⊙ g⊙dh))
            for (int k = 0; k < C; k++) { dg[k] += dh[k] * xh[k]; dot += g[k] * dh[k] * xh[k]; }
            for (int k = 0; k < C; k++) dE[tok * C + k] += r * (g[k] * dh[k] - xh[k] * dot / C);
        }
        if (grads != null) {
            if (c.tieWordEmbeddings()) for (int i = 0; i < dE.length; i++) dE[i] += dH[i];
            add(grads.get("model.embed_tokens.weight"), dE);
            add(grads.get("model.norm.weight"), dg);
            if (!c.tieWordEmbeddings()) add(grads.get("lm_head.weight"), dH);
        }
        return loss;
    }

    private void add(Tensor t, double[] d) {
        float[] x = be.toFloats(t);
        for (int i = 0; i < x.length; i++) x[i] += (float) d[i];
        be.copyFromHost(t, x);
    }

    @Override
    public double forwardBackward(Batch batch, ModelGrads grads) {
        calls++;
        return run(batch, grads);
    }
}
