package org.sparselora.engine.sparse;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.ToDoubleFunction;
import java.util.function.ToLongFunction;
import org.sparselora.engine.model.LlamaConfig;

/**
 * Sparsity calibration — beyond the reference, whose users ask why its ratios are hand-picked.
 * Measures each layer part's sensitivity (the loss change on a few batches when that layer's MLP,
 * or its attention, alone is made sparse at a candidate ratio), then picks one ratio per part
 * (dense included) that meets a target FLOP reduction with the least predicted loss increase,
 * predicting a config's loss as the base loss plus the sum of its parts' sensitivities. Finally it
 * measures the chosen config, so the report shows predicted against measured loss.
 *
 * <p>The choice is a multiple-choice knapsack (one option per part; FLOP savings add up across
 * parts because each part's frozen GEMMs and predictor are independent), solved exactly by
 * dynamic programming over savings discretised into {@value #BUCKETS} buckets of the required
 * saving, rounding each option's saving down so a reached bucket count guarantees the target.
 */
public final class Calibration {

    static final int BUCKETS = 2000;

    public enum Part { MLP, ATTENTION }

    /** One measured option: {@code part} of {@code layer} at {@code ratio}. */
    public record Option(int layer, Part part, double ratio, double deltaLoss, long flopsSaved) {
        String key() { return "layers." + layer + (part == Part.MLP ? ".mlp" : ".self_attn"); }
    }

    /**
     * @param config        the chosen sparsity config (written as YAML by the caller)
     * @param baseLoss      loss with no sparsity
     * @param predictedLoss baseLoss + Σ sensitivities of the chosen options
     * @param measuredLoss  loss actually measured under {@code config}
     * @param flopReduction dense FLOPs / FLOPs of {@code config}
     * @param options       every measured option (the sensitivity table)
     */
    public record Result(SparsityConfig config, double baseLoss, double predictedLoss, double measuredLoss,
                         double flopReduction, List<Option> chosen, List<Option> options) {
        public String report() {
            StringBuilder sb = new StringBuilder();
            sb.append(String.format(Locale.ROOT, "calibration: FLOP reduction %.3fx; loss base %.5f, predicted %.5f, measured %.5f%n",
                    flopReduction, baseLoss, predictedLoss, measuredLoss));
            sb.append("  layer part       ratio   dloss        saved FLOPs   chosen\n");
            for (Option o : options)
                sb.append(String.format(Locale.ROOT, "  %5d %-9s %6.3f %+10.5f %12.4g  %s%n", o.layer, o.part, o.ratio, o.deltaLoss,
                        (double) o.flopsSaved, chosen.contains(o) ? "*" : ""));
            return sb.toString();
        }
    }

    /** What calibration measures with and what it prices. */
    public record Setup(LlamaConfig model,
                        ToDoubleFunction<SparsityConfig> loss,   // mean loss of the calibration batches under a config (always sparse)
                        ToLongFunction<SparsityConfig> flops,    // FLOPs of one step under a config
                        SparsityConfig template,                 // rank, token split, frozen_grad, schedule of the output
                        double[] mlpRatios, double[] attnRatios,
                        boolean keepFirstAndLastDense) {}

    public interface Progress { void measured(int done, int total, String what); }

    private Calibration() {}

