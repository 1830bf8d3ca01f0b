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

    /**
     * Opens the job on a worker node of a cluster: this JVM hosts some of the job's workers, the
     * others run elsewhere. No in-process exchange (gradients travel as host arrays to the
     * coordinator's rounds); {@code scores.apply(w)} is worker w's side of the channel-score
     * all-reduce. The runtime's data source is not used (the coordinator sends the batch shards).
     */
    default JobRuntime openOnNode(JobSpec spec, java.util.function.IntFunction<org.sparselora.engine.sparse.ScoreExchange> scores)
            throws Exception {
        throw new UnsupportedOperationException("engine " + name() + " cannot host workers on cluster nodes");
    }

    /** The first installed provider that accepts the spec, or a clear error naming the model. */
    static JobRuntime openFor(JobSpec spec) throws Exception {
        return providerFor(spec).open(spec);
    }

    /** The first installed provider that accepts the spec; else an error that says why, naming the model. */
    static EngineProvider providerFor(JobSpec spec) {
        List<String> names = new ArrayList<>();
        for (EngineProvider p : ServiceLoader.load(EngineProvider.class)) {
            if (p.accepts(spec)) return p;
            names.add(p.name());
        }
        String why;
        try {
            why = java.nio.file.Files.exists(java.nio.file.Path.of(spec.getModel())) ? "no installed engine runs it" : "no such file or directory";
        } catch (RuntimeException badPath) {
            why = "not a path";
        }
        throw new org.sparselora.actors.job.JobSpecException("model", "'" + spec.getModel() + "': " + why
                + " (expected a HF checkpoint directory with config.json or a llama2.c .bin; engines: "
                + (names.isEmpty() ? "none" : String.join(", ", names)) + ")");
    }
}
