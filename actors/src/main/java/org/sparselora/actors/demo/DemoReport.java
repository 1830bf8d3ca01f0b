package org.sparselora.actors.demo;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
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
import org.sparselora.engine.io.AtomicFiles;
import org.sparselora.engine.io.FormatException;

/**
 * The demo's closing comparison, computed only from what the runs left on disk: each job's
 * {@code metrics.jsonl} (step time, FLOPs) and the evaluation of its adapter. Step time is the
 * median {@code ms} over the <em>sparse phase</em> — the steps the SparseLoRA run ran sparse — for
 * both variants, so the dense warm-up (identical in both) and the JIT's first steps do not blur the
 * comparison; GFLOP/step is the mean over the same steps ({@code flops} includes the predictor's).
 * Renders the table and writes {@code summary.json}.
 */
public final class DemoReport {

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private DemoReport() {}

    /** One row of {@code metrics.jsonl}. */
    public record Step(int step, double loss, boolean sparse, long flops, long denseFlops, long predictorFlops, double ms, long tokens) {}

    /** One fine-tuned variant: where it is and what it measured. */
    public record Variant(String name, Path outputDir, Path adapterDir, double msPerStep, double gflopPerStep, double denseGflopPerStep,
                          double predictorGflopPerStep, double finalTrainLoss, DemoEval.Score score) {}

    /** The whole comparison. {@code phaseSteps} are the step numbers the medians are taken over. */
    public record Summary(int steps, List<Integer> phaseSteps, boolean phaseIsSparse, DemoEval.Score base, Variant dense, Variant sparse,
                          Path adapter, Path sparsityConfig, double wallSeconds) {
        public double speedup() { return dense.msPerStep() / sparse.msPerStep(); }

        public double flopRatio() { return sparse.gflopPerStep() / sparse.denseGflopPerStep(); }
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

    /** The steps the sparse run ran sparse; all steps when it never did (too few steps for the warm-up). */
    public static List<Integer> phase(List<Step> sparseRun) {
        List<Integer> s = sparseRun.stream().filter(Step::sparse).map(Step::step).toList();
        return s.isEmpty() ? sparseRun.stream().map(Step::step).toList() : s;
    }

    private static List<Step> select(List<Step> run, List<Integer> phase, Path where) {
        Set<Integer> want = new LinkedHashSet<>(phase);
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

    /** A variant's figures over {@code phase}, from its output directory's metrics.jsonl. */
    public static Variant variant(String name, Path outputDir, Path adapterDir, List<Step> run, List<Integer> phase, DemoEval.Score score) {
        List<Step> p = select(run, phase, outputDir.resolve("metrics.jsonl"));
        double ms = median(p.stream().mapToDouble(Step::ms).toArray());
        double gf = p.stream().mapToDouble(Step::flops).average().orElse(0) / 1e9;
        double dgf = p.stream().mapToDouble(Step::denseFlops).average().orElse(0) / 1e9;
        double pgf = p.stream().mapToDouble(Step::predictorFlops).average().orElse(0) / 1e9;
        return new Variant(name, outputDir, adapterDir, ms, gf, dgf, pgf, run.get(run.size() - 1).loss(), score);
    }

    public static String table(Summary s) {
        String fmt = "%-16s | %8s | %-30s | %9s | %11s | %8s%n";
        StringBuilder sb = new StringBuilder();
        sb.append(String.format(Locale.ROOT, fmt, "variant", "ms/step", "GFLOP/step (actual vs dense)", "eval loss", "exact match", "speed-up"));
        sb.append("-".repeat(16)).append("-+-").append("-".repeat(8)).append("-+-").append("-".repeat(30)).append("-+-")
          .append("-".repeat(9)).append("-+-").append("-".repeat(11)).append("-+-").append("-".repeat(8)).append('\n');
        sb.append(String.format(Locale.ROOT, fmt, "base (no LoRA)", "-", "-", f4(s.base().evalLoss()), f3(s.base().exactMatch()), "-"));
        for (Variant v : List.of(s.dense(), s.sparse())) {
            String fl = String.format(Locale.ROOT, "%.4f vs %.4f (%.2fx)", v.gflopPerStep(), v.denseGflopPerStep(), v.gflopPerStep() / v.denseGflopPerStep());
            sb.append(String.format(Locale.ROOT, fmt, v.name(), String.format(Locale.ROOT, "%.1f", v.msPerStep()), fl, f4(v.score().evalLoss()),
                    f3(v.score().exactMatch()), String.format(Locale.ROOT, "%.2fx", s.dense().msPerStep() / v.msPerStep())));
        }
        return sb.toString();
    }

    private static String f4(double x) { return String.format(Locale.ROOT, "%.4f", x); }

    private static String f3(double x) { return String.format(Locale.ROOT, "%.3f", x); }

    public static String summaryJson(Summary s) {
        ObjectNode root = JSON.createObjectNode();
        root.put("steps", s.steps());
        root.put("compared_steps", s.phaseIsSparse() ? "sparse phase" : "all steps (the sparse run had no sparse step)");
        root.putPOJO("compared_step_numbers", s.phaseSteps());
        root.put("eval_examples", s.base().examples());
        ObjectNode b = root.putObject("base");
        b.put("eval_loss", s.base().evalLoss());
        b.put("exact_match", s.base().exactMatch());
        for (Variant v : List.of(s.dense(), s.sparse())) {
            ObjectNode o = root.putObject(v == s.dense() ? "dense" : "sparse");
            o.put("name", v.name());
            o.put("output_dir", v.outputDir().toAbsolutePath().toString());
            o.put("adapter", v.adapterDir().toAbsolutePath().toString());
            o.put("ms_per_step", v.msPerStep());
            o.put("gflop_per_step", v.gflopPerStep());
            o.put("dense_gflop_per_step", v.denseGflopPerStep());
            o.put("predictor_gflop_per_step", v.predictorGflopPerStep());
            o.put("final_train_loss", v.finalTrainLoss());
            o.put("eval_loss", v.score().evalLoss());
            o.put("exact_match", v.score().exactMatch());
            o.put("speedup", s.dense().msPerStep() / v.msPerStep());
        }
        root.put("speedup", s.speedup());
        root.put("flop_ratio", s.flopRatio());
        root.put("adapter", s.adapter().toAbsolutePath().toString());
        root.put("adapter_is", "a copy of the SparseLoRA adapter (" + s.sparse().adapterDir().toAbsolutePath() + ")");
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
