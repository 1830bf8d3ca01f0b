package org.sparselora.actors.pipeline;

import java.util.ArrayList;
import java.util.List;
import java.util.ServiceLoader;
import org.sparselora.proto.control.JobSpec;

/**
 * The plug point between the actor pipeline and an engine: given a validated JobSpec, open its
 * workers, data and predictor. Implementations are found with {@link ServiceLoader} (a
 * {@code META-INF/services/org.sparselora.actors.pipeline.EngineProvider} entry), so the engine's
 * LoRA trainer plugs in without the pipeline knowing it.
 */
public interface EngineProvider {

    String name();

    /** Whether this provider runs the job's model (e.g. by its path or scheme). */
    boolean accepts(JobSpec spec);

    JobRuntime open(JobSpec spec) throws Exception;

    /** The first installed provider that accepts the spec, or a clear error naming the model. */
    static JobRuntime openFor(JobSpec spec) throws Exception {
        List<String> names = new ArrayList<>();
        for (EngineProvider p : ServiceLoader.load(EngineProvider.class)) {
            if (p.accepts(spec)) return p.open(spec);
            names.add(p.name());
        }
        throw new IllegalArgumentException("model '" + spec.getModel() + "': no engine provider accepts it (installed: "
                + (names.isEmpty() ? "none" : String.join(", ", names)) + ")");
    }
}
