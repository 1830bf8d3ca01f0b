package org.sparselora.actors.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import org.sparselora.actors.engine.ModelPresets;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.sparse.FlopCount;
import org.sparselora.engine.sparse.SparsityConfig;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code sparselora sparsity check CONFIG}: validates a sparsity config (the published schema,
 * summaries checked against the per-layer values) and prints, per layer kind, which layers are
 * sparse at which ratio; with a model shape ({@code --preset} or {@code --model}) also the layers
 * checked against the model and the frozen linears' FLOPs of one step at a sequence shape, dense
 * against sparse, from the training pipeline's own FLOP model.
 */
@Command(name = "sparsity", mixinStandardHelpOptions = true, description = "SparseLoRA sparsity configs.",
        subcommands = {SparsityCommand.Check.class})
public final class SparsityCommand extends CommandGroup {

    @Command(name = "check", mixinStandardHelpOptions = true,
            description = "Validate a sparsity config and show its sparse layers per kind; with a model shape, "
                    + "the expected reduction of the frozen layers' FLOPs per training step.")
    public static final class Check implements Callable<Integer> {

        @Parameters(index = "0", paramLabel = "CONFIG", description = "sparsity config (YAML)")
        Path config;

        @Option(names = "--preset", paramLabel = "NAME", description = "model shape by name: llama3-8b, llama3.1-8b, llama3.2-1b, llama2-7b, llama2-13b")
        String preset;

        @Option(names = "--model", paramLabel = "M", description = "model shape from a HF model directory or llama2.c .bin")
        Path model;

        @Option(names = "--seq-len", defaultValue = "512", paramLabel = "N", description = "tokens per sequence (default: ${DEFAULT-VALUE})")
        int seqLen;

        @Option(names = "--batch", defaultValue = "1", paramLabel = "B", description = "sequences per step (default: ${DEFAULT-VALUE})")
        int batch;

        @Option(names = "--output-tokens", defaultValue = "0", paramLabel = "K",
                description = "output tokens (with a loss) per sequence; they run dense when the config splits tokens (default: ${DEFAULT-VALUE})")
        int outputTokens;

        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() {
            if (preset != null && model != null) throw new IllegalArgumentException("give --preset or --model, not both");
            if (seqLen < 1) throw new IllegalArgumentException("--seq-len must be >= 1, got " + seqLen);
            if (batch < 1) throw new IllegalArgumentException("--batch must be >= 1, got " + batch);
            if (outputTokens < 0 || outputTokens > seqLen)
                throw new IllegalArgumentException("--output-tokens must be in [0, --seq-len " + seqLen + "], got " + outputTokens);
            SparsityConfig c = SparsityConfig.load(config);
            LlamaConfig shape = shape();
            // every check before the first line: a bad file prints one error and nothing else
            SparsityConfig.Resolved r = shape == null ? null : c.resolve(shape);
            PrintWriter out = spec.commandLine().getOut();
            out.println(config + ": valid");
            out.printf(Locale.ROOT, "  mode %s, start_step %s, end_step %s, skip_output_tokens %s, frozen_grad %s%n", c.mode(),
                    c.startStep(), c.endStep(), c.skipOutputTokens(), c.frozenGrad().name().toLowerCase(Locale.ROOT));
            if (shape == null) {
                out.println("  mlp:       " + layers(c, "mlp"));
                out.println("  attention: " + layers(c, "self_attn"));
                out.println("  (give --preset or --model to check the layers against a model and see the FLOPs)");
                return 0;
            }
            out.printf(Locale.ROOT, "  model %s: %d layers, hidden %d, intermediate %d, %d heads, %d KV heads%n",
                    preset != null ? preset : model, shape.numLayers(), shape.hiddenSize(), shape.intermediateSize(),
                    shape.numHeads(), shape.numKvHeads());
            if (c.denseMode()) out.println("  mode dense: every layer runs dense (ratios ignored)");
            out.println("  mlp:       " + layers(r, true));
            out.println("  attention: " + layers(r, false));
            report(out, c, r, shape);
            return 0;
        }

        private LlamaConfig shape() {
            if (preset != null) {
                LlamaConfig s = ModelPresets.of(preset);
                if (s == null) throw new IllegalArgumentException("--preset " + preset + ": unknown (known: " + ModelPresets.names() + ")");
                return s;
            }
            if (model != null) {
                try (WeightSource w = ModelFiles.openModel(model)) {
                    return w.config();
                } catch (Exception e) {
                    throw e instanceof RuntimeException re ? re : new IllegalArgumentException(model + ": " + e.getMessage(), e);
                }
            }
            return null;
        }

