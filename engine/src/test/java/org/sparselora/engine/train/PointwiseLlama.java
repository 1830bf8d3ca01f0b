package org.sparselora.engine.train;

import org.sparselora.engine.model.Batch;

import java.util.LinkedHashMap;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.model.RandomWeights;

/**
 * CPU test double of {@link FullParameterModel}: a Llama-family decoder with a sliding window of 1
 * (each position attends to itself only, so the softmax is 1 and attention is {@code o_proj(v)} of
 * the head's kv group), written out per token on the host in double precision, forward and backward.
 * Every parameter kind of the real model is there under its HF name (embedding, both norms of each
 * layer, all seven projections, q/k/v biases with {@code bias}, final norm, head tied or untied), in
 * the canonical order, as tensors of the backend's compute type; q and k (and their biases) get an
 * exactly zero gradient, as they do in the real model at window 1. {@code FullTrainerTest} checks
 * the gradients by finite differences; the real model with the same config and weights must give the
 * same losses and gradients.
 */
public final class PointwiseLlama implements FullParameterModel {
    final Backend be;
    final LlamaConfig c;
    final LinkedHashMap<String, Tensor> params = new LinkedHashMap<>();

    public PointwiseLlama(Backend be, int vocab, int hidden, int layers, boolean tied, boolean bias, long seed) {
        this(be, new RandomWeights(config(vocab, hidden, layers, tied, bias), seed));
    }

    /**
     * The double over given weights (their config must have a sliding window of 1), e.g. the same
     * weights a {@code LlamaModel} under test is uploaded from: the two must then agree.
     */
    public PointwiseLlama(Backend be, WeightSource src) {
        if (src.config().slidingWindow() != 1)
            throw new IllegalArgumentException("PointwiseLlama computes attention with a window of 1; the config has " + src.config().slidingWindow());
        this.be = be;
        this.c = src.config();
        DType dt = be.computeType();
        for (var e : org.sparselora.engine.io.HfCheckpoint.expectedShapes(c).entrySet())   // the canonical order
            params.put(e.getKey(), be.fromFloats(src.get(e.getKey()).toFloats(), dt, e.getValue()));
    }

    /** 4 heads over 2 kv heads (grouped-query), SwiGLU width 2·hidden, window 1. */
    public static LlamaConfig config(int vocab, int hidden, int layers, boolean tied, boolean bias) {
        return new LlamaConfig(bias ? "Qwen2ForCausalLM" : "MistralForCausalLM", hidden, 2 * hidden, layers, 4, 2, hidden / 4, vocab, 64,
                1e-5f, 10000f, null, tied, bias, 1, 2, 1);
    }

    @Override public LlamaConfig config() { return c; }

    @Override public Backend backend() { return be; }

    @Override public LinkedHashMap<String, Tensor> parameters() { return params; }

