package org.sparselora.actors.job;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.sparselora.proto.control.DataSpec;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.LoraSpec;
import org.sparselora.proto.control.OptimizerSpec;
import org.sparselora.proto.control.ScheduleSpec;

/**
 * The one place that knows what a valid {@link JobSpec} is: defaults for unset fields, validation
 * of every field (a {@link JobSpecException} naming the field path, which is also the job.yaml
 * key), and resolving a sparsity config given by path into the inline form the pipeline runs. The
 * sparsity config itself is defaulted and checked by the engine's own parser ({@link SparsityProtos}).
 * Both job files and SubmitJob requests go through here.
 */
public final class JobSpecs {

    public static final List<String> LORA_TARGETS = List.of("q", "k", "v", "o", "gate", "up", "down");
    private static final int MAX_STRING = 4096;
    /** The training modes: a LoRA adapter on frozen weights, or every parameter. */
    public static final String LORA = "lora", FULL = "full";

    private JobSpecs() {}

    /** Fills every unset field that has a default (see control.proto). */
    public static JobSpec withDefaults(JobSpec s) {
        JobSpec.Builder b = s.toBuilder();
        if (!s.hasWorkers()) b.setWorkers(1);
        if (!s.hasCheckpointEvery()) b.setCheckpointEvery(100);
        if (!s.hasPrefetch()) b.setPrefetch(4);
        if (!s.hasGradAccumSteps()) b.setGradAccumSteps(1);
        if (s.getDevice().isEmpty()) b.setDevice("cpu");
        if (s.getName().isEmpty() && !s.getOutputDir().isEmpty()) {
            Path fn = Path.of(s.getOutputDir()).getFileName();
            b.setName(fn == null ? "job" : fn.toString());
        }
        if (s.getMode().isEmpty()) b.setMode(LORA);
        if (!isFull(b.getMode())) {   // full mode has no adapter: a lora section stays absent, so validate can refuse one given
            LoraSpec.Builder l = s.getLora().toBuilder();
            if (!l.hasR()) l.setR(32);
            if (!l.hasAlpha()) l.setAlpha(64);
            if (l.getTargetsCount() == 0) l.addAllTargets(List.of("q", "k", "v", "o"));
            b.setLora(l);
        }
        OptimizerSpec.Builder o = s.getOptimizer().toBuilder();
        if (o.getName().isEmpty()) o.setName("adamw");
        if (!o.hasLr()) o.setLr(2e-4);
        if (!o.hasWeightDecay()) o.setWeightDecay(0);
        if (!o.hasBeta1()) o.setBeta1(0.9);
        if (!o.hasBeta2()) o.setBeta2(0.999);
        if (!o.hasEps()) o.setEps(1e-8);
        if (!o.hasGradClip()) o.setGradClip(1.0);
        if (!o.hasDecayNormsAndEmbeddings() && isFull(b.getMode())) o.setDecayNormsAndEmbeddings(false);
        b.setOptimizer(o);
        ScheduleSpec.Builder sc = s.getSchedule().toBuilder();
        if (sc.getType().isEmpty()) sc.setType("constant");
        b.setSchedule(sc);
        if (s.hasSparsity()) b.setSparsity(SparsityProtos.normalized(s.getSparsity(), "sparsity"));
        if (s.getData().hasSynthetic()) {
            // synthetic data gives rows per worker and the sequence length: the job's shape follows
            var sy = s.getData().getSynthetic();
            if (s.getBatchSize() == 0) b.setBatchSize(sy.getBatch() * b.getWorkers());
            if (s.getSeqLen() == 0) b.setSeqLen(sy.getSeq());
        }
        return b.build();
    }

