package org.sparselora.engine.sparse;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.SparsePlan;

/**
 * A SparseLoRA sparsity config: the reference's YAML schema, loaded unchanged ({@code start_step},
 * {@code end_step}, {@code mode: svd_<r>|dense}, {@code skip_output_tokens}, {@code sparsity:} name
 * suffix → ratio) plus this project's keys {@code sparse_output_tokens} (fraction of output tokens
 * also run sparse) and {@code frozen_grad: sliced|cut}. Owns parsing, validation against a model
 * shape ({@link #resolve}) and writing (calibration emits configs in the same schema).
 *
 * <p>Sparsity keys name a module by suffix, e.g. {@code layers.3.mlp} or
 * {@code model.layers.14.self_attn}; any prefix ending in a dot is accepted so names copied from a
 * module tree load too. A layer listed nowhere is dense.
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
    private static final Set<String> KEYS = Set.of("start_step", "end_step", "mode", "skip_output_tokens",
            "sparsity", "sparse_output_tokens", "frozen_grad");
    private static final Pattern MODE = Pattern.compile("svd_(-?\\d+)");
    private static final Pattern MODULE = Pattern.compile("(?:.*\\.)?layers\\.(\\d+)\\.(mlp|self_attn)");

    public SparsityConfig {
        sparsity = java.util.Collections.unmodifiableMap(new LinkedHashMap<>(sparsity));
    }

    /** No sparsity at all (plain LoRA). */
    public static SparsityConfig dense() {
        return new SparsityConfig(0, 1, 0, true, 0, SparsePlan.FrozenGrad.SLICED, Map.of(), "dense");
    }

    public boolean denseMode() { return rank == 0; }

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
        if (root == null || !root.isObject())
            throw new IllegalArgumentException(source + ": expected a YAML mapping at the top level");
        for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            if (!KEYS.contains(k))
                throw new IllegalArgumentException(source + ": unknown key '" + k + "' (known: " + KEYS + ")");
        }
        double start = number(root, "start_step", DEFAULT_START_STEP, source);
        double end = number(root, "end_step", 1.0, source);
        if (!(start >= 0 && start <= 1))
            throw new IllegalArgumentException(source + ": start_step = " + start + " is outside [0, 1]");
        if (!(end >= 0 && end <= 1))
            throw new IllegalArgumentException(source + ": end_step = " + end + " is outside [0, 1]");
        if (end < start)
            throw new IllegalArgumentException(source + ": end_step = " + end + " is before start_step = " + start);

        String modeText = text(root, "mode", "svd_8", source);
        int rank;
        if (modeText.equals("dense")) {
            rank = 0;
        } else {
            Matcher m = MODE.matcher(modeText);
            if (!m.matches())
                throw new IllegalArgumentException(source + ": mode = '" + modeText + "' is not 'dense' or 'svd_<rank>'");
            try {
                rank = Integer.parseInt(m.group(1));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(source + ": mode = '" + modeText + "': rank is not an int");
            }
            if (rank <= 0)
                throw new IllegalArgumentException(source + ": mode = '" + modeText + "': rank must be > 0");
        }

        boolean skip = bool(root, "skip_output_tokens", true, source);
        double sot = number(root, "sparse_output_tokens", 0.0, source);
        if (!(sot >= 0 && sot <= 1))
            throw new IllegalArgumentException(source + ": sparse_output_tokens = " + sot + " is outside [0, 1]");
        String fg = text(root, "frozen_grad", "sliced", source);
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
                String key = "sparsity." + e.getKey();
                if (!e.getValue().isNumber())
                    throw new IllegalArgumentException(source + ": " + key + " = '" + e.getValue().asText() + "' is not a number");
                double r = e.getValue().asDouble();
                if (!(r >= 0 && r < 1))
                    throw new IllegalArgumentException(source + ": " + key + " = " + r + " is outside [0, 1)");
                if (!MODULE.matcher(e.getKey()).matches())
                    throw new IllegalArgumentException(source + ": " + key
                            + ": unknown module name (expected a suffix 'layers.<i>.mlp' or 'layers.<i>.self_attn')");
                ratios.put(e.getKey(), r);
            }
        }
        return new SparsityConfig(start, end, rank, skip, sot, frozenGrad, ratios, source);
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
        sb.append("mode: ").append(denseMode() ? "dense" : "svd_" + rank).append('\n');
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

    /** Writes {@link #toYaml()} to a temp file and renames it over {@code file}. */
    public void write(Path file) throws IOException {
        Path abs = file.toAbsolutePath();
        Path tmp = Files.createTempFile(abs.getParent(), abs.getFileName().toString(), ".tmp");
        try {
            Files.writeString(tmp, toYaml(), StandardCharsets.UTF_8);
            Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
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
