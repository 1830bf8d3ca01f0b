package org.sparselora.engine.train;

import org.sparselora.engine.backend.Tensor;

/**
 * {@link GradientExchange} for backends whose tensors any of them can read (the CPU backend: every
 * tensor is host memory): worker 0's backend adds g₁, g₂, … into g₀ in worker order with
 * {@code axpy(1)} (exactly the float addition of the host path, so bit-identical to it), then each
 * worker's backend copies the sum into its own buffer. No host arrays are allocated per step.
 */
public final class LocalGradientExchange implements GradientExchange {
    private final Tensor[] grads;

    public LocalGradientExchange(int workers) {
        if (workers < 1) throw new IllegalArgumentException("workers must be ≥ 1, got " + workers);
        this.grads = new Tensor[workers];
    }

    @Override
    public int workers() { return grads.length; }

    @Override
    public synchronized void register(int worker, Tensor flatGrads) {
        GradientExchanges.checkRegistration(grads, worker, flatGrads);
        grads[worker] = flatGrads;
    }

    @Override
    public void allReduce() {
        Tensor[] g;
        synchronized (this) {
            g = GradientExchanges.registered(grads);
        }
        var be0 = g[0].backend();
        for (int w = 1; w < g.length; w++) be0.axpy(g[0], 1f, g[w]);
        be0.synchronize();
        for (int w = 1; w < g.length; w++) {
            g[w].backend().copy(g[w], g[0]);
            g[w].backend().synchronize();
        }
    }
}
