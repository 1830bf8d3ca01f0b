package org.sparselora.engine.train;

import org.sparselora.engine.backend.Tensor;

/**
 * The all-reduce of data-parallel LoRA gradients for workers whose backends live in this process:
 * every worker registers its adapter's flat gradient buffer ({@code LoraAdapter.flatGrads()}), and
 * once all workers' backward passes are complete one {@link #allReduce()} leaves, in every buffer,
 * the element-wise sum g₀ + g₁ + … + g_{N−1} added in worker order. That order is the one the host
 * path ({@code float[][]} shards summed by the pipeline's GradientAggregator) uses, so a backend
 * whose add is IEEE float addition gives a bit-identical sum; the reduction never leaves the devices.
 *
 * <p>Threading: {@link #register} is called on each worker's own thread (when its trainer is made,
 * again for a replacement after a restart); {@link #allReduce} on the coordinator's thread while no
 * worker touches its gradients (they wait for the round's reply), and it returns only when every
 * buffer holds the sum (device work finished), so a worker may use it right away on its own stream.
 */
public interface GradientExchange extends AutoCloseable {

    int workers();

    /** Worker {@code worker}'s flat F32 gradient buffer (replaces an earlier registration of that worker). */
    void register(int worker, Tensor flatGrads);

    /** Sums the registered buffers in worker order into every one of them; fails naming a worker that never registered. */
    void allReduce();

    @Override
    default void close() {}
}
