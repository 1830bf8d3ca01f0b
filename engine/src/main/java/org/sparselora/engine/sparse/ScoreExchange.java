package org.sparselora.engine.sparse;

/**
 * How one data-parallel worker's {@link ChannelSelection} turns its per-channel scores into the
 * scores of the whole global batch (docs/METHOD.md#channel-selection: one index set per layer per step, shared by the batch).
 * Every selection score is a sum over the batch of squared quantities (MLP: Σ over sequences of
 * a[b,c]²; attention: Σ over tokens of q̂², k̂², v̂²), so summing the workers' per-channel sums of
 * squares before the top-k gives each worker exactly the selection one worker would make on the
 * union batch. {@link #SINGLE} (one worker) is the identity; {@link InProcessScoreExchange} serves N
 * workers of one JVM.
 *
 * <p>A worker calls {@link #beginStep} once per sparse step (before its forward), then
 * {@link #allReduceSum} at each sparse layer in the model's layer order — the same sequence of calls
 * on every worker, since the schedule and the sparsity config are shared.
 */
public interface ScoreExchange {

    /** How many workers contribute (1: no exchange, scores stay on the device). */
    int workers();

    /**
     * Starts step {@code step} (0-based) for this worker. {@code participates} is false when this
     * worker's shard has no sparse token, so its forward asks for no selection: the others then do
     * not wait for it (its rows do not enter that step's scores).
     */
    default void beginStep(int step, boolean participates) {}

    /**
     * The element-wise sum of every participating worker's {@code local} for this step's
     * ({@code layer}, {@code what}), summed in worker order so every worker gets bit-identical
     * scores. The returned array is shared between the workers: read it, do not write it.
     */
    float[] allReduceSum(int layer, String what, float[] local);

    /** One worker: the local sums are the global sums. */
    ScoreExchange SINGLE = new ScoreExchange() {
        @Override public int workers() { return 1; }
        @Override public float[] allReduceSum(int layer, String what, float[] local) { return local; }
        @Override public String toString() { return "ScoreExchange.SINGLE"; }
    };
}