    public static Result run(Setup s, double targetReduction, Progress progress) {
        if (!(targetReduction >= 1))
            throw new IllegalArgumentException("target FLOP reduction " + targetReduction + " must be >= 1 (dense FLOPs / sparse FLOPs)");
        LlamaConfig m = s.model();
        SparsityConfig dense = with(s.template(), Map.of());
        long denseFlops = s.flops().applyAsLong(dense);
        List<int[]> parts = new ArrayList<>();   // (layer, part ordinal)
        for (int l = 0; l < m.numLayers(); l++) {
            if (s.keepFirstAndLastDense() && (l == 0 || l == m.numLayers() - 1)) continue;
            if (s.mlpRatios().length > 0) parts.add(new int[] {l, Part.MLP.ordinal()});
            if (s.attnRatios().length > 0) parts.add(new int[] {l, Part.ATTENTION.ordinal()});
        }
        int total = 1 + parts.stream().mapToInt(p -> ratios(s, Part.values()[p[1]]).length).sum();
        int done = 0;
        double base = s.loss().applyAsDouble(dense);
        progress.measured(++done, total, "dense");
        List<List<Option>> groups = new ArrayList<>();
        List<Option> all = new ArrayList<>();
        for (int[] p : parts) {
            Part part = Part.values()[p[1]];
            List<Option> g = new ArrayList<>();
            for (double r : ratios(s, part)) {
                String key = "layers." + p[0] + (part == Part.MLP ? ".mlp" : ".self_attn");
                SparsityConfig one = with(s.template(), Map.of(key, r));
                double dl = s.loss().applyAsDouble(one) - base;
                long saved = denseFlops - s.flops().applyAsLong(one);
                Option o = new Option(p[0], part, r, dl, saved);
                g.add(o);
                all.add(o);
                progress.measured(++done, total, key + " @ " + r);
            }
            groups.add(g);
        }
        long required = denseFlops - (long) Math.floor(denseFlops / targetReduction);
        List<Option> chosen = choose(groups, required);
        if (chosen == null)
            throw new IllegalArgumentException(String.format(Locale.ROOT,
                    "target FLOP reduction %.3fx is out of reach with candidate ratios mlp %s, attention %s (at most %.3fx)",
                    targetReduction, java.util.Arrays.toString(s.mlpRatios()), java.util.Arrays.toString(s.attnRatios()),
                    (double) denseFlops / (denseFlops - maxSaving(groups))));
        Map<String, Double> ratios = new LinkedHashMap<>();
        double predicted = base;
        for (Option o : chosen) { ratios.put(o.key(), o.ratio()); predicted += o.deltaLoss(); }
        SparsityConfig config = with(s.template(), ratios);
        double measured = s.loss().applyAsDouble(config);
        double reduction = (double) denseFlops / s.flops().applyAsLong(config);
        return new Result(config, base, predicted, measured, reduction, chosen, all);
    }

    /** Default candidate ratios: the published configs use 0.9–0.99 for MLPs and 0.2–0.75 for attention. */
    public static final double[] DEFAULT_MLP_RATIOS = {0.5, 0.75, 0.9, 0.95, 0.99};
    public static final double[] DEFAULT_ATTENTION_RATIOS = {0.25, 0.5, 0.75};

    /**
     * The whole calibration of a base model (what {@code sparselora calibrate} runs): builds the
     * predictor for every layer (cached), measures sensitivities with the base model on
     * {@code batches}, prices steps of LoRA training on those batches' shapes with {@code lora}, and
     * returns the chosen config (write it with {@link SparsityConfig#write}).
     */
    public static Result calibrateModel(org.sparselora.engine.backend.Backend be, org.sparselora.engine.io.WeightSource weights,
                                        List<org.sparselora.engine.model.Batch> batches, FlopCount.Lora lora, SparsityConfig template,
                                        double targetReduction, double[] mlpRatios, double[] attnRatios,
                                        java.nio.file.Path predictorCache, SvdPredictor.Progress predictorProgress, Progress progress) {
        return calibrateModel(be, weights, batches, lora, template, targetReduction, mlpRatios, attnRatios, predictorCache,
                predictorProgress, progress, true);
    }

    /**
     * As above; {@code keepFirstAndLastDense} false also lets the first and last layers be sparse
     * (the published configs keep them dense; a model of one or two layers has nothing else).
     */
    public static Result calibrateModel(org.sparselora.engine.backend.Backend be, org.sparselora.engine.io.WeightSource weights,
                                        List<org.sparselora.engine.model.Batch> batches, FlopCount.Lora lora, SparsityConfig template,
                                        double targetReduction, double[] mlpRatios, double[] attnRatios,
                                        java.nio.file.Path predictorCache, SvdPredictor.Progress predictorProgress, Progress progress,
                                        boolean keepFirstAndLastDense) {
        LlamaConfig m = weights.config();
        int rank = template.denseMode() ? 8 : template.rank();
        SvdPredictor pred = ModelLossProbe.predictorForAllLayers(weights, rank, predictorCache, predictorProgress);
        try (var w = org.sparselora.engine.model.LlamaWeights.upload(be, weights)) {
            var model = new org.sparselora.engine.model.LlamaModel(be, w);
            ModelLossProbe probe = new ModelLossProbe(be, model, null, batches, pred);
            ToLongFunction<SparsityConfig> flops = cfg -> {
                SparsityConfig.Resolved r = cfg.resolve(m);
                long total = 0;
                for (var b : batches) {
                    if (!r.anySparse()) { total += FlopCount.dense(m, lora, b).flops(); continue; }
                    TokenSplit sp = TokenSplit.of(b, cfg.skipOutputTokens(), cfg.sparseOutputTokens(), 1);
                    long pf = 0;   // predictor: one MLP selection per sparse MLP, one attention selection per sparse attention
                    int nonPad = b.nonPaddingRows().length;
                    for (int l = 0; l < m.numLayers(); l++) {
                        if (r.mlpSparse(l)) pf += FlopCount.mlpPredictor(m, rank, b.batch());
                        if (r.attentionSparse(l)) pf += FlopCount.attentionPredictor(m, rank, nonPad);
                    }
                    total += FlopCount.sparse(m, lora, b, r, sp.sparse().length, sp.dense().length, cfg.frozenGrad(), pf).flops();
                }
                return total;
            };
            return run(new Setup(m, probe, flops, template, mlpRatios, attnRatios, keepFirstAndLastDense), targetReduction, progress);
        }
    }

