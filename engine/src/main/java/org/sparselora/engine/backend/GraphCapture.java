package org.sparselora.engine.backend;

/**
 * A backend's ability to record a run of ops once and replay it as a unit (a CUDA graph on the GPU),
 * beside {@link Backend}; the trainer gets it from {@link Backend#graphCapture()} and records a
 * training step's device part with it. The CPU has none: it runs every op at once.
 */
public interface GraphCapture {

    /** A run of ops recorded once ({@link #beginCapture()} … {@link #endCapture()}) and replayed as a unit. */
    interface Captured extends AutoCloseable {
        /** Queues the recorded ops once more: the same ops on the same tensors with the same arguments. */
        void replay();

        /** Frees the recording; the tensors made while recording that nobody holds go back to the backend. */
        @Override
        void close();
    }

    /** Whether recording works now (a device may turn it off); {@link Backend#graphCapture()} offers only one that does. */
    default boolean canCapture() { return true; }

    /**
     * Starts recording: ops queued from now on are recorded, not run, until {@link #endCapture()}
     * (a CUDA graph on the GPU). While recording nothing may wait for the device or move host data
     * ({@code to*}, {@code copyFromHost}, {@code from*}, {@link Backend#synchronize()} throw); tensors
     * may be made and closed. A replay reads and writes exactly the tensors the recording did, so
     * whatever feeds a recording must sit in the same tensors at every replay.
     */
    void beginCapture();

    /** Ends the recording started by {@link #beginCapture()}. Nothing recorded has run yet: {@link Captured#replay()} runs it. */
    Captured endCapture();

    /** Ends a recording that failed half-way, dropping what was recorded; a no-op when none runs. */
    void abortCapture();
}
