package org.sparselora.engine.sparse;

import java.util.ArrayList;
import java.util.List;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.model.LayerSelector;

/**
 * Glue between the schedule, the token split and the channel selection: per training step it
 * decides whether the step is sparse ({@link DenseWarmup}), splits the batch's tokens
 * ({@link TokenSplit}), and hands the model a {@link Step} — a {@link LayerSelector} that fills the
 * step's {@link SparsePlan} layer by layer as the forward reaches each norm. The plan stays valid
 * (the backward reads it) until the step is closed.
 *
 * <p>It is also the trainer's {@link org.sparselora.engine.sparse.StepPlanner}: {@link #plan}
 * begins a step (the plan's layer entries still empty), {@link #selector()} is that step, which the
 * model calls during the forward, and {@link #release()} closes it after the backward.
 */
public final class SparsePlanner implements StepPlanner, AutoCloseable {

    private final Backend be;
    private final SparsityConfig config;
    private final ChannelSelection selection;   // null when nothing is sparse
    private final DenseWarmup schedule;
    private final long seed;
    private boolean ownsSelection;
    private ScoreExchange exchange = ScoreExchange.SINGLE;

    /**
     * @param selection built from the predictor and {@code config.resolve(model)}; may be null only when the
     *                  resolved config has no sparse layer
     */
    public SparsePlanner(Backend be, SparsityConfig config, ChannelSelection selection, int totalSteps, long seed) {
        this.be = be;
        this.config = config;
        this.selection = selection;
        this.schedule = DenseWarmup.of(config, totalSteps);
        this.seed = seed;
        if (selection == null && !config.denseMode() && config.sparsity().values().stream().anyMatch(r -> r > 0))
            throw new IllegalArgumentException(config.source() + " makes layers sparse but no channel selection was given");
    }

    /**
     * Everything a training run needs from a config and the base weights: resolves the config for
     * the model, builds (or loads from {@code predictorCache}, may be null) the SVD predictor for its
     * sparse layers, uploads it, and returns the planner (which then owns the device factors).
     */
    public static SparsePlanner create(Backend be, org.sparselora.engine.io.WeightSource weights, SparsityConfig config,
                                       java.nio.file.Path predictorCache, int totalSteps, long seed, SvdPredictor.Progress progress) {
        SparsityConfig.Resolved resolved = config.resolve(weights.config());
        if (!resolved.anySparse()) return new SparsePlanner(be, config, null, totalSteps, seed);
        SvdPredictor predictor = SvdPredictor.forConfig(weights, resolved, config.rank(), predictorCache, LowRankSvd.Method.AUTO, progress);
        SparsePlanner p = new SparsePlanner(be, config, new ChannelSelection(be, predictor, resolved), totalSteps, seed);
        p.ownsSelection = true;
        return p;
    }

    /**
     * Makes this planner one of {@code exchange.workers()} data-parallel workers whose sparse steps
     * select channels from the scores of the whole global batch (see {@link ScoreExchange}).
     */
    public SparsePlanner withExchange(ScoreExchange exchange) {
        this.exchange = java.util.Objects.requireNonNull(exchange, "exchange");
        return this;
    }

    public ScoreExchange exchange() { return exchange; }

    public DenseWarmup schedule() { return schedule; }

    /** The channel selection (null when the config has no sparse layer). */
    public ChannelSelection selection() { return selection; }

    @Override
    public void close() {
        release();
        if (ownsSelection) selection.close();
    }

    public SparsityConfig config() { return config; }

    private Step current;

    /** The trainer asks only on steps its schedule made sparse, so this does not consult {@link #schedule()} again. */
    @Override
    public SparsePlan plan(Batch batch, int step) {
        release();
        current = start(batch, step, true);
        return current.plan();
    }

    @Override
    public LayerSelector selector() { return current; }

    private int denseBucket;

    @Override
    public void bucketDenseTokens(int tokens) {
        if (tokens < 0) throw new IllegalArgumentException("dense token bucket must be ≥ 0, got " + tokens);
        denseBucket = tokens;
    }

    /** Single-worker selections run on the device alone; several workers exchange scores through the host. */
    @Override
    public boolean recordable() { return exchange.workers() == 1; }

    @Override
    public long lastPredictorFlops() { return current == null ? 0 : current.predictorFlops(); }

    @Override
    public void release() {
        if (current != null) current.close();
        current = null;
    }

    /** Starts step {@code step} (0-based) for {@code batch}. Close the returned step after the backward. */
    public Step begin(Batch batch, int step) { return start(batch, step, false); }

