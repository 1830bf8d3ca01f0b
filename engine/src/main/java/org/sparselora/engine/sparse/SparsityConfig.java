package org.sparselora.engine.sparse;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collections;
import java.util.Comparator;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.SortedMap;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.sparselora.engine.io.AtomicFiles;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.SparsePlan;

/**
 * A SparseLoRA sparsity config, and the one place that parses, defaults and validates it: the
 * reference's YAML schema, loaded unchanged ({@code start_step}, {@code end_step},
 * {@code mode: svd_<r>|dense}, {@code skip_output_tokens}, the summaries {@code ffn_sparsity} /
 * {@code qkvo_sparsity}, {@code sparsity:} name suffix → ratio) plus this project's keys
 * {@code sparse_output_tokens} (fraction of output tokens also run sparse) and
 * {@code frozen_grad: sliced|cut}. Owns parsing ({@link #parse}: a file, or an already-read YAML
 * tree such as a job file's inline {@code sparsity:} block), validation (the canonical
 * constructor: whoever builds a config, it is valid), validation against a model shape
 * ({@link #resolve}) and writing (calibration emits configs in the same schema).
 *
 * <p>Sparsity keys name a module by suffix, e.g. {@code layers.3.mlp} or
 * {@code model.layers.14.self_attn}; any prefix ending in a dot is accepted so names copied from a
 * module tree load too. A layer listed nowhere, or listed with ratio 0, is dense.
 *
 * <p>The summaries are how the reference's files describe themselves ({@code "ffn=0.99x28"}: 28 MLP
 * layers at 0.99; {@code "ffn=0.95x14-0.5x1"}: 14 at 0.95 and one at 0.5; {@code "qkv=0"}: no
 * sparse attention). They carry no information of their own, so a file whose summary disagrees with
 * its per-layer values is refused: one of the two was edited by hand, and which one the author meant
 * cannot be told. They are not kept after the check.
 *
 * <p>To add a key: a component here (validated in the constructor), its line in {@link #parse} and
 * {@link #KEYS}, its field in the protobuf mirror ({@code control.proto}) and its two lines in the
 * actors' mapper ({@code SparsityProtos}).
 */