    private double[] w(String n) {
        float[] f = be.toFloats(params.get(n));
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) d[i] = f[i];
        return d;
    }

    /** y = W x (+ b): W (out, in). */
    static double[] mv(double[] W, double[] x, double[] b, int out, int in) {
        double[] y = new double[out];
        for (int o = 0; o < out; o++) {
            double s = b == null ? 0 : b[o];
            for (int i = 0; i < in; i++) s += W[o * in + i] * x[i];
            y[o] = s;
        }
        return y;
    }

    /** dx += Wᵀ dy; dW += dy xᵀ; db += dy. */
    static void mvBack(double[] W, double[] x, double[] dy, double[] dx, double[] dW, double[] db, int out, int in) {
        for (int o = 0; o < out; o++) {
            if (db != null) db[o] += dy[o];
            for (int i = 0; i < in; i++) {
                dx[i] += W[o * in + i] * dy[o];
                dW[o * in + i] += dy[o] * x[i];
            }
        }
    }

    /** RMSNorm: {normalized x̂, 1/rms}. */
    double[][] norm(double[] x) {
        double ms = 0;
        for (double v : x) ms += v * v;
        double r = 1 / Math.sqrt(ms / x.length + c.rmsNormEps());
        double[] xh = new double[x.length];
        for (int k = 0; k < x.length; k++) xh[k] = x[k] * r;
        return new double[][] {xh, {r}};
    }

    /** dx += r·(g⊙dy − x̂·mean(x̂⊙g⊙dy)); dg += dy⊙x̂. */
    static void normBack(double[] xh, double r, double[] g, double[] dy, double[] dx, double[] dg) {
        int n = xh.length;
        double dot = 0;
        for (int k = 0; k < n; k++) { dg[k] += dy[k] * xh[k]; dot += g[k] * dy[k] * xh[k]; }
        for (int k = 0; k < n; k++) dx[k] += r * (g[k] * dy[k] - xh[k] * dot / n);
    }

    /** Σ CE over the output tokens with the current compute weights; gradients added into grads when non-null. */
    public double run(Batch b, ModelGrads grads) {
        int C = c.hiddenSize(), V = c.vocabSize(), F = c.intermediateSize(), L = c.numLayers(), Q = c.qDim(), KV = c.kvDim();
        int D = c.headDim(), group = c.numHeads() / c.numKvHeads();
        LinkedHashMap<String, double[]> W = new LinkedHashMap<>(), G = new LinkedHashMap<>();
        for (String n : params.keySet()) { W.put(n, w(n)); G.put(n, new double[W.get(n).length]); }
        String headName = c.tieWordEmbeddings() ? "model.embed_tokens.weight" : "lm_head.weight";
        double loss = 0;
        for (int i = 0; i < b.tokenCount(); i++) {
            int tgt = b.targets()[i];
            if (tgt == Batch.IGNORE) continue;
            int tok = b.tokens()[i];
            double[][] h = new double[2 * L + 1][];   // residual stream before each sublayer, then the last
            double[][][] n1 = new double[L][][], n2 = new double[L][][];
            double[][] a = new double[L][], v = new double[L][], att = new double[L][], bb = new double[L][], gt = new double[L][], up = new double[L][], mm = new double[L][];
            double[] x = new double[C];
            System.arraycopy(W.get("model.embed_tokens.weight"), tok * C, x, 0, C);
            h[0] = x;
            for (int l = 0; l < L; l++) {
                String p = "model.layers." + l + ".";
                n1[l] = norm(h[2 * l]);
                a[l] = new double[C];
                for (int k = 0; k < C; k++) a[l][k] = n1[l][0][k] * W.get(p + "input_layernorm.weight")[k];
                v[l] = mv(W.get(p + "self_attn.v_proj.weight"), a[l], c.attentionBias() ? W.get(p + "self_attn.v_proj.bias") : null, KV, C);
                att[l] = new double[Q];   // window 1: head hd reads its kv group's value
                for (int hd = 0; hd < c.numHeads(); hd++) System.arraycopy(v[l], (hd / group) * D, att[l], hd * D, D);
                double[] o = mv(W.get(p + "self_attn.o_proj.weight"), att[l], null, C, Q);
                h[2 * l + 1] = new double[C];
                for (int k = 0; k < C; k++) h[2 * l + 1][k] = h[2 * l][k] + o[k];
                n2[l] = norm(h[2 * l + 1]);
                bb[l] = new double[C];
                for (int k = 0; k < C; k++) bb[l][k] = n2[l][0][k] * W.get(p + "post_attention_layernorm.weight")[k];
                gt[l] = mv(W.get(p + "mlp.gate_proj.weight"), bb[l], null, F, C);
                up[l] = mv(W.get(p + "mlp.up_proj.weight"), bb[l], null, F, C);
                mm[l] = new double[F];
                for (int f = 0; f < F; f++) mm[l][f] = gt[l][f] / (1 + Math.exp(-gt[l][f])) * up[l][f];
                double[] dn = mv(W.get(p + "mlp.down_proj.weight"), mm[l], null, C, F);
                h[2 * l + 2] = new double[C];
                for (int k = 0; k < C; k++) h[2 * l + 2][k] = h[2 * l + 1][k] + dn[k];
            }
            double[][] nf = norm(h[2 * L]);
            double[] gf = W.get("model.norm.weight"), hf = new double[C];
            for (int k = 0; k < C; k++) hf[k] = nf[0][k] * gf[k];
            double[] z = mv(W.get(headName), hf, null, V, C);
            double max = Double.NEGATIVE_INFINITY, se = 0;
            for (double zz : z) max = Math.max(max, zz);
            for (double zz : z) se += Math.exp(zz - max);
            loss += max + Math.log(se) - z[tgt];
            if (grads == null) continue;
            // backward
            double[] dz = new double[V];
            for (int o = 0; o < V; o++) dz[o] = Math.exp(z[o] - max) / se - (o == tgt ? 1 : 0);
            double[] dhf = new double[C];
            mvBack(W.get(headName), hf, dz, dhf, G.get(headName), null, V, C);
            double[] dh = new double[C];
            normBack(nf[0], nf[1][0], gf, dhf, dh, G.get("model.norm.weight"));
            for (int l = L - 1; l >= 0; l--) {
                String p = "model.layers." + l + ".";
                // MLP: h2 = h1 + down(m)
                double[] dm = new double[F], dbb = new double[C];
                mvBack(W.get(p + "mlp.down_proj.weight"), mm[l], dh, dm, G.get(p + "mlp.down_proj.weight"), null, C, F);
                double[] dg = new double[F], du = new double[F];
                for (int f = 0; f < F; f++) {
                    double s = 1 / (1 + Math.exp(-gt[l][f]));
                    du[f] = dm[f] * gt[l][f] * s;
                    dg[f] = dm[f] * up[l][f] * s * (1 + gt[l][f] * (1 - s));
                }
                mvBack(W.get(p + "mlp.gate_proj.weight"), bb[l], dg, dbb, G.get(p + "mlp.gate_proj.weight"), null, F, C);
                mvBack(W.get(p + "mlp.up_proj.weight"), bb[l], du, dbb, G.get(p + "mlp.up_proj.weight"), null, F, C);
                double[] dh1 = dh.clone();
                normBack(n2[l][0], n2[l][1][0], W.get(p + "post_attention_layernorm.weight"), dbb, dh1, G.get(p + "post_attention_layernorm.weight"));
                // attention: h1 = h0 + o(att)
                double[] datt = new double[Q], dv = new double[KV], da = new double[C];
                mvBack(W.get(p + "self_attn.o_proj.weight"), att[l], dh1, datt, G.get(p + "self_attn.o_proj.weight"), null, C, Q);
                for (int hd = 0; hd < c.numHeads(); hd++)
                    for (int d = 0; d < D; d++) dv[(hd / group) * D + d] += datt[hd * D + d];
                mvBack(W.get(p + "self_attn.v_proj.weight"), a[l], dv, da, G.get(p + "self_attn.v_proj.weight"),
                        c.attentionBias() ? G.get(p + "self_attn.v_proj.bias") : null, KV, C);
                double[] dh0 = dh1.clone();
                normBack(n1[l][0], n1[l][1][0], W.get(p + "input_layernorm.weight"), da, dh0, G.get(p + "input_layernorm.weight"));
                dh = dh0;
            }
            double[] dE = G.get("model.embed_tokens.weight");
            for (int k = 0; k < C; k++) dE[tok * C + k] += dh[k];
        }
        if (grads != null)
            for (String n : params.keySet()) {
                Tensor t = grads.get(n);
                float[] x = be.toFloats(t);
                double[] d = G.get(n);
                for (int i = 0; i < x.length; i++) x[i] += (float) d[i];
                be.copyFromHost(t, x);
            }
        return loss;
    }

    @Override
    public double forwardBackward(Batch batch, ModelGrads grads) {
        return run(batch, grads);
    }
}
