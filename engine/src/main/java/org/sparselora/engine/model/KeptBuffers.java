package org.sparselora.engine.model;

import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * Makes the model's buffers that outlive a step (activations, weight slices, stashes) and counts
 * every one made or given back: a recorded step replays fixed tensors, so it is valid only while
 * {@link #epoch()} is unchanged.
 */
final class KeptBuffers {
    private final Backend be;
    private long epoch;

    KeptBuffers(Backend be) { this.be = be; }

    Backend backend() { return be; }

    long epoch() { return epoch; }

    /** A buffer was given back (or a set is about to be made): recordings are stale. */
    void changed() { epoch++; }

    Tensor make(DType dtype, int... shape) {
        epoch++;
        return be.empty(dtype, shape);
    }
}
