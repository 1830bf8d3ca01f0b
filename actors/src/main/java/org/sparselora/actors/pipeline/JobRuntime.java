package org.sparselora.actors.pipeline;

import java.util.Objects;

/**
 * The engine side of one job, as an {@link EngineProvider} opened it: workers, data, the predictor
 * (null for a dense job) and the adapter exporter (null: only the checkpoint is written).
 */
public record JobRuntime(WorkerFactory workers, BatchSource data, PredictorBuilder predictor,
                         AdapterExporter exporter) implements AutoCloseable {

    public JobRuntime {
        Objects.requireNonNull(workers, "workers");
        Objects.requireNonNull(data, "data");
    }

    @Override
    public void close() throws Exception {
        data.close();
    }
}