    /** Every field, after {@link #withDefaults}. */
    public static void validate(JobSpec s) {
        str("name", s.getName(), false);
        str("model", s.getModel(), true);
        str("tokenizer", s.getTokenizer(), false);
        DataSpec d = s.getData();
        if (d.hasSynthetic()) {
            var sy = d.getSynthetic();
            if (!d.getPath().isEmpty()) throw new JobSpecException("data.path", "give either data.path or data.synthetic, not both");
            range("data.synthetic.batch", sy.getBatch(), 1, 1_000_000);
            range("data.synthetic.seq", sy.getSeq(), 2, 1 << 20);
            range("data.synthetic.output_tokens", sy.getOutputTokens(), 1, sy.getSeq());
            if (s.getBatchSize() != sy.getBatch() * Math.max(1, s.getWorkers()))
                throw new JobSpecException("batch_size", "is " + s.getBatchSize() + " but data.synthetic.batch " + sy.getBatch()
                        + " rows per worker × " + s.getWorkers() + " workers = " + sy.getBatch() * Math.max(1, s.getWorkers()) + " (leave batch_size out)");
            if (s.getSeqLen() != sy.getSeq())
                throw new JobSpecException("seq_len", "is " + s.getSeqLen() + " but data.synthetic.seq is " + sy.getSeq() + " (leave seq_len out)");
        } else {
            str("data.path", d.getPath(), true);
            if (s.getModel().startsWith("random:") && s.getTokenizer().isEmpty())
                throw new JobSpecException("data", "a random: model has no tokenizer: use data.synthetic (or give tokenizer)");
        }
        if (s.getModel().startsWith("random:")) org.sparselora.actors.engine.RandomModel.check(s.getModel());
        if (!d.getFormat().isEmpty() && !Set.of("alpaca", "gsm8k", "text", "arc").contains(d.getFormat()))
            throw new JobSpecException("data.format", "must be one of alpaca, gsm8k, text, arc, got '" + d.getFormat() + "'");
        str("data.field", d.getField(), false);
        if (!s.getMode().equals(LORA) && !isFull(s.getMode()))
            throw new JobSpecException("mode", "must be lora or full, got '" + s.getMode() + "'");
        if (isFull(s.getMode())) validateFull(s);
        else validateLora(s);
        OptimizerSpec o = s.getOptimizer();
        if (!o.getName().equals("adamw")) throw new JobSpecException("optimizer.name", "only adamw is supported, got '" + o.getName() + "'");
        if (!(o.getLr() > 0 && o.getLr() <= 1)) throw new JobSpecException("optimizer.lr", "must be in (0, 1], got " + o.getLr());
        if (!(o.getWeightDecay() >= 0 && o.getWeightDecay() <= 10)) throw new JobSpecException("optimizer.weight_decay", "must be in [0, 10], got " + o.getWeightDecay());
        if (!(o.getBeta1() >= 0 && o.getBeta1() < 1)) throw new JobSpecException("optimizer.beta1", "must be in [0, 1), got " + o.getBeta1());
        if (!(o.getBeta2() >= 0 && o.getBeta2() < 1)) throw new JobSpecException("optimizer.beta2", "must be in [0, 1), got " + o.getBeta2());
        if (!(o.getEps() > 0 && o.getEps() < 1)) throw new JobSpecException("optimizer.eps", "must be in (0, 1), got " + o.getEps());
        if (!(o.getGradClip() >= 0 && Double.isFinite(o.getGradClip()))) throw new JobSpecException("optimizer.grad_clip", "must be >= 0 (0 = off), got " + o.getGradClip());
        ScheduleSpec sc = s.getSchedule();
        if (!Set.of("constant", "linear", "cosine").contains(sc.getType()))
            throw new JobSpecException("schedule.type", "must be constant, linear or cosine, got '" + sc.getType() + "'");
        if (s.hasEpochs()) {
            if (s.getSteps() != 0) throw new JobSpecException("epochs", "give either steps or epochs, not both");
            range("epochs", s.getEpochs(), 1, 1_000_000);
            if (d.hasSynthetic()) throw new JobSpecException("epochs", "synthetic data has no size: give steps");
            range("schedule.warmup_steps", sc.getWarmupSteps(), 0, 100_000_000);   // checked against the steps once the data set is read
        } else {
            range("steps", s.getSteps(), 1, 100_000_000);
            range("schedule.warmup_steps", sc.getWarmupSteps(), 0, s.getSteps());
        }
        range("grad_accum_steps", s.getGradAccumSteps(), 1, 1_000_000);
        if (!s.getQuantize().isEmpty() && !s.getQuantize().equals("nf4"))
            throw new JobSpecException("quantize", "must be nf4 (or left out), got '" + s.getQuantize() + "'");
        if (!s.getQuantize().isEmpty() && isFull(s.getMode()))
            throw new JobSpecException("quantize", "applies to mode: lora only (full mode trains the base weights, which cannot stay quantized)");
        if (!(sc.getMinLrRatio() >= 0 && sc.getMinLrRatio() <= 1)) throw new JobSpecException("schedule.min_lr_ratio", "must be in [0, 1], got " + sc.getMinLrRatio());
        range("batch_size", s.getBatchSize(), 1, 1_000_000);
        range("seq_len", s.getSeqLen(), 1, 1 << 20);
        range("workers", s.getWorkers(), 1, 1024);
        if (s.getBatchSize() % s.getWorkers() != 0)
            throw new JobSpecException("workers", s.getWorkers() + " workers cannot split batch_size " + s.getBatchSize() + " evenly");
        str("output_dir", s.getOutputDir(), true);
        range("checkpoint_every", s.getCheckpointEvery(), 0, 100_000_000);
        try {
            Devices.forJob(s.getDevice(), s.getWorkers());
        } catch (IllegalArgumentException e) {
            throw new JobSpecException("device", e.getMessage());
        }
        range("prefetch", s.getPrefetch(), 1, 1024);
    }