        /** Frozen FLOPs of one step per kind, dense vs on a sparse step, and over the run. */
        private void report(PrintWriter out, SparsityConfig c, SparsityConfig.Resolved r, LlamaConfig shape) {
            long tokens = (long) batch * seqLen;
            long outTokens = (long) batch * outputTokens;
            // token splitting: output tokens run dense, except the sparse_output_tokens share of them
            long dense = c.skipOutputTokens() ? outTokens - (long) Math.floor(c.sparseOutputTokens() * outTokens) : 0;
            long sparse = tokens - dense;
            out.printf(Locale.ROOT, "  frozen linears' FLOPs of one training step (forward + input gradient), batch %d × seq_len %d,"
                    + " %d of %d tokens on the kept channels:%n", batch, seqLen, sparse, tokens);
            double fraction = sparseFraction(c);
            for (var kind : List.of(
                    new Kind("mlp", EnumSet.of(Projection.GATE, Projection.UP, Projection.DOWN)),
                    new Kind("attention", EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O)),
                    new Kind("all", EnumSet.allOf(Projection.class)))) {
                long d = FlopCount.frozen(shape, null, kind.projections, 0, tokens, c.frozenGrad());
                long s = r.anySparse() ? FlopCount.frozen(shape, r, kind.projections, sparse, dense, c.frozenGrad()) : d;
                double run = d / (d * (1 - fraction) + s * fraction);
                out.printf(Locale.ROOT, "    %-10s dense %.3e  sparse step %.3e  %.2fx fewer on a sparse step, %.2fx over the run%n",
                        kind.name, (double) d, (double) s, s == 0 ? Double.POSITIVE_INFINITY : (double) d / s, run);
            }
            out.printf(Locale.ROOT, "  over the run: %.0f%% of the steps sparse (from start_step %s to end_step %s)%n",
                    100 * fraction, c.startStep(), c.endStep());
        }

        /** The share of a long run's steps that are sparse. */
        private static double sparseFraction(SparsityConfig c) {
            return c.anySparseLayer() ? c.endStep() - c.startStep() : 0;
        }

        private record Kind(String name, Set<Projection> projections) {}

        /** "28 sparse layers: 3-30 at 0.99" from a resolved config. */
        private static String layers(SparsityConfig.Resolved r, boolean mlp) {
            double[] ratio = mlp ? r.mlpRatio() : r.attnRatio();
            TreeMap<Double, List<Integer>> byRatio = new TreeMap<>(java.util.Comparator.reverseOrder());
            for (int l = 0; l < ratio.length; l++) if (ratio[l] > 0) byRatio.computeIfAbsent(ratio[l], k -> new ArrayList<>()).add(l);
            return describe(byRatio, r, mlp);
        }

        /** "28 sparse layers: 3-30 at 0.99 (keeps …)" ({@code r} null: no kept counts). */
        private static String describe(TreeMap<Double, List<Integer>> byRatio, SparsityConfig.Resolved r, boolean mlp) {
            int n = byRatio.values().stream().mapToInt(List::size).sum();
            if (n == 0) return "none sparse";
            StringBuilder sb = new StringBuilder().append(n).append(" sparse layer").append(n == 1 ? "" : "s").append(": ");
            boolean first = true;
            for (var e : byRatio.entrySet()) {
                sb.append(first ? "" : "; ").append(ranges(e.getValue())).append(" at ").append(e.getKey());
                int l = e.getValue().getFirst();
                if (r != null)
                    sb.append(mlp ? " (keeps " + r.keptMlp(l) + " of " + r.model().intermediateSize() + " channels)"
                            : " (keeps " + r.keptKv(l) + " of " + r.model().kvDim() + " KV channels)");
                first = false;
            }
            return sb.toString();
        }

        /** Without a model: the layers the file makes sparse, per ratio. */
        private static String layers(SparsityConfig c, String kind) {
            TreeMap<Double, List<Integer>> byRatio = new TreeMap<>(java.util.Comparator.reverseOrder());
            c.sparseLayers(kind).forEach((l, v) -> byRatio.computeIfAbsent(v, q -> new ArrayList<>()).add(l));
            return describe(byRatio, null, false);
        }

        /** [3, 4, 5, 7] → "3-5, 7". */
        static String ranges(List<Integer> sorted) {
            StringBuilder sb = new StringBuilder();
            for (int i = 0; i < sorted.size(); ) {
                int j = i;
                while (j + 1 < sorted.size() && sorted.get(j + 1) == sorted.get(j) + 1) j++;
                sb.append(sb.isEmpty() ? "" : ", ").append(sorted.get(i));
                if (j > i) sb.append('-').append(sorted.get(j));
                i = j + 1;
            }
            return sb.toString();
        }
    }
}
