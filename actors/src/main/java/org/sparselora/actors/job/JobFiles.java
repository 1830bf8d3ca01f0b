package org.sparselora.actors.job;

import com.fasterxml.jackson.core.JacksonException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import com.fasterxml.jackson.dataformat.yaml.YAMLGenerator;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import org.sparselora.proto.control.DataSpec;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.LoraSpec;
import org.sparselora.proto.control.OptimizerSpec;
import org.sparselora.proto.control.ScheduleSpec;

/**
 * job.yaml ↔ {@link JobSpec}, in one place. The YAML keys are the proto field names (snake_case);
 * {@code data} may be a path or a map, {@code sparsity} a path to a config in the published schema
 * (docs/METHOD.md#config) or that config inline. Relative paths are taken relative to the job file's directory
 * (a value with a scheme like {@code toy:bigram} is left alone). Unknown keys and values of the
 * wrong type are errors naming the file and the key; then {@link JobSpecs} fills defaults and
 * validates.
 */
public final class JobFiles {

    private static final ObjectMapper YAML = new ObjectMapper(new YAMLFactory()
            .disable(YAMLGenerator.Feature.WRITE_DOC_START_MARKER).enable(YAMLGenerator.Feature.MINIMIZE_QUOTES))
            // a key given twice is a mistake, not "the last one wins"
            .enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_READING_DUP_TREE_KEY)
            .enable(com.fasterxml.jackson.core.JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
    private static final Pattern SCHEME = Pattern.compile("^[A-Za-z][A-Za-z0-9+.-]+:.*");
    private static final Set<String> TOP = Set.of("name", "model", "tokenizer", "data", "lora", "sparsity", "optimizer", "schedule",
            "steps", "batch_size", "seq_len", "workers", "output_dir", "checkpoint_every", "seed", "device", "prefetch", "mode",
            "epochs", "grad_accum_steps", "gradient_checkpointing", "quantize");

    private JobFiles() {}

    /** Parse, resolve relative paths, fill defaults, validate (sparsity by path stays a path). */
    public static JobSpec load(Path file) throws IOException {
        JsonNode root = readYaml(file);
        try {
            JobSpec spec = JobSpecs.withDefaults(fromTree(root, file.toAbsolutePath().getParent()));
            JobSpecs.validate(spec);
            return spec;
        } catch (JobSpecException e) {
            throw new JobSpecException(file + ": key '" + e.field() + "'", e.getMessage().substring(e.field().length() + 2));
        }
    }

    public static JobSpec fromTree(JsonNode root, Path baseDir) {
        if (root == null || !root.isObject()) throw new JobSpecException("(top level)", "must be a mapping of keys to values");
        JobSpec.Builder b = JobSpec.newBuilder();
        for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            String k = e.getKey();
            JsonNode v = e.getValue();
            if (v == null || v.isNull()) continue;
            switch (k) {
                case "name" -> b.setName(text(k, v));
                case "model" -> b.setModel(path(text(k, v), baseDir));
                case "tokenizer" -> b.setTokenizer(path(text(k, v), baseDir));
                case "data" -> b.setData(data(v, baseDir));
                case "lora" -> b.setLora(lora(v));
                case "sparsity" -> {
                    if (v.isTextual()) b.setSparsityPath(path(v.asText(), baseDir));
                    else b.setSparsity(SparsityProtos.fromTree(v, "sparsity"));
                }
                case "optimizer" -> b.setOptimizer(optimizer(v));
                case "schedule" -> b.setSchedule(schedule(v));
                case "steps" -> b.setSteps(integer(k, v));
                case "batch_size" -> b.setBatchSize(integer(k, v));
                case "seq_len" -> b.setSeqLen(integer(k, v));
                case "workers" -> b.setWorkers(integer(k, v));
                case "output_dir" -> b.setOutputDir(path(text(k, v), baseDir));
                case "checkpoint_every" -> b.setCheckpointEvery(integer(k, v));
                case "seed" -> b.setSeed(longValue(k, v));
                case "device" -> b.setDevice(text(k, v));
                case "prefetch" -> b.setPrefetch(integer(k, v));
                case "mode" -> b.setMode(text(k, v));
                case "epochs" -> b.setEpochs(integer(k, v));
                case "grad_accum_steps" -> b.setGradAccumSteps(integer(k, v));
                case "gradient_checkpointing" -> b.setGradientCheckpointing(bool(k, v));
                case "quantize" -> b.setQuantize(text(k, v));
                default -> throw new JobSpecException(k, "unknown key (known: " + String.join(", ", TOP.stream().sorted().toList()) + ")");
            }
        }
        return b.build();
    }

    private static JsonNode readYaml(Path file) throws IOException {
        if (!Files.isReadable(file)) throw new IOException(file + ": cannot read the file");
        try {
            return YAML.readTree(file.toFile());
        } catch (JacksonException e) {
            // the parser's first line only (its later lines repeat the input around the error)
            String why = e.getOriginalMessage() == null ? "" : e.getOriginalMessage().lines().findFirst().orElse("");
            if (why.length() > 160) why = why.substring(0, 160) + "…";
            throw new IOException(file + ": not valid YAML: " + why
                    + (e.getLocation() != null ? " (line " + e.getLocation().getLineNr() + ")" : ""));
        }
    }

    private static DataSpec data(JsonNode v, Path base) {
        if (v.isTextual()) return DataSpec.newBuilder().setPath(path(v.asText(), base)).build();
        DataSpec.Builder d = DataSpec.newBuilder();
        each("data", v, (k, x) -> {
            switch (k) {
                case "path" -> d.setPath(path(text("data.path", x), base));
                case "format" -> d.setFormat(text("data.format", x));
                case "field" -> d.setField(text("data.field", x));
                case "synthetic" -> d.setSynthetic(synthetic(x));
                default -> throw new JobSpecException("data." + k, "unknown key (known: path, format, field, synthetic)");
            }
        });
        return d.build();
    }

    private static org.sparselora.proto.control.SyntheticData synthetic(JsonNode v) {
        var s = org.sparselora.proto.control.SyntheticData.newBuilder();
        each("data.synthetic", v, (k, x) -> {
            switch (k) {
                case "batch" -> s.setBatch(integer("data.synthetic.batch", x));
                case "seq" -> s.setSeq(integer("data.synthetic.seq", x));
                case "output_tokens" -> s.setOutputTokens(integer("data.synthetic.output_tokens", x));
                default -> throw new JobSpecException("data.synthetic." + k, "unknown key (known: batch, seq, output_tokens)");
            }
        });
        return s.build();
    }

    private static LoraSpec lora(JsonNode v) {
        LoraSpec.Builder l = LoraSpec.newBuilder();
        each("lora", v, (k, x) -> {
            switch (k) {
                case "r" -> l.setR(integer("lora.r", x));
                case "alpha" -> l.setAlpha(number("lora.alpha", x));
                case "dropout" -> l.setDropout(number("lora.dropout", x));
                case "rslora" -> l.setRslora(bool("lora.rslora", x));
                case "targets" -> {
                    if (!x.isArray()) throw new JobSpecException("lora.targets", "must be a list like [q, k, v, o]");
                    // an empty list would otherwise read as "not given" and become the default targets
                    if (x.isEmpty()) throw new JobSpecException("lora.targets", "is an empty list: name at least one projection, or leave the key out for the default [q, k, v, o]");
                    for (JsonNode t : x) l.addTargets(text("lora.targets", t).replace("_proj", ""));
                }
                default -> throw new JobSpecException("lora." + k, "unknown key (known: r, alpha, dropout, targets, rslora)");
            }
        });
        return l.build();
    }

    private static OptimizerSpec optimizer(JsonNode v) {
        OptimizerSpec.Builder o = OptimizerSpec.newBuilder();
        each("optimizer", v, (k, x) -> {
            String f = "optimizer." + k;
            switch (k) {
                case "name" -> o.setName(text(f, x));
                case "lr" -> o.setLr(number(f, x));
                case "weight_decay" -> o.setWeightDecay(number(f, x));
                case "beta1" -> o.setBeta1(number(f, x));
                case "beta2" -> o.setBeta2(number(f, x));
                case "eps" -> o.setEps(number(f, x));
                case "grad_clip" -> o.setGradClip(number(f, x));
                case "decay_norms_and_embeddings" -> o.setDecayNormsAndEmbeddings(bool(f, x));
                default -> throw new JobSpecException(f, "unknown key (known: name, lr, weight_decay, beta1, beta2, eps, grad_clip, decay_norms_and_embeddings)");
            }
        });
        return o.build();
    }

    private static ScheduleSpec schedule(JsonNode v) {
        ScheduleSpec.Builder s = ScheduleSpec.newBuilder();
        each("schedule", v, (k, x) -> {
            String f = "schedule." + k;
            switch (k) {
                case "type" -> s.setType(text(f, x));
                case "warmup_steps" -> s.setWarmupSteps(integer(f, x));
                case "min_lr_ratio" -> s.setMinLrRatio(number(f, x));
                default -> throw new JobSpecException(f, "unknown key (known: type, warmup_steps, min_lr_ratio)");
            }
        });
        return s.build();
    }

    /** The YAML form of a spec (the inverse of {@link #fromTree}, paths as stored). */
    public static String toYaml(JobSpec s) throws IOException {
        ObjectNode r = YAML.createObjectNode();
        if (!s.getName().isEmpty()) r.put("name", s.getName());
        r.put("model", s.getModel());
        if (!s.getTokenizer().isEmpty()) r.put("tokenizer", s.getTokenizer());
        ObjectNode d = r.putObject("data");
        if (!s.getData().getPath().isEmpty() || !s.getData().hasSynthetic()) d.put("path", s.getData().getPath());
        if (s.getData().hasSynthetic()) {
            var sy = s.getData().getSynthetic();
            d.putObject("synthetic").put("batch", sy.getBatch()).put("seq", sy.getSeq()).put("output_tokens", sy.getOutputTokens());
        }
        if (!s.getData().getFormat().isEmpty()) d.put("format", s.getData().getFormat());
        if (!s.getData().getField().isEmpty()) d.put("field", s.getData().getField());
        if (s.hasLora()) {
            LoraSpec l = s.getLora();
            ObjectNode n = r.putObject("lora");
            if (l.hasR()) n.put("r", l.getR());
            if (l.hasAlpha()) n.put("alpha", l.getAlpha());
            n.put("dropout", l.getDropout());
            ArrayNode t = n.putArray("targets");
            l.getTargetsList().forEach(t::add);
            n.put("rslora", l.getRslora());
        }
        if (s.hasSparsityPath()) r.put("sparsity", s.getSparsityPath());
        if (s.hasSparsity()) r.set("sparsity", SparsityProtos.toTree(s.getSparsity()));
        if (s.hasOptimizer()) {
            OptimizerSpec o = s.getOptimizer();
            ObjectNode n = r.putObject("optimizer");
            if (!o.getName().isEmpty()) n.put("name", o.getName());
            if (o.hasLr()) n.put("lr", o.getLr());
            if (o.hasWeightDecay()) n.put("weight_decay", o.getWeightDecay());
            if (o.hasBeta1()) n.put("beta1", o.getBeta1());
            if (o.hasBeta2()) n.put("beta2", o.getBeta2());
            if (o.hasEps()) n.put("eps", o.getEps());
            if (o.hasGradClip()) n.put("grad_clip", o.getGradClip());
            if (o.hasDecayNormsAndEmbeddings()) n.put("decay_norms_and_embeddings", o.getDecayNormsAndEmbeddings());
        }
        if (s.hasSchedule()) {
            ScheduleSpec c = s.getSchedule();
            r.putObject("schedule").put("type", c.getType()).put("warmup_steps", c.getWarmupSteps()).put("min_lr_ratio", c.getMinLrRatio());
        }
        if (s.hasEpochs()) r.put("epochs", s.getEpochs());
        else r.put("steps", s.getSteps());
        if (s.hasGradAccumSteps()) r.put("grad_accum_steps", s.getGradAccumSteps());
        if (s.getGradientCheckpointing()) r.put("gradient_checkpointing", true);
        if (!s.getQuantize().isEmpty()) r.put("quantize", s.getQuantize());
        r.put("batch_size", s.getBatchSize());
        r.put("seq_len", s.getSeqLen());
        if (s.hasWorkers()) r.put("workers", s.getWorkers());
        r.put("output_dir", s.getOutputDir());
        if (s.hasCheckpointEvery()) r.put("checkpoint_every", s.getCheckpointEvery());
        r.put("seed", s.getSeed());
        if (!s.getDevice().isEmpty()) r.put("device", s.getDevice());
        if (s.hasPrefetch()) r.put("prefetch", s.getPrefetch());
        if (!s.getMode().isEmpty()) r.put("mode", s.getMode());
        return YAML.writeValueAsString(r);
    }

    // ---- typed access with errors that name the key ----------------------------------------

    private static void each(String at, JsonNode v, java.util.function.BiConsumer<String, JsonNode> f) {
        if (!v.isObject()) throw new JobSpecException(at, "must be a mapping, got " + describe(v));
        for (Iterator<Map.Entry<String, JsonNode>> it = v.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (e.getValue() != null && !e.getValue().isNull()) f.accept(e.getKey(), e.getValue());
        }
    }

    private static String text(String key, JsonNode v) {
        if (!v.isValueNode()) throw new JobSpecException(key, "must be a string, got " + describe(v));
        return v.asText();
    }

    private static int integer(String key, JsonNode v) {
        if (!v.isIntegralNumber() || !v.canConvertToInt()) throw new JobSpecException(key, "must be an integer, got " + describe(v));
        return v.intValue();
    }

    private static long longValue(String key, JsonNode v) {
        if (!v.isIntegralNumber() || !v.canConvertToLong()) throw new JobSpecException(key, "must be an integer, got " + describe(v));
        return v.longValue();
    }

    private static double number(String key, JsonNode v) {
        if (!v.isNumber()) throw new JobSpecException(key, "must be a number, got " + describe(v));
        return v.doubleValue();
    }

    private static boolean bool(String key, JsonNode v) {
        if (!v.isBoolean()) throw new JobSpecException(key, "must be true or false, got " + describe(v));
        return v.booleanValue();
    }

    private static String describe(JsonNode v) {
        if (v.isObject()) return "a mapping";
        if (v.isArray()) return "a list";
        return "'" + v.asText() + "'";
    }

    private static String path(String p, Path base) {
        // random:<config.json> names a file: resolve it like any other path (presets stay as they are)
        if (p.startsWith("random:") && (p.endsWith(".json") || p.contains("/")))
            return "random:" + path(p.substring("random:".length()), base);
        if (p.isEmpty() || base == null || SCHEME.matcher(p).matches()) return p;
        Path q = Path.of(p);
        return q.isAbsolute() ? p : base.resolve(q).normalize().toString();
    }

}