    private Step start(Batch batch, int step, boolean callerSaysSparse) {
        boolean sparse = selection != null && selection.sparsity().anySparse() && (callerSaysSparse || schedule.sparseAt(step));
        if (!sparse) return new Step(null, batch, be, null, 0, 0, exchange);
        // the seed mixes in the step so the sparse output tokens change from step to step, reproducibly
        TokenSplit split = TokenSplit.of(batch, config.skipOutputTokens(), config.sparseOutputTokens(), seed * 1_000_003L + step, denseBucket);
        // a shard without sparse tokens runs dense and asks for no selection: tell the other workers not to wait
        exchange.beginStep(step, split.sparse().length > 0);
        if (split.sparse().length == 0) return new Step(null, batch, be, null, 0, split.dense().length, exchange);
        Tensor sparseTok = be.fromInts(split.sparse(), split.sparse().length);
        Tensor denseTok = split.allSparse() ? null : be.fromInts(split.dense(), split.dense().length);
        SparsePlan plan = new SparsePlan(sparseTok, denseTok, new SparsePlan.LayerPlan[selection.config().numLayers()],
                config.frozenGrad());
        return new Step(plan, batch, be, selection, split.sparse().length, split.dense().length, exchange);
    }

    /** One step's selections. {@link #plan()} is null on a dense step (the model then runs plain LoRA). */
    public static final class Step implements LayerSelector, AutoCloseable {
        private final SparsePlan plan;
        private final Batch batch;
        private final Backend be;
        private Tensor keyStart, rows;   // the selection's inputs: the model's (bindInputs) or uploaded here on first use
        private boolean inputsReady;
        private final ChannelSelection selection;
        private final int sparseTokens, denseTokens;
        private final ScoreExchange exchange;
        private final List<Tensor> owned = new ArrayList<>();
        private long predictorFlops;

        Step(SparsePlan plan, Batch batch, Backend be, ChannelSelection selection, int sparseTokens, int denseTokens,
             ScoreExchange exchange) {
            this.exchange = exchange;
            this.plan = plan;
            this.batch = batch;
            this.be = be;
            this.selection = selection;
            this.sparseTokens = sparseTokens;
            this.denseTokens = denseTokens;
            if (plan != null) {
                owned.add(plan.sparseTokens());
                if (plan.denseTokens() != null) owned.add(plan.denseTokens());
            }
        }

        @Override
        public void bindInputs(Tensor keyStart, Tensor rows) {
            this.keyStart = keyStart;
            this.rows = rows;
            inputsReady = true;
        }

        private void ensureInputs() {
            if (inputsReady) return;
            keyStart = be.fromInts(batch.keyStart(), batch.batch());
            owned.add(keyStart);
            int[] r = batch.nonPaddingRows();
            rows = r.length == batch.tokenCount() ? null : be.fromInts(r, r.length);
            if (rows != null) owned.add(rows);
            inputsReady = true;
        }

        public boolean sparse() { return plan != null; }

        /** The plan (filled as the forward proceeds), or null on a dense step. */
        public SparsePlan plan() { return plan; }

        public int sparseTokenCount() { return sparseTokens; }

        public int denseTokenCount() { return denseTokens; }

        /** FLOPs spent by the predictor in this step so far. */
        public long predictorFlops() { return predictorFlops; }

        @Override
        public SparsePlan.LayerPlan attention(int layer, Tensor attnNormOut) {
            if (plan == null) return null;
            SparsePlan.LayerPlan cur = plan.layers()[layer];
            if (!selection.sparsity().attentionSparse(layer)) return cur;
            ensureInputs();
            ChannelSelection.AttentionChannels a = selection.selectAttention(layer, attnNormOut, rows, exchange);
            owned.addAll(a.owned());
            predictorFlops += selection.attentionPredictorFlops(rows == null ? batch.tokenCount() : rows.dim(0));
            SparsePlan.LayerPlan lp = new SparsePlan.LayerPlan(cur == null ? null : cur.mlp(), a.q(), a.k(), a.v(), a.o());
            plan.layers()[layer] = lp;
            return lp;
        }

        @Override
        public SparsePlan.LayerPlan mlp(int layer, Tensor mlpNormOut) {
            if (plan == null) return null;
            SparsePlan.LayerPlan cur = plan.layers()[layer];
            if (!selection.sparsity().mlpSparse(layer)) return cur;
            ensureInputs();
            Tensor idx = selection.selectMlp(layer, mlpNormOut, keyStart, batch.batch(), batch.seqLen(), exchange);
            owned.add(idx);
            predictorFlops += selection.mlpPredictorFlops(batch.batch());
            SparsePlan.LayerPlan lp = cur == null ? new SparsePlan.LayerPlan(idx, null, null, null, null)
                    : new SparsePlan.LayerPlan(idx, cur.q(), cur.k(), cur.v(), cur.o());
            plan.layers()[layer] = lp;
            return lp;
        }

        /** Frees the step's index tensors; the plan must not be used afterwards. */
        @Override
        public void close() {
            for (Tensor t : owned) t.close();
            owned.clear();
        }
    }
}
