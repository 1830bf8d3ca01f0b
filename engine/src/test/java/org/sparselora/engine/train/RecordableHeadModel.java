package org.sparselora.engine.train;

import org.sparselora.engine.model.Batch;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.RandomWeights;

/**
 * A {@link FullParameterModel} made of backend ops only, so its step can be recorded: a Llama with no
 * decoder layers (embedding → final RMSNorm → untied head → cross-entropy), forward and backward
 * queued on the backend with {@link FullParameterModel.StepPhases}. Buffers are kept per batch shape;
 * the step key is the shape. Checked against {@link PointwiseLlama} (0 layers), which computes the
 * same function on the host.
 */
final class RecordableHeadModel implements FullParameterModel, FullParameterModel.StepPhases {
    final Backend be;
    final LlamaConfig c;
    final LinkedHashMap<String, Tensor> params = new LinkedHashMap<>();
    private Tensor ids, targets, x, xhat, rstd, rstd2, h, logits, dlogits, losses, dh, tmp, dx, ones, onesN;
    private int n = -1;
    private long epoch;
    private ModelGrads bound;

    RecordableHeadModel(Backend be, int vocab, int hidden, long seed) {
        this.be = be;
        this.c = PointwiseLlama.config(vocab, hidden, 0, false, false);
        RandomWeights rw = new RandomWeights(c, seed);
        for (var e : org.sparselora.engine.io.HfCheckpoint.expectedShapes(c).entrySet())
            params.put(e.getKey(), be.fromFloats(rw.get(e.getKey()).toFloats(), DType.F32, e.getValue()));
    }

    @Override public LlamaConfig config() { return c; }

    @Override public Backend backend() { return be; }

    @Override public LinkedHashMap<String, Tensor> parameters() { return params; }

    @Override public StepPhases phases() { return this; }

    @Override
    public double forwardBackward(Batch batch, ModelGrads grads) {
        prepare(batch, grads);
        queue();
        return loss();
    }

    @Override
    public Object prepare(Batch batch, ModelGrads grads) {
        int N = batch.tokenCount(), C = c.hiddenSize(), V = c.vocabSize();
        if (N != n) {   // buffers for this shape (a new epoch: recordings of the old buffers are stale)
            if (n >= 0) for (Tensor t : List.of(ids, targets, x, xhat, rstd, rstd2, h, logits, dlogits, losses, dh, tmp, dx, onesN)) t.close();
            ids = be.empty(DType.I32, N); targets = be.empty(DType.I32, N);
            x = be.empty(DType.F32, N, C); xhat = be.empty(DType.F32, N, C); h = be.empty(DType.F32, N, C);
            rstd = be.empty(DType.F32, N); rstd2 = be.empty(DType.F32, N);
            logits = be.empty(DType.F32, N, V); dlogits = be.empty(DType.F32, N, V); losses = be.empty(DType.F32, N);
            dh = be.empty(DType.F32, N, C); tmp = be.empty(DType.F32, N, C); dx = be.empty(DType.F32, N, C);
            float[] one = new float[N];
            Arrays.fill(one, 1f);
            onesN = be.fromFloats(one, DType.F32, 1, N);
            if (ones == null) {
                float[] oc = new float[C];
                Arrays.fill(oc, 1f);
                ones = be.fromFloats(oc, DType.F32, C);
            }
            n = N;
            epoch++;
        }
        be.copyFromHost(ids, batch.tokens());
        be.copyFromHost(targets, batch.targets());
        bound = grads;
        return List.of(N, grads);
    }

    @Override
    public void queue() {
        Tensor E = params.get("model.embed_tokens.weight"), g = params.get("model.norm.weight"), H = params.get("lm_head.weight");
        int C = c.hiddenSize();
        be.embedding(x, ids, E);                                   // x (N, C)
        be.rmsNorm(h, rstd, x, g, c.rmsNormEps());                 // h = x̂ ⊙ g
        be.rmsNorm(xhat, rstd2, x, ones, c.rmsNormEps());          // x̂
        be.matmul(logits, h, false, H, true, 1f, 0f);              // logits (N, V) = h Hᵀ
        be.crossEntropy(losses, dlogits, logits, targets, 1f);     // Σ-loss gradient
        be.matmul(bound.get("lm_head.weight"), dlogits, true, h, false, 1f, 1f);   // dH += dlogitsᵀ h
        be.matmul(dh, dlogits, false, H, false, 1f, 0f);           // dh = dlogits H
        be.mul(tmp, dh, xhat);
        be.matmul(bound.get("model.norm.weight").reshape(1, C), onesN, false, tmp, false, 1f, 1f);   // dg += Σ_n dh ⊙ x̂
        be.rmsNormBackward(dx, dh, x, g, rstd, false);
        be.scatterRows(bound.get("model.embed_tokens.weight"), dx, ids, true);                      // dE[ids] += dx
    }

    @Override
    public double loss() {
        double s = 0;
        for (float v : be.toFloats(losses)) s += v;
        return s;
    }

    @Override public long bufferEpoch() { return epoch; }
}
