package org.sparselora.actors.engine;

import java.util.LinkedHashMap;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.train.FullParameterModel;
import org.sparselora.engine.train.ModelGrads;

/**
 * Stands in for the model's own weight gradients while this build's {@link LlamaModel} has none, so
 * the full-mode wiring (trainer per worker, checkpoints, resume, the written model) is tested on its
 * own: every weight is a parameter (the CPU's F32 tensors, updated in place by the trainer), the loss
 * is the real model's, and the gradient is real but partial — the final RMSNorm gain's first
 * {@link #FD_ELEMS} entries by central differences, zero elsewhere. Deterministic, so a resumed run
 * is bit-identical. Where the model computes its own gradients {@link #install()} does nothing and
 * the tests run the real thing.
 */
public final class FullModelDouble implements FullParameterModel {
    static final int FD_ELEMS = 8;
    private static final float H = 1e-2f;

    private final LlamaModel model;
    private final LinkedHashMap<String, Tensor> params = new LinkedHashMap<>();

    FullModelDouble(LlamaModel model) {
        this.model = model;
        LlamaWeights w = model.weights();
        LlamaConfig c = model.config();
        params.put("model.embed_tokens.weight", w.embed);
        for (int l = 0; l < c.numLayers(); l++) {
            LlamaWeights.Layer L = w.layers[l];
            params.put("model.layers." + l + ".input_layernorm.weight", L.attnNorm());
            for (Projection p : Projection.values()) {
                if (p == Projection.GATE) params.put("model.layers." + l + ".post_attention_layernorm.weight", L.ffnNorm());
                params.put("model." + p.path(l) + ".weight", L.weight(p));
                if (L.bias(p) != null) params.put("model." + p.path(l) + ".bias", L.bias(p));
            }
        }
        params.put("model.norm.weight", w.finalNorm);
        if (!c.tieWordEmbeddings()) params.put("lm_head.weight", w.head);
    }

    /** Installs the double unless the model has its own weight gradients; closing the handle restores the default. */
    public static AutoCloseable install() {
        if (FullModels.own()) return () -> {};
        var before = FullModels.factory;
        FullModels.factory = FullModelDouble::new;
        return () -> FullModels.factory = before;
    }

    @Override public LlamaConfig config() { return model.config(); }

    @Override public Backend backend() { return model.backend(); }

    @Override public LinkedHashMap<String, Tensor> parameters() { return params; }

    @Override
    public double forwardBackward(Batch batch, ModelGrads grads) {
        Backend be = model.backend();
        Tensor norm = params.get("model.norm.weight");
        float[] w = be.toFloats(norm);
        float[] g = be.toFloats(grads.get("model.norm.weight"));
        for (int i = 0; i < Math.min(FD_ELEMS, w.length); i++) {
            float keep = w[i];
            w[i] = keep + H;
            be.copyFromHost(norm, w);
            double up = loss(batch);
            w[i] = keep - H;
            be.copyFromHost(norm, w);
            double down = loss(batch);
            w[i] = keep;
            g[i] += (float) ((up - down) / (2 * H));
        }
        be.copyFromHost(norm, w);
        be.copyFromHost(grads.get("model.norm.weight"), g);
        return loss(batch);
    }

    private double loss(Batch batch) { return model.evaluate(batch, null, null, false).lossSum(); }
}
