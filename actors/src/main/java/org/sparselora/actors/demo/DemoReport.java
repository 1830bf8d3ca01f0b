package org.sparselora.actors.demo;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.function.Predicate;
import org.sparselora.engine.io.AtomicFiles;
import org.sparselora.engine.io.FormatException;

/**
 * The demo's closing comparison, computed only from what the runs left on disk: each job's
 * {@code metrics.jsonl} (step time, FLOPs) and the evaluation of its adapter. Both jobs train on
 * the same batches, so a step number means the same work in both; the comparison is made per
 * <em>phase</em> of the SparseLoRA job, over the same step numbers of the two jobs:
 * <ul>
 *   <li>the dense warm-up (both jobs run dense: same FLOPs; their times differ by the JIT's warm-up,
 *       which the first job pays, and by the predictor's build, which the SparseLoRA job runs meanwhile);</li>
 *   <li>the sparse steps (what SparseLoRA gains: the headline);</li>
 *   <li>all steps.</li>
 * </ul>
 * Step time is the median {@code ms} of a phase (robust to the JIT's first steps and to a busy
 * machine's stalls); GFLOP/step is the mean ({@code flops} includes the predictor's).
 * Renders the tables and writes {@code summary.json}.
 */
public final class DemoReport {

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private DemoReport() {}

    /** One row of {@code metrics.jsonl}. */
    public record Step(int step, double loss, boolean sparse, long flops, long denseFlops, long predictorFlops, double ms, long tokens) {}

    /**
     * One phase of the comparison: its step numbers and, over them, each job's median ms/step and
     * mean GFLOP/step ({@code sparseDenseGflop}: what the SparseLoRA job's steps would cost dense).
     */
    public record Phase(String name, List<Integer> steps, double denseMs, double sparseMs, double denseGflop, double sparseGflop,
                        double sparseDenseGflop, double predictorGflop) {
        public double speedup() { return denseMs / sparseMs; }

        /** Dense FLOPs over executed FLOPs: 2.0 = half the FLOPs. */
        public double flopReduction() { return sparseDenseGflop / sparseGflop; }
    }

    /** One fine-tuned variant: where it is and how it scored. */
    public record Variant(String name, Path outputDir, Path adapterDir, double finalTrainLoss, DemoEval.Score score) {}

    /**
     * The whole comparison. {@code warmup} is null when the SparseLoRA job had no dense step,
     * {@code sparse} null when it had no sparse step (too few steps for the warm-up).
     */
    public record Summary(int steps, Phase warmup, Phase sparse, Phase all, DemoEval.Score base, Variant dense, Variant sparseLora,
                          Path adapter, Path sparsityConfig, double wallSeconds) {
        /** The phase the headline figures come from: the sparse steps, or all steps when none ran sparse. */
        public Phase headline() { return sparse != null ? sparse : all; }
    }

