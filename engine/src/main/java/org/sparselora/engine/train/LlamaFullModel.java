package org.sparselora.engine.train;

import java.util.LinkedHashMap;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.WeightGrads;

/**
 * {@link FullParameterModel} over a {@link LlamaModel}: the parameters are the model's own weight
 * tensors (the trainer refreshes them in place), a step is the model's dense training step with every
 * weight gradient on ({@link LlamaModel#prepareFullStep}), and {@link #phases()} is the same
 * prepare / queue / loss split the LoRA trainer records. The {@link LlamaModel} stays its caller's
 * (this wrapper closes nothing).
 */
public final class LlamaFullModel implements FullParameterModel {
    private final LlamaModel model;
    private final LinkedHashMap<String, Tensor> params;
    private ModelGrads boundGrads;       // the ModelGrads the cached WeightGrads views
    private WeightGrads weightGrads;

    public LlamaFullModel(LlamaModel model) {
        this.model = model;
        this.params = parametersOf(model.weights());
    }

    /** The weights by HF name in {@link HfCheckpoint#expectedShapes} order (a tied head is the embedding, not listed again). */
    static LinkedHashMap<String, Tensor> parametersOf(LlamaWeights w) {
        LinkedHashMap<String, Tensor> byName = new LinkedHashMap<>();
        byName.put("model.embed_tokens.weight", w.embed);
        for (int l = 0; l < w.layers.length; l++) {
            LlamaWeights.Layer lw = w.layers[l];
            byName.put("model.layers." + l + ".input_layernorm.weight", lw.attnNorm());
            byName.put("model.layers." + l + ".post_attention_layernorm.weight", lw.ffnNorm());
            for (Projection p : Projection.values()) {
                byName.put("model." + p.path(l) + ".weight", lw.weight(p));
                if (lw.bias(p) != null) byName.put("model." + p.path(l) + ".bias", lw.bias(p));
            }
        }
        byName.put("model.norm.weight", w.finalNorm);
        if (!w.config.tieWordEmbeddings()) byName.put("lm_head.weight", w.head);
        LinkedHashMap<String, Tensor> ordered = new LinkedHashMap<>();
        for (String n : HfCheckpoint.expectedShapes(w.config).keySet()) {
            Tensor t = byName.remove(n);
            if (t == null) throw new IllegalStateException("the model has no weight " + n);
            ordered.put(n, t);
        }
        if (!byName.isEmpty()) throw new IllegalStateException("weights outside the checkpoint's parameters: " + byName.keySet());
        return ordered;
    }

    public LlamaModel model() { return model; }

    @Override public LlamaConfig config() { return model.config(); }

    @Override public Backend backend() { return model.backend(); }

    @Override public LinkedHashMap<String, Tensor> parameters() { return params; }

    @Override
    public double forwardBackward(Batch batch, ModelGrads grads) {
        model.prepareFullStep(batch, bind(grads));
        model.queueForward();
        model.backward();
        return model.stepLoss();
    }

    /** The model's view of {@code grads}, made once per ModelGrads (a recorded step keys on it). */
    private WeightGrads bind(ModelGrads grads) {
        if (grads != boundGrads) {
            weightGrads = WeightGrads.of(model.backend(), model.config(), grads::get);
            boundGrads = grads;
        }
        return weightGrads;
    }

    @Override
    public StepPhases phases() {
        return new StepPhases() {
            @Override
            public Object prepare(Batch batch, ModelGrads grads) { return model.prepareFullStep(batch, bind(grads)); }

            @Override
            public void queue() {
                model.queueForward();
                model.backward();
            }

            @Override
            public double loss() { return model.stepLoss(); }

            @Override
            public long bufferEpoch() { return model.bufferEpoch(); }
        };
    }
}
