package org.sparselora.actors.pipeline;

import org.sparselora.engine.model.Batch;

/**
 * The data set side of a job as the DataLoader actor sees it: the engine's dataset reader +
 * tokenizer + batcher behind one cursor. Batches are <em>global</em> (the whole step's batch_size
 * sequences); the JobSupervisor splits them row-wise over the workers, so N workers see exactly the
 * rows one worker would. The DataLoader calls every method from one thread of its own, in order;
 * implementations need not be thread-safe.
 */
public interface BatchSource extends AutoCloseable {

    /** Reads/scans the data set once (before the first {@link #next()}); reports malformed records. */
    DataSummary open() throws Exception;

    /** The next batch; the source cycles over epochs (reshuffled per epoch with its seed), so it never ends. */
    Batch next() throws Exception;

    /** The cursor after the last batch returned by {@link #next()}. */
    DataPosition position();

    /** Continue as if the batches up to {@code position} had just been read. */
    void seek(DataPosition position) throws Exception;

    /**
     * Batches (updates) in one pass over the data set, for jobs given in {@code epochs}; 0 when the
     * source has no size (synthetic data). Known once the source is constructed (before {@link #open()}).
     */
    default long updatesPerEpoch() { return 0; }

    @Override
    default void close() throws Exception {}
}