public record SparsityConfig(
        double startStep,
        double endStep,
        int rank,                     // SVD predictor rank; 0 for mode: dense
        boolean skipOutputTokens,     // token splitting on: output tokens run dense
        double sparseOutputTokens,    // fraction of output tokens made sparse anyway
        SparsePlan.FrozenGrad frozenGrad,
        Map<String, Double> sparsity, // key as written → ratio, in file order
        String source) {              // file name (or label) used in error messages

    public static final double DEFAULT_START_STEP = 0.05;
    public static final double DEFAULT_END_STEP = 1.0;
    public static final int DEFAULT_RANK = 8;
    public static final boolean DEFAULT_SKIP_OUTPUT_TOKENS = true;
    public static final double DEFAULT_SPARSE_OUTPUT_TOKENS = 0.0;
    public static final SparsePlan.FrozenGrad DEFAULT_FROZEN_GRAD = SparsePlan.FrozenGrad.SLICED;

    /** The keys a config may have, in the order {@link #toYaml} writes them. */
    public static final List<String> KEYS = List.of("start_step", "end_step", "mode", "skip_output_tokens",
            "ffn_sparsity", "qkvo_sparsity", "sparse_output_tokens", "frozen_grad", "sparsity");
    private static final Pattern MODE = Pattern.compile("svd_(-?\\d+)");
    private static final Pattern MODULE = Pattern.compile("(?:.*\\.)?layers\\.(\\d+)\\.(mlp|self_attn)");
    private static final Pattern SUMMARY_GROUP = Pattern.compile("(\\d+(?:\\.\\d+)?)(?:x(\\d+))?");

    /** Validates every field; the messages name {@code source}, the key and the value. */
    public SparsityConfig {
        Objects.requireNonNull(frozenGrad, "frozenGrad");
        source = source == null ? "sparsity config" : source;
        if (!(startStep >= 0 && startStep <= 1))
            throw new IllegalArgumentException(source + ": start_step = " + startStep + " is outside [0, 1]");
        if (!(endStep >= 0 && endStep <= 1))
            throw new IllegalArgumentException(source + ": end_step = " + endStep + " is outside [0, 1]");
        if (endStep < startStep)
            throw new IllegalArgumentException(source + ": end_step = " + endStep + " is before start_step = " + startStep);
        if (rank < 0)
            throw new IllegalArgumentException(source + ": mode = 'svd_" + rank + "': rank must be > 0");
        if (!(sparseOutputTokens >= 0 && sparseOutputTokens <= 1))
            throw new IllegalArgumentException(source + ": sparse_output_tokens = " + sparseOutputTokens + " is outside [0, 1]");
        for (Map.Entry<String, Double> e : sparsity.entrySet()) {
            String key = "sparsity." + e.getKey();
            double r = e.getValue();
            if (!(r >= 0 && r < 1))
                throw new IllegalArgumentException(source + ": " + key + " = " + r + " is outside [0, 1)");
            if (!MODULE.matcher(e.getKey()).matches())
                throw new IllegalArgumentException(source + ": " + key
                        + ": unknown module name (expected a suffix 'layers.<i>.mlp' or 'layers.<i>.self_attn')");
        }
        sparsity = Collections.unmodifiableMap(new LinkedHashMap<>(sparsity));
    }

    /** No sparsity at all (plain LoRA). */
    public static SparsityConfig dense() {
        return new SparsityConfig(0, 1, 0, true, 0, SparsePlan.FrozenGrad.SLICED, Map.of(), "dense");
    }

    public boolean denseMode() { return rank == 0; }

    /** {@code dense} or {@code svd_<rank>}, as the {@code mode} key writes it. */
    public String mode() { return denseMode() ? "dense" : "svd_" + rank; }

    /** Whether some step of a run can be sparse: not mode dense, and some layer has a ratio above 0. */
    public boolean anySparseLayer() {
        if (denseMode()) return false;
        for (double r : sparsity.values()) if (r > 0) return true;
        return false;
    }

    /**
     * Layer index → ratio of the {@code mlp} or {@code self_attn} layers the file makes sparse (ratio
     * above 0; none in mode dense), without a model shape (see {@link #resolve} for one).
     */
    public SortedMap<Integer, Double> sparseLayers(String kind) {
        if (!kind.equals("mlp") && !kind.equals("self_attn")) throw new IllegalArgumentException("kind " + kind + " is not mlp or self_attn");
        SortedMap<Integer, Double> out = new TreeMap<>();
        if (denseMode()) return out;
        for (Map.Entry<String, Double> e : sparsity.entrySet()) {
            Matcher m = MODULE.matcher(e.getKey());
            if (m.matches() && m.group(2).equals(kind) && e.getValue() > 0) out.put(Integer.parseInt(m.group(1)), e.getValue());
        }
        return out;
    }

    /** Reads and validates (schema only; call {@link #resolve} for the model shape) a YAML file. */
    public static SparsityConfig load(Path file) {
        String text;
        try {
            text = Files.readString(file, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read sparsity config " + file + ": " + e.getMessage(), e);
        }
        return parse(text, file.toString());
    }

    public static SparsityConfig parse(String yaml, String source) {
        JsonNode root;
        try {
            root = new ObjectMapper(new YAMLFactory()).readTree(yaml);
        } catch (IOException e) {
            throw new IllegalArgumentException(source + ": not valid YAML: " + e.getMessage(), e);
        }
        return parse(root, source);
    }

    /** A config from an already-read YAML (or JSON) tree in the same schema; unset keys take the defaults. */
    public static SparsityConfig parse(JsonNode root, String source) {
        if (root == null || !root.isObject())
            throw new IllegalArgumentException(source + ": expected a YAML mapping at the top level");
        for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            if (!KEYS.contains(k))
                throw new IllegalArgumentException(source + ": unknown key '" + k + "' (known: " + String.join(", ", KEYS) + ")");
        }
        double start = number(root, "start_step", DEFAULT_START_STEP, source);
        double end = number(root, "end_step", DEFAULT_END_STEP, source);
        int rank = rankOf(text(root, "mode", "svd_" + DEFAULT_RANK, source), source);
        boolean skip = bool(root, "skip_output_tokens", DEFAULT_SKIP_OUTPUT_TOKENS, source);
        double sot = number(root, "sparse_output_tokens", DEFAULT_SPARSE_OUTPUT_TOKENS, source);
        String fg = text(root, "frozen_grad", DEFAULT_FROZEN_GRAD.name().toLowerCase(Locale.ROOT), source);
        SparsePlan.FrozenGrad frozenGrad = switch (fg) {
            case "sliced" -> SparsePlan.FrozenGrad.SLICED;
            case "cut" -> SparsePlan.FrozenGrad.CUT;
            default -> throw new IllegalArgumentException(source + ": frozen_grad = '" + fg + "' is not 'sliced' or 'cut'");
        };

        Map<String, Double> ratios = new LinkedHashMap<>();
        JsonNode sp = root.get("sparsity");
        if (sp != null && !sp.isNull()) {
            if (!sp.isObject())
                throw new IllegalArgumentException(source + ": 'sparsity' must be a mapping of module name -> ratio");
            for (Iterator<Map.Entry<String, JsonNode>> it = sp.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                if (!e.getValue().isNumber())
                    throw new IllegalArgumentException(source + ": sparsity." + e.getKey() + " = '" + e.getValue().asText() + "' is not a number");
                ratios.put(e.getKey(), e.getValue().asDouble());
            }
        }
        SparsityConfig c = new SparsityConfig(start, end, rank, skip, sot, frozenGrad, ratios, source);
        c.checkSummary("ffn_sparsity", text(root, "ffn_sparsity", null, source), "mlp", Set.of("ffn"));
        c.checkSummary("qkvo_sparsity", text(root, "qkvo_sparsity", null, source), "self_attn", Set.of("qkv", "qkvo"));
        return c;
    }

    /** {@code dense} → 0, {@code svd_<r>} → r (> 0). */
    static int rankOf(String mode, String source) {
        if (mode.equals("dense")) return 0;
        Matcher m = MODE.matcher(mode);
        if (!m.matches())
            throw new IllegalArgumentException(source + ": mode = '" + mode + "' is not 'dense' or 'svd_<rank>'");
        int rank;
        try {
            rank = Integer.parseInt(m.group(1));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(source + ": mode = '" + mode + "': rank is not an int");
        }
        if (rank <= 0) throw new IllegalArgumentException(source + ": mode = '" + mode + "': rank must be > 0");
        return rank;
    }

    /**
     * A summary such as {@code ffn=0.95x14-0.5x1} must list exactly the non-zero ratios of the
     * {@code kind} layers: each {@code ratio x count} group as many layers at that ratio, nothing else
     * sparse ({@code ffn=0} / {@code qkv=0}: none).
     */
    private void checkSummary(String key, String summary, String kind, Set<String> prefixes) {
        if (summary == null) return;
        int eq = summary.indexOf('=');
        String bad = source + ": " + key + " = '" + summary + "' ";
        if (eq < 0 || !prefixes.contains(summary.substring(0, eq).strip()))
            throw new IllegalArgumentException(bad + "is not '" + prefixes.stream().sorted().findFirst().orElseThrow()
                    + "=<ratio>x<layers>[-<ratio>x<layers>…]'");
        Map<Double, Integer> said = new TreeMap<>(Comparator.reverseOrder());
        for (String g : summary.substring(eq + 1).strip().split("-")) {
            Matcher m = SUMMARY_GROUP.matcher(g.strip());
            if (!m.matches())
                throw new IllegalArgumentException(bad + "has a group '" + g + "' that is not <ratio>x<layers>");
            double r = Double.parseDouble(m.group(1));
            int n = m.group(2) == null ? (r == 0 ? 0 : -1) : Integer.parseInt(m.group(2));
            if (n < 0) throw new IllegalArgumentException(bad + "has a group '" + g + "' without its layer count (x<layers>)");
            if (r > 0 && n > 0) said.merge(r, n, Integer::sum);
        }
        Map<Double, Integer> has = new TreeMap<>(Comparator.reverseOrder());
        for (Map.Entry<String, Double> e : sparsity.entrySet()) {
            Matcher m = MODULE.matcher(e.getKey());
            if (m.matches() && m.group(2).equals(kind) && e.getValue() > 0) has.merge(e.getValue(), 1, Integer::sum);
        }
        if (!said.equals(has))
            throw new IllegalArgumentException(bad + "does not match the per-layer values: they make " + describe(has)
                    + " " + kind + " layers sparse, the summary says " + describe(said));
    }

    private static String describe(Map<Double, Integer> groups) {
        if (groups.isEmpty()) return "no";
        StringBuilder sb = new StringBuilder();
        groups.forEach((r, n) -> sb.append(sb.isEmpty() ? "" : " + ").append(n).append(" at ").append(fmt(r)));
        return sb.toString();
    }

    /** Per-layer ratios for a model; rejects layer indices the model does not have (and duplicates). */
    public Resolved resolve(LlamaConfig model) {
        double[] mlp = new double[model.numLayers()];
        double[] attn = new double[model.numLayers()];
        boolean[] seenMlp = new boolean[model.numLayers()];
        boolean[] seenAttn = new boolean[model.numLayers()];
        for (Map.Entry<String, Double> e : sparsity.entrySet()) {
            Matcher m = MODULE.matcher(e.getKey());
            if (!m.matches()) throw new IllegalStateException("validated at parse time: " + e.getKey());
            int layer;
            try {
                layer = Integer.parseInt(m.group(1));
            } catch (NumberFormatException ex) {
                layer = Integer.MAX_VALUE;
            }
            if (layer >= model.numLayers())
                throw new IllegalArgumentException(source + ": sparsity." + e.getKey() + ": layer " + m.group(1)
                        + " does not exist (the model has " + model.numLayers() + " layers, 0.." + (model.numLayers() - 1) + ")");
            boolean isMlp = m.group(2).equals("mlp");
            boolean[] seen = isMlp ? seenMlp : seenAttn;
            if (seen[layer])
                throw new IllegalArgumentException(source + ": sparsity." + e.getKey() + ": layer " + layer + " "
                        + m.group(2) + " is listed twice");
            seen[layer] = true;
            (isMlp ? mlp : attn)[layer] = denseMode() ? 0 : e.getValue();
        }
        return new Resolved(model, mlp, attn);
    }

    /**
     * Ratios per layer for one model shape, with the kept-channel counts the selection uses.
     * Attention keeps channels per KV channel (g, d), so its kept count is over Hkv·D; Q and O keep
     * that count times the GQA group size.
     */
    public record Resolved(LlamaConfig model, double[] mlpRatio, double[] attnRatio) {

        public boolean mlpSparse(int layer) { return mlpRatio[layer] > 0; }

        public boolean attentionSparse(int layer) { return attnRatio[layer] > 0; }

        public boolean anySparse() {
            for (int i = 0; i < mlpRatio.length; i++) if (mlpSparse(i) || attentionSparse(i)) return true;
            return false;
        }

        /** Kept intermediate channels of layer i (I if dense). */
        public int keptMlp(int layer) { return kept(model.intermediateSize(), mlpRatio[layer]); }

        /** Kept KV channels (g, d) of layer i, out of Hkv·D (Hkv·D if dense). */
        public int keptKv(int layer) { return kept(model.kvDim(), attnRatio[layer]); }
    }

    /**
     * k = floor(dim·(1 − ratio)), at least 1. The 1e-9 slack keeps ratios such as 0.7 from losing a
     * channel to binary rounding (dim·0.3 = 2.9999999999999996 for dim 10).
     */
    public static int kept(int dim, double ratio) {
        if (ratio <= 0) return dim;
        int k = (int) Math.floor(dim * (1.0 - ratio) + 1e-9);
        return Math.max(1, Math.min(dim, k));
    }

    /** The config in the reference's YAML schema (our extra keys only when not at their defaults). */
    public String toYaml() {
        StringBuilder sb = new StringBuilder();
        sb.append("start_step: ").append(fmt(startStep)).append('\n');
        if (endStep != 1.0) sb.append("end_step: ").append(fmt(endStep)).append('\n');
        sb.append("mode: ").append(mode()).append('\n');
        sb.append("skip_output_tokens: ").append(skipOutputTokens).append('\n');
        if (sparseOutputTokens != 0) sb.append("sparse_output_tokens: ").append(fmt(sparseOutputTokens)).append('\n');
        if (frozenGrad != SparsePlan.FrozenGrad.SLICED)
            sb.append("frozen_grad: ").append(frozenGrad.name().toLowerCase(Locale.ROOT)).append('\n');
        if (sparsity.isEmpty()) {
            sb.append("sparsity: {}\n");
        } else {
            sb.append("sparsity:\n");
            sparsity.forEach((k, v) -> sb.append("  ").append(k).append(": ").append(fmt(v)).append('\n'));
        }
        return sb.toString();
    }

    /** Writes {@link #toYaml()} to {@code file}: complete or not at all ({@link AtomicFiles}). */
    public void write(Path file) throws IOException {
        String yaml = toYaml();
        try {
            AtomicFiles.writeFile(file, tmp -> Files.writeString(tmp, yaml, StandardCharsets.UTF_8));
        } catch (java.io.UncheckedIOException e) {
            throw e.getCause();
        }
    }

    private static String fmt(double v) { return Double.toString(v); }

    private static double number(JsonNode root, String key, double dflt, String source) {
        JsonNode n = root.get(key);
        if (n == null || n.isNull()) return dflt;
        if (!n.isNumber()) throw new IllegalArgumentException(source + ": " + key + " = '" + n.asText() + "' is not a number");
        return n.asDouble();
    }

    private static boolean bool(JsonNode root, String key, boolean dflt, String source) {
        JsonNode n = root.get(key);
        if (n == null || n.isNull()) return dflt;
        if (!n.isBoolean()) throw new IllegalArgumentException(source + ": " + key + " = '" + n.asText() + "' is not true/false");
        return n.asBoolean();
    }

    private static String text(JsonNode root, String key, String dflt, String source) {
        JsonNode n = root.get(key);
        if (n == null || n.isNull()) return dflt;
        if (!n.isTextual()) throw new IllegalArgumentException(source + ": " + key + " = '" + n.asText() + "' is not a string");
        return n.asText();
    }
}
