package org.sparselora.engine.sparse;

import java.util.List;
import java.util.SortedSet;
import java.util.TreeSet;
import java.util.function.ToDoubleFunction;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.Batch;

/**
 * The loss {@link Calibration} measures: mean cross-entropy per output token of a few calibration
 * batches, evaluated (no gradients) with the model's current adapter and a sparsity config applied
 * exactly as a sparse training step applies it (in-flight channel selection, token split), from
 * step 0 whatever the config's warm-up says. The SVD predictor is built once for every layer at the
 * requested rank, so each candidate config only uploads the factors it uses.
 */
public final class ModelLossProbe implements ToDoubleFunction<SparsityConfig> {

    private final Backend be;
    private final LlamaModel model;
    private final LoraAdapter lora;
    private final List<Batch> batches;
    private final SvdPredictor predictor;
    private int evaluations;

    public ModelLossProbe(Backend be, LlamaModel model, LoraAdapter lora, List<Batch> batches, SvdPredictor predictor) {
        if (batches.isEmpty()) throw new IllegalArgumentException("calibration needs at least one batch");
        this.be = be;
        this.model = model;
        this.lora = lora;
        this.batches = List.copyOf(batches);
        this.predictor = predictor;
    }

    /** Builds (or loads from {@code cache}) rank-r factors for every layer of the model. */
    public static SvdPredictor predictorForAllLayers(WeightSource weights, int rank, java.nio.file.Path cache, SvdPredictor.Progress progress) {
        SortedSet<Integer> all = new TreeSet<>();
        for (int l = 0; l < weights.config().numLayers(); l++) all.add(l);
        return SvdPredictor.build(weights, all, all, rank, cache, LowRankSvd.Method.AUTO, progress);
    }

    public int evaluations() { return evaluations; }

    @Override
    public double applyAsDouble(SparsityConfig config) {
        evaluations++;
        SparsityConfig.Resolved resolved = config.resolve(model.config());
        SparsityConfig always = new SparsityConfig(0, 1, config.rank(), config.skipOutputTokens(), config.sparseOutputTokens(),
                config.frozenGrad(), config.sparsity(), config.source());
        double loss = 0;
        long tokens = 0;
        if (!resolved.anySparse()) {
            for (Batch b : batches) {
                loss += model.evaluate(b, lora, null, false).lossSum();
                tokens += b.outputTokenCount();
            }
        } else {
            if (config.rank() != predictor.rank())
                throw new IllegalArgumentException("config rank " + config.rank() + " differs from the calibration predictor's rank " + predictor.rank());
            try (ChannelSelection sel = new ChannelSelection(be, predictor, resolved);
                 SparsePlanner planner = new SparsePlanner(be, always, sel, 1, 1)) {
                for (Batch b : batches) {
                    try (SparsePlanner.Step step = planner.begin(b, 0)) {
                        loss += model.evaluate(b, lora, step.plan(), step, false).lossSum();
                    }
                    tokens += b.outputTokenCount();
                }
            }
        }
        return tokens == 0 ? 0 : loss / tokens;
    }
}
