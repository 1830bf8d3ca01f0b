package org.sparselora.actors.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.SortedSet;
import java.util.TreeSet;
import java.util.concurrent.Callable;
import org.sparselora.actors.engine.LlamaEngineProvider;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.sparse.LowRankSvd;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.engine.sparse.SvdPredictor;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code sparselora predictor build}: the SVD predictor factors (docs/METHOD.md#predictor) of a base model, written
 * to the safetensors cache the training pipeline reads (by default the same file a job on this
 * model uses, under {@code $SPARSELORA_CACHE}), so a later job starts without the SVD. Entries
 * already in the cache with the same rank and source-weight hash are reused and reported as
 * cached; stale ones are rebuilt.
 */
@Command(name = "predictor", mixinStandardHelpOptions = true,
        description = "SVD predictor factors (the channel-selection estimator of SparseLoRA).",
        subcommands = {PredictorCommand.Build.class})
public final class PredictorCommand extends CommandGroup {

    @Command(name = "build", mixinStandardHelpOptions = true,
            description = {"Factor the frozen gate/up and q/k/v projections at rank r and write them to the predictor cache.",
                    "A second run reuses the cached factors (reported as cached)."})
    public static final class Build implements Callable<Integer> {

        @Option(names = "--model", required = true, paramLabel = "M", description = "HF model directory or llama2.c .bin")
        Path model;

        @Option(names = "--rank", paramLabel = "R", description = "factor rank (default: the --sparsity config's, else 8)")
        Integer rank;

        @Option(names = "--layers", defaultValue = "all", paramLabel = "A-B[,C…]|all",
                description = "layers to factor, e.g. 3-30 or 0,2,5-7 (default: ${DEFAULT-VALUE}); ignored with --sparsity")
        String layers;

        @Option(names = "--sparsity", paramLabel = "CONFIG", description = "factor exactly what this sparsity config needs (its sparse MLPs and attentions)")
        Path sparsity;

        @Option(names = "--out", paramLabel = "FILE", description = "cache file (default: the training pipeline's cache for this model and rank)")
        Path out;

        @Override
        public Integer call() {
            SparsityConfig cfg = sparsity == null ? null : SparsityConfig.load(sparsity);
            int r = rank != null ? rank : cfg != null && !cfg.denseMode() ? cfg.rank() : 8;
            if (r <= 0) throw new IllegalArgumentException("--rank must be positive, got " + r);
            try (WeightSource src = ModelFiles.openModel(model)) {
                LlamaConfig c = src.config();
                SortedSet<Integer> mlp, attn;
                if (cfg != null) {
                    SparsityConfig.Resolved res = cfg.resolve(c);
                    mlp = new TreeSet<>();
                    attn = new TreeSet<>();
                    for (int l = 0; l < c.numLayers(); l++) {
                        if (res.mlpSparse(l)) mlp.add(l);
                        if (res.attentionSparse(l)) attn.add(l);
                    }
                    if (mlp.isEmpty() && attn.isEmpty())
                        throw new IllegalArgumentException(sparsity + ": no layer is sparse in this config, nothing to factor");
                } else {
                    mlp = parseLayers(layers, c.numLayers());
                    attn = mlp;
                }
                Path file = out != null ? out : LlamaEngineProvider.predictorCache(model, r);
                Path parent = file.toAbsolutePath().getParent();
                try {
                    Files.createDirectories(parent);
                } catch (java.io.IOException e) {
                    throw new IllegalArgumentException("--out " + file + ": cannot create " + parent + " (" + e.getMessage() + ")");
                }
                SortedSet<Integer> union = new TreeSet<>(mlp);
                union.addAll(attn);
                int nLayers = union.size();
                long t0 = System.nanoTime();
                SvdPredictor p = SvdPredictor.build(src, mlp, attn, r, file, LowRankSvd.Method.AUTO, progress(nLayers));
                double s = (System.nanoTime() - t0) / 1e9;
                int total = p.builtCount() + p.reusedCount();
                String what = p.builtCount() == 0 ? "cached: all " + total + " projections reused"
                        : p.reusedCount() == 0 ? "built: " + total + " projections factored"
                        : "built: " + p.builtCount() + " projections factored, " + p.reusedCount() + " cached";
                System.out.printf(Locale.ROOT, "predictor rank %d, %d layers (%d MLP, %d attention): %s in %.1f s%n%s%n",
                        r, nLayers, mlp.size(), attn.size(), what, s, file.toAbsolutePath());
                return 0;
            }
        }

        /** Progress on stderr: projections and whole layers done. */
        private static SvdPredictor.Progress progress(int nLayers) {
            return new SvdPredictor.Progress() {
                private final java.util.Set<String> layersSeen = new java.util.LinkedHashSet<>();

                @Override
                public void step(int done, int total, String what) {
                    layersSeen.add(what.split("\\.")[1]);
                    System.err.printf(Locale.ROOT, "svd layer %d/%d, projection %d/%d: %s%n", layersSeen.size(), nLayers, done, total, what);
                }

                @Override
                public void note(String message) { System.err.println("svd: " + message); }
            };
        }
    }

    /** {@code all}, or comma-separated layer numbers and inclusive ranges {@code A-B}. */
    static SortedSet<Integer> parseLayers(String spec, int numLayers) {
        SortedSet<Integer> out = new TreeSet<>();
        if (spec.equals("all")) {
            for (int l = 0; l < numLayers; l++) out.add(l);
            return out;
        }
        for (String part : spec.split(",")) {
            String p = part.trim();
            try {
                int dash = p.indexOf('-', 1);
                int a = Integer.parseInt(dash < 0 ? p : p.substring(0, dash)), b = dash < 0 ? a : Integer.parseInt(p.substring(dash + 1));
                if (a < 0 || b < a) throw new NumberFormatException();
                if (b >= numLayers)
                    throw new IllegalArgumentException("--layers '" + spec + "': layer " + b + " is out of range (the model has layers 0-" + (numLayers - 1) + ")");
                for (int l = a; l <= b; l++) out.add(l);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("--layers '" + spec + "': '" + p + "' is not a layer number or range A-B (or use all)");
            }
        }
        return out;
    }
}