    public static List<Step> readMetrics(Path file) {
        List<String> lines;
        try {
            lines = Files.readAllLines(file, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new FormatException(file, "cannot read metrics: " + e.getMessage());
        }
        List<Step> out = new ArrayList<>();
        for (int i = 0; i < lines.size(); i++) {
            if (lines.get(i).isBlank()) continue;
            try {
                JsonNode n = JSON.readTree(lines.get(i));
                for (String k : List.of("step", "loss", "sparse", "flops", "dense_flops", "predictor_flops", "ms", "tokens"))
                    if (!n.has(k)) throw new FormatException(file, "line " + (i + 1) + ": no field '" + k + "'");
                out.add(new Step(n.get("step").asInt(), n.get("loss").asDouble(), n.get("sparse").asBoolean(), n.get("flops").asLong(),
                        n.get("dense_flops").asLong(), n.get("predictor_flops").asLong(), n.get("ms").asDouble(), n.get("tokens").asLong()));
            } catch (IOException e) {
                throw new FormatException(file, "line " + (i + 1) + " is not JSON");
            }
        }
        if (out.isEmpty()) throw new FormatException(file, "no metrics rows");
        return out;
    }

    /**
     * The phases of the comparison from both jobs' rows: the SparseLoRA job's dense steps, its
     * sparse steps, all steps (an empty phase is null, except all). Both files must hold the same
     * step numbers.
     */
    public static Phase[] phases(List<Step> denseRun, Path denseFile, List<Step> sparseRun, Path sparseFile) {
        Phase warm = phase("dense warm-up", denseRun, denseFile, sparseRun, sparseFile, s -> !s.sparse());
        Phase sparse = phase("sparse steps", denseRun, denseFile, sparseRun, sparseFile, Step::sparse);
        Phase all = phase("all steps", denseRun, denseFile, sparseRun, sparseFile, s -> true);
        return new Phase[] {warm, sparse, all};
    }

    private static Phase phase(String name, List<Step> denseRun, Path denseFile, List<Step> sparseRun, Path sparseFile, Predicate<Step> which) {
        List<Integer> steps = sparseRun.stream().filter(which).map(Step::step).toList();
        if (steps.isEmpty()) return null;
        List<Step> d = select(denseRun, steps, denseFile), s = select(sparseRun, steps, sparseFile);
        return new Phase(name, steps, median(d.stream().mapToDouble(Step::ms).toArray()), median(s.stream().mapToDouble(Step::ms).toArray()),
                mean(d, Step::flops), mean(s, Step::flops), mean(s, Step::denseFlops), mean(s, Step::predictorFlops));
    }

    private static double mean(List<Step> rows, java.util.function.ToLongFunction<Step> f) {
        return rows.stream().mapToDouble(r -> f.applyAsLong(r)).average().orElse(0) / 1e9;
    }

    private static List<Step> select(List<Step> run, List<Integer> steps, Path where) {
        Set<Integer> want = new LinkedHashSet<>(steps);
        List<Step> out = run.stream().filter(s -> want.contains(s.step())).toList();
        if (out.size() != want.size()) throw new FormatException(where, "has " + out.size() + " of the " + want.size() + " steps compared");
        return out;
    }

    public static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        int n = s.length;
        return n == 0 ? Double.NaN : n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    }

    /** A variant from its output directory's rows and its adapter's score. */
    public static Variant variant(String name, Path outputDir, Path adapterDir, List<Step> run, DemoEval.Score score) {
        return new Variant(name, outputDir, adapterDir, run.get(run.size() - 1).loss(), score);
    }

    /** "9-80 (72 steps)" for consecutive step numbers, else the count alone. */
    static String stepRange(List<Integer> steps) {
        int first = steps.get(0), last = steps.get(steps.size() - 1);
        boolean consecutive = last - first + 1 == steps.size();
        String n = steps.size() + (steps.size() == 1 ? " step" : " steps");
        return consecutive ? (first == last ? "step " + first : first + "-" + last) + " (" + n + ")" : n;
    }

    /** The per-step table: one row per phase, the two jobs side by side on the same step numbers. */
    public static String stepTable(Summary s) {
        String fmt = "%-31s | %9s | %9s | %8s | %11s | %12s | %9s | %11s%n";
        StringBuilder sb = new StringBuilder();
        sb.append(String.format(Locale.ROOT, fmt, "steps (same in both jobs)", "dense ms", "sparse ms", "speed-up",
                "dense GFLOP", "sparse GFLOP", "predictor", "fewer FLOPs"));
        sb.append(rule(31, 9, 9, 8, 11, 12, 9, 11));
        for (Phase p : new Phase[] {s.warmup(), s.sparse(), s.all()}) {
            if (p == null) continue;
            String label = p == s.all() ? "all: " + stepRange(p.steps()) : (p == s.warmup() ? "warm-up, dense: " : "sparse: ") + stepRange(p.steps());
            sb.append(String.format(Locale.ROOT, fmt, label, f1(p.denseMs()), f1(p.sparseMs()), x(p.speedup()), f3(p.denseGflop()),
                    f3(p.sparseGflop()), f3(p.predictorGflop()), x(p.flopReduction())));
        }
        return sb.toString();
    }

    /** The accuracy table: base model and both adapters on the held-out examples. */
    public static String scoreTable(Summary s) {
        String fmt = "%-16s | %9s | %11s%n";
        StringBuilder sb = new StringBuilder();
        sb.append(String.format(Locale.ROOT, fmt, "model", "eval loss", "exact match"));
        sb.append(rule(16, 9, 11));
        sb.append(String.format(Locale.ROOT, fmt, "base (no LoRA)", f4(s.base().evalLoss()), f3(s.base().exactMatch())));
        for (Variant v : List.of(s.dense(), s.sparseLora()))
            sb.append(String.format(Locale.ROOT, fmt, v.name(), f4(v.score().evalLoss()), f3(v.score().exactMatch())));
        return sb.toString();
    }

