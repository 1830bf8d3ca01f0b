package org.sparselora.actors.pipeline;

import java.util.Objects;
import org.sparselora.engine.train.GradientExchange;

/**
 * The engine side of one job, as an {@link EngineProvider} opened it: workers, data, the predictor
 * (null for a dense job), the adapter exporter (null: only the checkpoint is written) and the
 * in-process gradient exchange (null: gradients are summed on the host from {@code float[][]}
 * shards, as for workers in other JVMs). An engine offers an exchange only when every worker it
 * makes registers its gradient buffer with it; the pipeline then uses it for every step with more
 * than one worker.
 */
public record JobRuntime(WorkerFactory workers, BatchSource data, PredictorBuilder predictor,
                         AdapterExporter exporter, GradientExchange exchange) implements AutoCloseable {

    public JobRuntime {
        Objects.requireNonNull(workers, "workers");
        Objects.requireNonNull(data, "data");
    }

    /** A runtime without an in-process exchange (host-path aggregation). */
    public JobRuntime(WorkerFactory workers, BatchSource data, PredictorBuilder predictor, AdapterExporter exporter) {
        this(workers, data, predictor, exporter, null);
    }

    @Override
    public void close() throws Exception {
        try {
            data.close();
        } finally {
            if (exchange != null) exchange.close();
        }
    }
}