    /** LoRA mode: the adapter's settings and the sparsity config. */
    private static void validateLora(JobSpec s) {
        LoraSpec l = s.getLora();
        range("lora.r", l.getR(), 1, 4096);
        positive("lora.alpha", l.getAlpha());
        if (!(l.getDropout() >= 0 && l.getDropout() < 1)) throw new JobSpecException("lora.dropout", "must be in [0, 1), got " + l.getDropout());
        Set<String> seen = new HashSet<>();
        for (String t : l.getTargetsList()) {
            if (!LORA_TARGETS.contains(t)) throw new JobSpecException("lora.targets", "unknown projection '" + t + "' (use " + String.join(", ", LORA_TARGETS) + ")");
            if (!seen.add(t)) throw new JobSpecException("lora.targets", "'" + t + "' listed twice");
        }
        if (l.getTargetsCount() == 0) throw new JobSpecException("lora.targets", "must name at least one projection");
        if (s.hasSparsityPath()) str("sparsity", s.getSparsityPath(), true);
        if (s.hasSparsity()) SparsityProtos.toEngine(s.getSparsity(), "sparsity");
        if (s.getOptimizer().hasDecayNormsAndEmbeddings())
            throw new JobSpecException("optimizer.decay_norms_and_embeddings", "applies to mode: full only (a LoRA adapter has no norms, biases or embeddings)");
    }

    /** Whether a spec's mode (after {@link #withDefaults}) trains every parameter. */
    public static boolean isFull(String mode) { return FULL.equals(mode); }

    /** Full mode: every parameter trains, so the LoRA and sparsity sections have nothing to configure. */
    private static void validateFull(JobSpec s) {
        if (s.hasLora())
            throw new JobSpecException("lora", "is not used in mode: full (every parameter trains, there is no adapter); remove the lora section or use mode: lora");
        if (s.hasSparsity() || s.hasSparsityPath())
            throw new JobSpecException("sparsity", "is not used in mode: full (contextual sparsity applies to LoRA training only); remove it or use mode: lora");
    }

    /**
     * The job's number of updates: {@code steps}, or with {@code epochs} that many passes over a data
     * set of {@code updatesPerEpoch} updates (each of batch_size × grad_accum_steps rows); also checks
     * that the warmup fits them.
     */
    public static int totalSteps(JobSpec s, long updatesPerEpoch) {
        if (!s.hasEpochs()) return s.getSteps();
        if (updatesPerEpoch < 1)
            throw new JobSpecException("epochs", "the data set holds no full update of batch_size × grad_accum_steps = "
                    + (long) s.getBatchSize() * Math.max(1, s.getGradAccumSteps()) + " rows");
        long steps = updatesPerEpoch * s.getEpochs();
        if (steps > 100_000_000) throw new JobSpecException("epochs", s.getEpochs() + " epochs of " + updatesPerEpoch + " updates exceed 100000000 steps");
        range("schedule.warmup_steps", s.getSchedule().getWarmupSteps(), 0, steps);
        return (int) steps;
    }

    /** Rows of one update: batch_size (over every worker) × grad_accum_steps micro-batches. */
    public static int rowsPerUpdate(JobSpec s) { return s.getBatchSize() * Math.max(1, s.getGradAccumSteps()); }

    /** Defaults + validation + sparsity by path loaded inline: the spec a JobSupervisor runs. */
    public static JobSpec prepare(JobSpec spec) {
        JobSpec s = withDefaults(spec);
        validate(s);
        if (s.hasSparsityPath()) {
            Path p = Path.of(s.getSparsityPath());
            if (!Files.isReadable(p)) throw new JobSpecException("sparsity", "cannot read sparsity config " + p);
            s = s.toBuilder().setSparsity(SparsityProtos.load(p)).build();
        }
        return s;
    }

    private static void str(String field, String v, boolean required) {
        if (required && v.isBlank()) throw new JobSpecException(field, "is required");
        if (v.length() > MAX_STRING) throw new JobSpecException(field, "is longer than " + MAX_STRING + " characters");
        for (int i = 0; i < v.length(); i++)
            if (Character.isISOControl(v.charAt(i))) throw new JobSpecException(field, "contains a control character");
    }

    private static void range(String field, long v, long lo, long hi) {
        if (v < lo || v > hi) throw new JobSpecException(field, "must be in [" + lo + ", " + hi + "], got " + v);
    }

    private static void positive(String field, double v) {
        if (!(v > 0 && Double.isFinite(v))) throw new JobSpecException(field, "must be > 0, got " + v);
    }
}
