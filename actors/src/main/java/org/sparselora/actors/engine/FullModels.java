package org.sparselora.actors.engine;

import java.util.function.Function;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.train.FullParameterModel;

/**
 * The one place that turns a {@link LlamaModel} into the {@link FullParameterModel} that
 * {@code FullTrainer} trains (the model's own weight gradients), for the pipeline's full mode and
 * {@code arc pretrain}. Tests replace {@link #factory} with a double to exercise the wiring alone.
 */
public final class FullModels {
    private FullModels() {}

    static final String UNAVAILABLE = "full is not available in this build: the Llama model does not compute weight gradients";

    /** The model's own full-parameter side, when this build's model has one. */
    private static final Function<LlamaModel, FullParameterModel> OWN = m -> {
        Object o = m;   // through Object: compiles whether or not the model implements the interface
        if (o instanceof FullParameterModel f) return f;
        throw new UnsupportedOperationException(UNAVAILABLE);
    };

    /** How a model becomes trainable in full; tests set a double. */
    static volatile Function<LlamaModel, FullParameterModel> factory = OWN;

    /** Whether {@link #of} works: the model computes weight gradients (or a test double stands in). */
    public static boolean available() { return factory != OWN || FullParameterModel.class.isAssignableFrom(LlamaModel.class); }

    /** The model as a {@link FullParameterModel}; an {@link UnsupportedOperationException} when {@link #available()} is false. */
    public static FullParameterModel of(LlamaModel m) { return factory.apply(m); }
}
