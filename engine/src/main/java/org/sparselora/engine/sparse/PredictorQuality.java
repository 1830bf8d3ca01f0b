package org.sparselora.engine.sparse;

import java.util.Arrays;
import java.util.Locale;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.model.LlamaConfig;

/**
 * How good the rank-r predictor is on given layer inputs: for every sparse layer, the relative
 * error of the estimated activations (‖x·P·Q − x·Wᵀ‖/‖x·Wᵀ‖ per projection) and the recall of
 * the selected channels against the brute-force selection from the exact activations (|chosen ∩
 * exact| / k), averaged over the sparse layers. The exact side is a plain host computation in
 * double precision from the frozen weights; the predicted side is {@link ChannelSelection} on the
 * given backend, so this also measures what the training step will actually pick.
 */
public record PredictorQuality(int rank, double mlpRecall, double kRecall, double vRecall,
                               double gateRelErr, double upRelErr, double qRelErr, double kRelErr, double vRelErr) {

    /** The post-norm inputs of each layer, (B·T, C) row-major. */
    public interface LayerInputs {
        float[] attention(int layer);

        float[] mlp(int layer);
    }

    @Override
    public String toString() {
        return String.format(Locale.ROOT, "rank %d: recall mlp %.3f, k %.3f, v %.3f; relative error gate %.3f, up %.3f, q %.3f, k %.3f, v %.3f",
                rank, mlpRecall, kRecall, vRecall, gateRelErr, upRelErr, qRelErr, kRelErr, vRelErr);
    }

    public static PredictorQuality measure(Backend be, SvdPredictor pred, SparsityConfig.Resolved sp, WeightSource weights,
                                           LayerInputs inputs, int batch, int seqLen, int[] keyStart) {
        LlamaConfig cfg = pred.config();
        int c = cfg.hiddenSize(), inter = cfg.intermediateSize(), d = cfg.headDim(), g = cfg.numHeads() / cfg.numKvHeads();
        int[] rows = nonPad(batch, seqLen, keyStart);
        double mlpRec = 0, kRec = 0, vRec = 0;
        double[] err = new double[5];
        int mlpLayers = 0, attnLayers = 0;
        try (ChannelSelection sel = new ChannelSelection(be, pred, sp);
             Tensor ks = be.fromInts(keyStart, batch);
             Tensor rowsT = be.fromInts(rows, rows.length)) {
            for (int layer = 0; layer < cfg.numLayers(); layer++) {
                if (sp.mlpSparse(layer)) {
                    float[] x = inputs.mlp(layer);
                    float[] mean = sequenceMean(x, batch, seqLen, keyStart, c);
                    double[] gate = linear(mean, batch, c, weights.get(SvdPredictor.Proj.GATE.weightName(layer)).toFloats(), inter);
                    double[] up = linear(mean, batch, c, weights.get(SvdPredictor.Proj.UP.weightName(layer)).toFloats(), inter);
                    err[0] += relErr(estimate(mean, batch, pred.get(layer, SvdPredictor.Proj.GATE)), gate);
                    err[1] += relErr(estimate(mean, batch, pred.get(layer, SvdPredictor.Proj.UP)), up);
                    double[] a = new double[gate.length];
                    for (int i = 0; i < a.length; i++) a[i] = gate[i] / (1 + Math.exp(-gate[i])) * up[i];
                    int k = sp.keptMlp(layer);
                    int[] exact = topK(colNorms(a, batch, inter), k);
                    try (Tensor xt = be.fromFloats(x, be.computeType(), batch * seqLen, c);
                         Tensor idx = sel.selectMlp(layer, xt, ks, batch, seqLen)) {
                        mlpRec += recall(be.toInts(idx), exact);
                    }
                    mlpLayers++;
                }
                if (sp.attentionSparse(layer)) {
                    float[] x = inputs.attention(layer);
                    float[] xs = new float[rows.length * c];
                    for (int r = 0; r < rows.length; r++) System.arraycopy(x, rows[r] * c, xs, r * c, c);
                    int n = rows.length;
                    double[] q = linear(xs, n, c, weights.get(SvdPredictor.Proj.Q.weightName(layer)).toFloats(), cfg.qDim());
                    double[] kk = linear(xs, n, c, weights.get(SvdPredictor.Proj.K.weightName(layer)).toFloats(), cfg.kvDim());
                    double[] v = linear(xs, n, c, weights.get(SvdPredictor.Proj.V.weightName(layer)).toFloats(), cfg.kvDim());
                    err[2] += relErr(estimate(xs, n, pred.get(layer, SvdPredictor.Proj.Q)), q);
                    err[3] += relErr(estimate(xs, n, pred.get(layer, SvdPredictor.Proj.K)), kk);
                    err[4] += relErr(estimate(xs, n, pred.get(layer, SvdPredictor.Proj.V)), v);
                    double[] qn = colNorms(q, n, cfg.qDim()), kn = colNorms(kk, n, cfg.kvDim());
                    double[] score = new double[cfg.kvDim()];
                    for (int h = 0; h < cfg.numKvHeads(); h++)
                        for (int j = 0; j < d; j++) {
                            double m = 0;
                            for (int hq = h * g; hq < h * g + g; hq++) m += qn[hq * d + j];
                            score[h * d + j] = kn[h * d + j] * m / g;
                        }
                    int k = sp.keptKv(layer);
                    try (Tensor xt = be.fromFloats(x, be.computeType(), batch * seqLen, c)) {
                        ChannelSelection.AttentionChannels a = sel.selectAttention(layer, xt, rows.length == batch * seqLen ? null : rowsT);
                        kRec += recall(be.toInts(a.k()), topK(score, k));
                        vRec += recall(be.toInts(a.v()), topK(colNorms(v, n, cfg.kvDim()), k));
                        a.close();
                    }
                    attnLayers++;
                }
            }
        }
        double ml = Math.max(1, mlpLayers), al = Math.max(1, attnLayers);
        return new PredictorQuality(pred.rank(), mlpLayers == 0 ? Double.NaN : mlpRec / ml,
                attnLayers == 0 ? Double.NaN : kRec / al, attnLayers == 0 ? Double.NaN : vRec / al,
                err[0] / ml, err[1] / ml, err[2] / al, err[3] / al, err[4] / al);
    }

    static int[] nonPad(int batch, int seqLen, int[] keyStart) {
        int count = 0;
        for (int b = 0; b < batch; b++) count += seqLen - keyStart[b];
        int[] rows = new int[count];
        int k = 0;
        for (int b = 0; b < batch; b++) for (int t = keyStart[b]; t < seqLen; t++) rows[k++] = b * seqLen + t;
        return rows;
    }

    static float[] sequenceMean(float[] x, int batch, int seqLen, int[] keyStart, int c) {
        float[] mean = new float[batch * c];
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < c; j++) {
                double s = 0;
                for (int t = keyStart[b]; t < seqLen; t++) s += x[(b * seqLen + t) * c + j];
                mean[b * c + j] = (float) (s / Math.max(1, seqLen - keyStart[b]));
            }
        return mean;
    }

    /** y (n, out) = x (n, in)·Wᵀ with W (out, in), in double. */
    static double[] linear(float[] x, int n, int in, float[] w, int out) {
        double[] y = new double[n * out];
        for (int t = 0; t < n; t++)
            for (int o = 0; o < out; o++) {
                double s = 0;
                for (int i = 0; i < in; i++) s += (double) x[t * in + i] * w[o * in + i];
                y[t * out + o] = s;
            }
        return y;
    }

    /** x (n, in)·P·Q in double. */
    static double[] estimate(float[] x, int n, LowRankSvd.Factors f) {
        int r = f.rank();
        double[] y = new double[n * f.out()];
        double[] t = new double[r];
        for (int row = 0; row < n; row++) {
            Arrays.fill(t, 0);
            for (int i = 0; i < f.in(); i++) {
                double xi = x[row * f.in() + i];
                for (int j = 0; j < r; j++) t[j] += xi * f.p()[i * r + j];
            }
            for (int j = 0; j < r; j++)
                for (int o = 0; o < f.out(); o++) y[row * f.out() + o] += t[j] * f.q()[j * f.out() + o];
        }
        return y;
    }

    static double relErr(double[] est, double[] exact) {
        double e = 0, n = 0;
        for (int i = 0; i < est.length; i++) { e += (est[i] - exact[i]) * (est[i] - exact[i]); n += exact[i] * exact[i]; }
        return n == 0 ? 0 : Math.sqrt(e / n);
    }

    static double[] colNorms(double[] y, int n, int c) {
        double[] s = new double[c];
        for (int t = 0; t < n; t++) for (int j = 0; j < c; j++) s[j] += y[t * c + j] * y[t * c + j];
        for (int j = 0; j < c; j++) s[j] = Math.sqrt(s[j]);
        return s;
    }

    static int[] topK(double[] s, int k) {
        Integer[] o = new Integer[s.length];
        for (int i = 0; i < s.length; i++) o[i] = i;
        Arrays.sort(o, (a, b) -> s[a] != s[b] ? Double.compare(s[b], s[a]) : Integer.compare(a, b));
        int[] r = new int[k];
        for (int i = 0; i < k; i++) r[i] = o[i];
        Arrays.sort(r);
        return r;
    }

    static double recall(int[] chosen, int[] exact) {
        int hit = 0;
        for (int c : chosen) if (Arrays.binarySearch(exact, c) >= 0) hit++;
        return exact.length == 0 ? 1 : (double) hit / exact.length;
    }
}