    /** The closing line: what SparseLoRA gained on its sparse steps, and what it cost in accuracy. */
    public static String headline(Summary s) {
        Phase h = s.headline();
        String where = s.sparse() != null ? "on its " + h.steps().size() + " sparse steps" : "(no step ran sparse: all steps)";
        return String.format(Locale.ROOT, "SparseLoRA %s: %s fewer FLOPs and %s the speed of dense LoRA on the same steps; "
                        + "exact match %s (dense LoRA %s)%n", where, x(h.flopReduction()), x(h.speedup()),
                f3(s.sparseLora().score().exactMatch()), f3(s.dense().score().exactMatch()));
    }

    private static String rule(int... widths) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < widths.length; i++) sb.append(i == 0 ? "" : "-+-").append("-".repeat(widths[i]));
        return sb.append('\n').toString();
    }

    private static String x(double v) { return String.format(Locale.ROOT, "%.2fx", v); }

    private static String f1(double v) { return String.format(Locale.ROOT, "%.1f", v); }

    private static String f3(double v) { return String.format(Locale.ROOT, "%.3f", v); }

    private static String f4(double v) { return String.format(Locale.ROOT, "%.4f", v); }

    public static String summaryJson(Summary s) {
        ObjectNode root = JSON.createObjectNode();
        root.put("steps", s.steps());
        root.put("eval_examples", s.base().examples());
        ObjectNode b = root.putObject("base");
        b.put("eval_loss", s.base().evalLoss());
        b.put("exact_match", s.base().exactMatch());
        for (Variant v : List.of(s.dense(), s.sparseLora())) {
            ObjectNode o = root.putObject(v == s.dense() ? "dense" : "sparse");
            o.put("name", v.name());
            o.put("output_dir", v.outputDir().toAbsolutePath().toString());
            o.put("adapter", v.adapterDir().toAbsolutePath().toString());
            o.put("final_train_loss", v.finalTrainLoss());
            o.put("eval_loss", v.score().evalLoss());
            o.put("exact_match", v.score().exactMatch());
            // over the headline phase, as before the per-phase figures existed (scripts read these)
            o.put("ms_per_step", v == s.dense() ? s.headline().denseMs() : s.headline().sparseMs());
        }
        ArrayNode phases = root.putArray("phases");
        for (Phase p : new Phase[] {s.warmup(), s.sparse(), s.all()}) {
            if (p == null) continue;
            ObjectNode o = phases.addObject();
            o.put("name", p.name());
            o.putPOJO("step_numbers", p.steps());
            o.put("dense_ms_per_step", p.denseMs());
            o.put("sparse_ms_per_step", p.sparseMs());
            o.put("speedup", p.speedup());
            o.put("dense_gflop_per_step", p.denseGflop());
            o.put("sparse_gflop_per_step", p.sparseGflop());
            o.put("sparse_dense_equivalent_gflop_per_step", p.sparseDenseGflop());
            o.put("predictor_gflop_per_step", p.predictorGflop());
            o.put("flop_reduction", p.flopReduction());
        }
        root.put("headline_phase", s.headline().name());
        root.put("speedup", s.headline().speedup());
        root.put("flop_reduction", s.headline().flopReduction());
        root.put("flop_ratio", 1 / s.headline().flopReduction());
        root.put("adapter", s.adapter().toAbsolutePath().toString());
        root.put("adapter_is", "a copy of the SparseLoRA adapter (" + s.sparseLora().adapterDir().toAbsolutePath() + ")");
        root.put("sparsity_config", s.sparsityConfig().toAbsolutePath().toString());
        root.put("wall_seconds", s.wallSeconds());
        try {
            return JSON.writeValueAsString(root) + "\n";
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    public static void writeSummary(Path file, Summary s) {
        String text = summaryJson(s);
        AtomicFiles.writeFile(file, tmp -> Files.writeString(tmp, text, StandardCharsets.UTF_8));
    }
}
