package org.sparselora.actors.demo;

import java.nio.file.Path;
import java.util.List;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.data.Example;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.io.PeftAdapter;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;

/**
 * Scores the demo's base checkpoint, alone or with a PEFT adapter directory read back from disk
 * (what a user would load, not the trainer's in-memory state), on held-out examples: exact match
 * of the greedy answer and the mean answer-token loss. The base weights are uploaded once.
 */
public final class DemoEval implements AutoCloseable {

    /** Exact match in [0, 1], mean eval loss in nats per answer token, and how many examples. */
    public record Score(double exactMatch, double evalLoss, int examples) {}

    private final Backend backend;
    private final HfCheckpoint source;
    private final LlamaWeights weights;
    private final LlamaModel model;

    public DemoEval(Backend backend, Path baseDir) {
        this.backend = backend;
        this.source = HfCheckpoint.open(baseDir);
        try {
            this.weights = LlamaWeights.upload(backend, source);
        } catch (RuntimeException e) {
            source.close();
            throw e;
        }
        this.model = new LlamaModel(backend, weights);
    }

    /** {@code adapterDir} null scores the base model itself. */
    public Score score(Path adapterDir, List<Example> examples) {
        if (adapterDir == null) return DemoModel.score(model, null, examples);
        try (LoraAdapter lora = LoraAdapter.fromPeft(backend, model.config(), PeftAdapter.read(adapterDir), adapterDir)) {
            return DemoModel.score(model, lora, examples);
        }
    }

    @Override
    public void close() {
        weights.close();
        source.close();
    }
}