    private static double[] ratios(Setup s, Part p) { return p == Part.MLP ? s.mlpRatios() : s.attnRatios(); }

    /** The template's settings with these sparsity entries, ordered by layer then mlp before attention. */
    static SparsityConfig with(SparsityConfig t, Map<String, Double> ratios) {
        Map<String, Double> sorted = new LinkedHashMap<>();
        ratios.entrySet().stream().sorted((a, b) -> {
            int la = layerOf(a.getKey()), lb = layerOf(b.getKey());
            return la != lb ? Integer.compare(la, lb) : b.getKey().compareTo(a.getKey());   // "mlp" before "self_attn"
        }).forEach(e -> sorted.put(e.getKey(), e.getValue()));
        int rank = t.denseMode() ? 8 : t.rank();
        return new SparsityConfig(t.startStep(), t.endStep(), rank, t.skipOutputTokens(), t.sparseOutputTokens(),
                t.frozenGrad(), sorted, "calibration");
    }

    private static int layerOf(String key) { return Integer.parseInt(key.split("\\.")[1]); }

    private static long maxSaving(List<List<Option>> groups) {
        long s = 0;
        for (List<Option> g : groups) s += Math.max(0, g.stream().mapToLong(Option::flopsSaved).max().orElse(0));
        return s;
    }

    /**
     * Least total deltaLoss with Σ flopsSaved ≥ required, one option or none per group; null if
     * unreachable. dp[b] = least loss reaching b buckets (capped at the target's bucket count).
     */
    static List<Option> choose(List<List<Option>> groups, long required) {
        if (required <= 0) return List.of();
        double unit = (double) required / BUCKETS;
        int n = groups.size();
        double[][] dp = new double[n + 1][BUCKETS + 1];
        int[][] pick = new int[n + 1][BUCKETS + 1];   // option index + 1 taken at group i to reach b; 0 = none
        int[][] from = new int[n + 1][BUCKETS + 1];
        for (double[] row : dp) java.util.Arrays.fill(row, Double.POSITIVE_INFINITY);
        dp[0][0] = 0;
        for (int i = 0; i < n; i++) {
            List<Option> g = groups.get(i);
            for (int b = 0; b <= BUCKETS; b++) {
                if (dp[i][b] == Double.POSITIVE_INFINITY) continue;
                relax(dp, pick, from, i, b, b, dp[i][b], 0);
                for (int o = 0; o < g.size(); o++) {
                    Option op = g.get(o);
                    if (op.flopsSaved() <= 0) continue;
                    int nb = (int) Math.min(BUCKETS, b + (long) Math.floor(op.flopsSaved() / unit));
                    relax(dp, pick, from, i, b, nb, dp[i][b] + op.deltaLoss(), o + 1);
                }
            }
        }
        if (dp[n][BUCKETS] == Double.POSITIVE_INFINITY) return null;
        List<Option> chosen = new ArrayList<>();
        for (int i = n, b = BUCKETS; i > 0; i--) {
            int p = pick[i][b];
            if (p > 0) chosen.add(0, groups.get(i - 1).get(p - 1));
            b = from[i][b];
        }
        return chosen;
    }

    private static void relax(double[][] dp, int[][] pick, int[][] from, int i, int b, int nb, double v, int p) {
        if (v < dp[i + 1][nb]) {
            dp[i + 1][nb] = v;
            pick[i + 1][nb] = p;
            from[i + 1][nb] = b;
        }
    }
}
