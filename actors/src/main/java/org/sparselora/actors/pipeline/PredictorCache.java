package org.sparselora.actors.pipeline;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executor;

/**
 * Process-wide "once per base model" for SVD predictors: the first job on a model builds the
 * factors, later (or concurrent) jobs on the same model get the same future. A failed build is
 * forgotten so the next job retries.
 */
public final class PredictorCache {

    private static final PredictorCache SHARED = new PredictorCache();
    private final ConcurrentHashMap<String, CompletableFuture<PredictorFactors>> byKey = new ConcurrentHashMap<>();

    public static PredictorCache shared() { return SHARED; }

    /** @return the factors' future; {@code started[0]} is set when this call started the build */
    CompletableFuture<PredictorFactors> getOrBuild(PredictorBuilder builder, PredictorBuilder.ProgressListener progress,
                                                   Executor executor, boolean[] started) {
        String key = builder.cacheKey();
        CompletableFuture<PredictorFactors> mine = new CompletableFuture<>();
        CompletableFuture<PredictorFactors> existing = byKey.putIfAbsent(key, mine);
        if (existing != null) return existing;
        started[0] = true;
        executor.execute(() -> {
            try {
                mine.complete(builder.build(progress));
            } catch (Throwable t) {
                byKey.remove(key, mine);
                mine.completeExceptionally(t);
            }
        });
        return mine;
    }

    public int size() { return byKey.size(); }
}
