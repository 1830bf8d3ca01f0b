package org.sparselora.engine.train;

import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/** Checks shared by the {@link GradientExchange} implementations (registration and completeness). */
public final class GradientExchanges {
    private GradientExchanges() {}

    /** A registration must name a worker in range and an F32 buffer the size of the others'. */
    public static void checkRegistration(Tensor[] grads, int worker, Tensor flatGrads) {
        if (worker < 0 || worker >= grads.length)
            throw new IllegalArgumentException("worker " + worker + " is outside [0, " + grads.length + ")");
        if (flatGrads.dtype() != DType.F32)
            throw new IllegalArgumentException("worker " + worker + "'s gradient buffer is " + flatGrads.dtype() + ", expected F32");
        for (int w = 0; w < grads.length; w++)
            if (w != worker && grads[w] != null && grads[w].numel() != flatGrads.numel())
                throw new IllegalArgumentException("worker " + worker + "'s gradient buffer has " + flatGrads.numel()
                        + " values, worker " + w + "'s has " + grads[w].numel());
    }

    /** A snapshot of the registrations; fails naming the first worker that has none. */
    public static Tensor[] registered(Tensor[] grads) {
        for (int w = 0; w < grads.length; w++)
            if (grads[w] == null) throw new IllegalStateException("gradient exchange: worker " + w + " has not registered its gradients");
        return grads.clone();
    }
}
