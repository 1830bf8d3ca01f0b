package org.sparselora.actors.pipeline;

/**
 * Stands for the predictor factors on a worker node: only their fingerprint crossed the network.
 * The node's {@link WorkerFactory} replaces it with factors it builds (or loads) from the same base
 * weights, and refuses them when their fingerprint differs.
 */
public record RemoteFactors(String fingerprint) implements PredictorFactors {
    @Override
    public String cacheKey() { return "remote#" + fingerprint; }
}
