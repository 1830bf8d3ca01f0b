package org.sparselora.actors.engine;

import java.lang.reflect.InvocationTargetException;
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
    private static final String OWN_CLASS = "org.sparselora.engine.train.LlamaFullModel";

    /** The engine's full-parameter side of the model, where this build has it. */
    private static final Function<LlamaModel, FullParameterModel> OWN = m -> {
        try {
            return (FullParameterModel) Class.forName(OWN_CLASS).getConstructor(LlamaModel.class).newInstance(m);
        } catch (ClassNotFoundException e) {
            throw new UnsupportedOperationException(UNAVAILABLE);
        } catch (InvocationTargetException e) {
            if (e.getCause() instanceof RuntimeException r) throw r;
            throw new IllegalStateException(e.getCause());
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
    };

    /** How a model becomes trainable in full; tests set a double. */
    static volatile Function<LlamaModel, FullParameterModel> factory = OWN;

    /** Whether the engine's model computes its own weight gradients. */
    public static boolean own() {
        try {
            Class.forName(OWN_CLASS);
            return true;
        } catch (ClassNotFoundException e) {
            return false;
        }
    }

    /** Whether {@link #of} works: the model computes weight gradients (or a test double stands in). */
    public static boolean available() { return factory != OWN || own(); }

    /** The model as a {@link FullParameterModel}; an {@link UnsupportedOperationException} when {@link #available()} is false. */
    public static FullParameterModel of(LlamaModel m) { return factory.apply(m); }
}
