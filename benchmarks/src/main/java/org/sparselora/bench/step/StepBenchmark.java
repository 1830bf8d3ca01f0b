package org.sparselora.bench.step;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.RowBlockMode;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.sparse.ChannelSelection;
import org.sparselora.engine.sparse.FlopCount;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.sparse.SparsePlanner;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.engine.sparse.SvdPredictor;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.OptimizerConfig;
import org.sparselora.engine.train.StepResult;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Whole LoRA training steps of this engine at real model shapes, the numbers that are set against
 * the PyTorch + PEFT peer (benchmarks/peer/peer_bench.py) in the same device run. The reference's
 * timing protocol: random-init model (bf16 on the GPU), synthetic batch (default 8 × 512 with the
 * last 128 tokens carrying loss), sparsity from step 0, warm-up steps, then the median of timed
 * steps, each split by device synchronisation into forward (incl. the SVD predictor and the loss
 * head), backward and optimizer. For each model shape it runs dense LoRA and, when a sparsity config
 * is given, SparseLoRA, plus SparseLoRA with the plan held fixed (no predictor) to time the
 * predictor's share. LoRA B is filled with small random values (PEFT's zero init would let GEMMs
 * run on zeros). Predictor factors are random for these timing runs (their values do not change the
 * cost; factoring an 8B model on the host takes minutes) — predictor quality is tested elsewhere.
 * Prints a table and writes one JSON line per row to --json.
 */
@Command(name = "step-benchmark", mixinStandardHelpOptions = true, description = "Training-step time of dense LoRA and SparseLoRA")
public final class StepBenchmark implements Callable<Integer> {

    @Option(names = "--backend", description = "gpu or cpu (default ${DEFAULT-VALUE})") String backend = "gpu";
    @Option(names = "--model", description = "8b, 1b or tiny (default ${DEFAULT-VALUE})") String model = "8b";
    @Option(names = "--targets", description = "qkvo, all, or both comma-separated (default ${DEFAULT-VALUE})") String targets = "qkvo";
    @Option(names = "--sparsity", description = "SparseLoRA config YAML (default: dense only)") Path sparsity;
    @Option(names = "--frozen-grad", description = "sliced or cut (default: the config's)") String frozenGrad;
    @Option(names = "--batch") int batch = 8;
    @Option(names = "--seq") int seq = 512;
    @Option(names = "--output-tokens", description = "last tokens per row that carry loss (default ${DEFAULT-VALUE})") int outputTokens = 128;
    @Option(names = "--warmup") int warmup = 20;
    @Option(names = "--steps") int steps = 30;
    @Option(names = "--peak-tflops", description = "measured bf16 GEMM peak for MFU (default ${DEFAULT-VALUE}, GPU.md)") double peakTflops = 790;
    @Option(names = "--profile", description = "after timing, run this many dense and sparse steps with a device sync around every op and print where the time goes (default ${DEFAULT-VALUE})") int profile = 0;
    @Option(names = "--quantize", description = "nf4: frozen projections stored as NF4 (QLoRA), random codes (default: bf16 weights)") String quantize;
    @Option(names = "--grad-checkpointing", description = "activation checkpointing: keep layer inputs, recompute each layer in the backward") boolean gradCheckpointing;
    @Option(names = "--json", description = "append one JSON line per row to this file") Path json;
    @Option(names = "--graphs", description = "eager (phases split by syncs), recorded (whole steps through the trainer, replayed as CUDA graphs) or both (default ${DEFAULT-VALUE})")
    String graphs = "both";

    public static void main(String[] args) {
        System.exit(new CommandLine(new StepBenchmark()).execute(args));
    }

    static LlamaConfig shape(String name) {
        return switch (name) {
            case "8b" -> new LlamaConfig("LlamaForCausalLM", 4096, 14336, 32, 32, 8, 128, 128256, 8192, 1e-5f, 500000f, null, false, false, 128000, 128001);
            case "1b" -> new LlamaConfig("LlamaForCausalLM", 2048, 8192, 16, 32, 8, 64, 128256, 131072, 1e-5f, 500000f,
                    new LlamaConfig.RopeScaling("llama3", 32f, 1f, 4f, 8192), true, false, 128000, 128001);
            case "tiny" -> new LlamaConfig("LlamaForCausalLM", 256, 704, 4, 8, 4, 32, 2048, 1024, 1e-5f, 10000f, null, false, false, 1, 2);
            default -> throw new IllegalArgumentException("--model must be 8b, 1b or tiny, got " + name);
        };
    }

    record Row(String model, String targets, String variant, double msStep, double msFwd, double msBwd, double msOpt,
               double tokensPerSec, double peakGiB, double peakAllocGiB, long flops, long denseFlops, long predictorFlops, double mfu) {}

    @Override
    public Integer call() throws IOException {
        Locale.setDefault(Locale.ROOT);
        LlamaConfig cfg = shape(model);
        Backend be = backend.equals("gpu") ? gpu() : new CpuBackend();
        long t0 = System.nanoTime();
        if (quantize != null && !quantize.equals("nf4")) throw new IllegalArgumentException("--quantize takes nf4, got " + quantize);
        LlamaWeights w = quantize != null ? LlamaWeights.randomNf4(be, cfg, 42)   // codes drawn on the host layer by layer
                : LlamaWeights.random(be, cfg, 42);   // drawn on the device: no host copy of the model
        be.synchronize();
        System.err.printf("%s: %s weights on %s in %.1f s%n", model, be.computeType(), be.name(), (System.nanoTime() - t0) / 1e9);
        LlamaModel m = new LlamaModel(be, w, Math.max(seq, 1024));
        m.setRowBlockMode(RowBlockMode.fromProperty());   // -Dsparselora.rowBlocks
        m.setGradientCheckpointing(gradCheckpointing);
        Batch b = batch(cfg);
        List<Row> rows = new ArrayList<>();
        boolean first = true;
        for (String t : targets.split(",")) {
            EnumSet<Projection> tg = switch (t) {
                case "all" -> EnumSet.allOf(Projection.class);
                case "qkvo" -> EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O);
                default -> throw new IllegalArgumentException("--targets takes qkvo and/or all, got " + t);
            };
            try (LoraAdapter lora = new LoraAdapter(be, cfg, new LoraConfig(32, 64f, 0f, tg, false, 7))) {
                randomizeB(lora);
                if (eager()) rows.add(measure(cfg, be, m, lora, b, null, t, "dense LoRA"));
                if (recorded()) rows.add(measureRecorded(cfg, be, m, lora, b, null, t, "dense LoRA, recorded step"));
                if (sparsity != null) {
                    SparsityConfig sc = SparsityConfig.load(sparsity);
                    if (frozenGrad != null)
                        sc = new SparsityConfig(sc.startStep(), sc.endStep(), sc.rank(), sc.skipOutputTokens(), sc.sparseOutputTokens(),
                                SparsePlan.FrozenGrad.valueOf(frozenGrad.toUpperCase(Locale.ROOT)), sc.sparsity(), sc.source());
                    SparsityConfig.Resolved res = sc.resolve(cfg);
                    SparsityConfig scFinal = sc;
                    SvdPredictor pred = SvdPredictor.randomForTiming(cfg, res, sc.rank(), 11);
                    String label = "SparseLoRA " + sparsity.getFileName().toString().replace(".yaml", "") + " (" + sc.frozenGrad().name().toLowerCase(Locale.ROOT) + ")";
                    try (SparsePlanner planner = new SparsePlanner(be, sc, new ChannelSelection(be, pred, res), warmup + steps, 3)) {
                        if (eager()) rows.add(measure(cfg, be, m, lora, b, planner, t, label));
                        if (first && eager()) rows.add(measureFixedPlan(cfg, be, m, lora, b, planner, t, "  same, plan fixed (no predictor)"));
                        if (recorded()) rows.add(measureRecorded(cfg, be, m, lora, b, planner, t, label + ", recorded step"));
                        if (first && recorded()) rows.add(measureRecordedFixedPlan(cfg, be, m, lora, b, planner, t, "  same, plan fixed (no predictor), recorded"));
                        if (first && profile > 0)
                            OpTimes.profile(be, w, lora, b, pbe -> new SparsePlanner(pbe, scFinal, new ChannelSelection(pbe, pred, res), warmup + steps, 3),
                                    profile, warmup, cfg.numLayers());
                    }
                }
            }
            first = false;
        }
        print(rows);
        return 0;
    }

    private boolean eager() { return graphMode().equals("eager") || graphMode().equals("both"); }

    private boolean recorded() { return graphMode().equals("recorded") || graphMode().equals("both"); }

    private String graphMode() {
        if (!List.of("eager", "recorded", "both").contains(graphs)) throw new IllegalArgumentException("--graphs takes eager, recorded or both, not " + graphs);
        return graphs;
    }

    /**
     * Whole training steps as training runs them: {@link LoraTrainer#computeGradients} +
     * {@link LoraTrainer#applyUpdate}, the step's device work recorded at its second step and
     * replayed as one CUDA graph after (on a backend that records; eager elsewhere). One sync per
     * step; no phase split. Fails if a timed step was not a replay on a recording backend.
     */
    private Row measureRecorded(LlamaConfig cfg, Backend be, LlamaModel m, LoraAdapter lora, Batch b,
                                org.sparselora.engine.sparse.StepPlanner planner, String tg, String name) {
        resetPeak(be);
        double[] step = new double[steps];
        long flops = -1, predictor = 0;
        try (LoraTrainer tr = new LoraTrainer(m, lora, OptimizerConfig.defaults(warmup + steps))) {
            if (planner != null) tr.setSparsePlanner(planner);
            for (int s = 0; s < warmup + steps; s++) {
                be.synchronize();
                long a = System.nanoTime();
                StepResult r = tr.computeGradients(b, s, planner != null);
                tr.applyUpdate(s, b.outputTokenCount());
                be.synchronize();
                long e = System.nanoTime();
                if (s >= warmup) step[s - warmup] = (e - a) / 1e6;
                if (planner != null) {
                    flops = r.flops() - r.predictorFlops();
                    predictor = r.predictorFlops();
                }
            }
            if (be.graphCapture().isPresent() && tr.replayedSteps() < steps)
                throw new IllegalStateException(name + ": only " + tr.replayedSteps() + " of the " + steps + " timed steps were graph replays");
        }
        return row(cfg, lora, b, tg, name, new Timings(step, new double[steps], new double[steps]), flops, predictor, be, true);
    }

    /** {@link #measureRecorded} with one plan (chosen at a sparse step) handed out every step: the recorded step without the predictor. */
    private Row measureRecordedFixedPlan(LlamaConfig cfg, Backend be, LlamaModel m, LoraAdapter lora, Batch b, SparsePlanner planner, String tg, String name) {
        SparsePlan plan = fixedPlan(m, lora, b, planner);
        try {
            return measureRecorded(cfg, be, m, lora, b, (batch, step) -> plan, tg, name);
        } finally {
            planner.release();
        }
    }

    /** What one timed step runs: returns the plan it used (null = dense), still held until {@code done}. */
    private interface StepBody {
        SparsePlan forward(int step);

        default void done(SparsePlan plan) {}
    }

    private record Timings(double[] fwd, double[] bwd, double[] opt) {}

    /** warm-up + timed steps of forward / backward / AdamW, each phase closed by a device sync. */
    private Timings time(Backend be, LlamaModel m, LoraAdapter lora, Batch b, StepBody body) {
        // closed at the end: its AdamW moments would otherwise stay in the device pool (and in the
        // next row's peak) for the rest of the run
        try (LoraTrainer tr = new LoraTrainer(m, lora, OptimizerConfig.defaults(warmup + steps))) {
            return time(be, m, b, tr, body);
        }
    }

    private Timings time(Backend be, LlamaModel m, Batch b, LoraTrainer tr, StepBody body) {
        double[] fwd = new double[steps], bwd = new double[steps], opt = new double[steps];
        for (int s = 0; s < warmup + steps; s++) {
            be.synchronize();
            long a = System.nanoTime();
            SparsePlan plan = body.forward(s);
            be.synchronize();
            long c = System.nanoTime();
            m.backward();
            be.synchronize();
            long d = System.nanoTime();
            body.done(plan);
            tr.applyUpdate(s, b.outputTokenCount());
            be.synchronize();
            long e = System.nanoTime();
            if (s >= warmup) {
                fwd[s - warmup] = (c - a) / 1e6;
                bwd[s - warmup] = (d - c) / 1e6;
                opt[s - warmup] = (e - d) / 1e6;
            }
        }
        return new Timings(fwd, bwd, opt);
    }


    private Row measure(LlamaConfig cfg, Backend be, LlamaModel m, LoraAdapter lora, Batch b, SparsePlanner planner, String tg, String name) {
        long[] flops = {-1, 0}; // plan FLOPs (-1 = dense), predictor FLOPs
        resetPeak(be);
        Timings t = time(be, m, lora, b, new StepBody() {
            @Override public SparsePlan forward(int s) {
                SparsePlan plan = planner != null ? planner.plan(b, s) : null;
                m.forward(b, lora, plan, plan != null ? planner.selector() : null, s);
                return plan;
            }

            @Override public void done(SparsePlan plan) {
                if (plan == null) return;
                flops[1] = planner.lastPredictorFlops();
                flops[0] = FlopCount.executed(cfg, FlopCount.Lora.of(lora.config()), b, plan, 0).flops();
                planner.release();
            }
        });
        return row(cfg, lora, b, tg, name, t, flops[0], flops[1], be, false);
    }

    /** A plan chosen once at a step inside the sparse window (a forward fills every layer's channels); the planner holds it until release(). */
    private SparsePlan fixedPlan(LlamaModel m, LoraAdapter lora, Batch b, SparsePlanner planner) {
        SparsePlan plan = planner.plan(b, warmup); // past the dense warm-up
        if (plan == null) throw new IllegalStateException("step " + warmup + " is not sparse under " + sparsity);
        m.forward(b, lora, plan, planner.selector(), 0);
        m.backward();
        lora.zeroGrads();
        return plan;
    }

    /** SparseLoRA with one plan (chosen at a sparse step) reused: the step without the predictor. */
    private Row measureFixedPlan(LlamaConfig cfg, Backend be, LlamaModel m, LoraAdapter lora, Batch b, SparsePlanner planner, String tg, String name) {
        SparsePlan plan = fixedPlan(m, lora, b, planner);
        Timings t = time(be, m, lora, b, s -> {
            m.forward(b, lora, plan, null, s);
            return plan;
        });
        long planFlops = FlopCount.executed(cfg, FlopCount.Lora.of(lora.config()), b, plan, 0).flops();
        planner.release();
        return row(cfg, lora, b, tg, name, t, planFlops, 0, be, false);
    }

    /** @param whole t.fwd holds whole steps (no phase split) */
    private Row row(LlamaConfig cfg, LoraAdapter lora, Batch b, String tg, String name, Timings t,
                    long planFlops, long predictorFlops, Backend be, boolean whole) {
        double[] fwd = t.fwd(), bwd = t.bwd(), opt = t.opt();
        double[] step = new double[steps];
        for (int i = 0; i < steps; i++) step[i] = fwd[i] + bwd[i] + opt[i];
        double ms = median(step);
        if (whole) fwd = bwd = opt = new double[] {Double.NaN};
        long dense = FlopCount.dense(cfg, FlopCount.Lora.of(lora.config()), b).flops();
        long flops = planFlops < 0 ? dense : planFlops + predictorFlops;
        double mfu = flops / (ms / 1e3) / (peakTflops * 1e12);
        return new Row(model, tg, name, ms, median(fwd), median(bwd), median(opt), b.tokenCount() / (ms / 1e3),
                peakGiB(be, "peakMemory"), peakGiB(be, "peakMemoryInUse"), flops, dense, predictorFlops, mfu);
    }

    private Batch batch(LlamaConfig cfg) {
        // the last outputTokens positions carry the loss, as in the reference's timing batches
        return Batch.synthetic(cfg.vocabSize(), batch, seq, outputTokens, 5);
    }

    private static void randomizeB(LoraAdapter lora) {
        LinkedHashMap<String, float[]> h = lora.toHost();
        SplittableRandom r = new SplittableRandom(9);
        for (var e : h.entrySet())
            if (e.getKey().contains("lora_B")) for (int i = 0; i < e.getValue().length; i++) e.getValue()[i] = (float) (r.nextDouble(-1, 1) * 1e-3);
        lora.fromHost(h);
    }

    private void print(List<Row> rows) throws IOException {
        if (gradCheckpointing) System.out.printf("%nactivation checkpointing on; batch %d × %d tokens%n", batch, seq);
        if (quantize != null) System.out.printf("%nQLoRA: frozen projections in NF4%n");
        System.out.printf("%n%-5s %-5s %-50s %9s %8s %8s %7s %9s %8s %8s %9s %8s %6s %8s%n", "model", "lora", "variant", "ms/step",
                "fwd", "bwd", "opt", "tok/s", "peakGiB", "allocGiB", "TFLOP/st", "FLOPred", "MFU", "speedup");
        Row base = rows.get(0);
        for (Row r : rows) {
            if (r.variant.startsWith("dense LoRA")) base = r;
            System.out.printf("%-5s %-5s %-50s %9.1f %8s %8s %7s %9.0f %8.1f %8.1f %9.2f %7.2fx %5.1f%% %7.2fx%n", r.model, r.targets, r.variant,
                    r.msStep, ms(r.msFwd), ms(r.msBwd), ms(r.msOpt), r.tokensPerSec, r.peakGiB, r.peakAllocGiB, r.flops / 1e12,
                    (double) r.denseFlops / r.flops, 100 * r.mfu, base.msStep / r.msStep);
        }
        if (json != null) {
            StringBuilder sb = new StringBuilder();
            for (Row r : rows)
                sb.append(String.format(Locale.ROOT,
                        "{\"model\":\"%s\",\"targets\":\"%s\",\"variant\":\"%s\",\"ms_step\":%.3f,\"ms_fwd\":%s,\"ms_bwd\":%s,\"ms_opt\":%s,"
                                + "\"tokens_per_s\":%.1f,\"peak_gib\":%.2f,\"peak_alloc_gib\":%.2f,\"flops\":%d,\"dense_flops\":%d,\"predictor_flops\":%d,\"mfu\":%.4f,"
                                + "\"batch\":%d,\"seq\":%d,\"output_tokens\":%d,\"warmup\":%d,\"steps\":%d,\"grad_checkpointing\":%b,\"quantize\":\"%s\"}%n",
                        r.model, r.targets, r.variant.trim(), r.msStep, jsonMs(r.msFwd), jsonMs(r.msBwd), jsonMs(r.msOpt), r.tokensPerSec, r.peakGiB, r.peakAllocGiB, r.flops,
                        r.denseFlops, r.predictorFlops, r.mfu, batch, seq, outputTokens, warmup, steps, gradCheckpointing, quantize == null ? "none" : quantize));
            Files.writeString(json, sb.toString(), java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.APPEND);
        }
    }

    /** A phase time for the table; "-" where the step ran as one graph (no phase split). */
    private static String ms(double v) { return Double.isNaN(v) ? "-" : String.format(Locale.ROOT, "%.1f", v); }

    private static String jsonMs(double v) { return Double.isNaN(v) ? "null" : String.format(Locale.ROOT, "%.3f", v); }

    static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }

    static Backend gpu() {
        try {
            return (Backend) Class.forName("org.sparselora.cuda.GpuBackend").getMethod("create", int.class).invoke(null, 0);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("cannot start the GPU backend: " + e, e);
        }
    }

    /**
     * A new peak window: cached pool blocks left by earlier rows (another target set's adapter, the
     * profile's model) are given back first, so a row's peak is what its own step holds.
     */
    private static void resetPeak(Backend be) {
        try {
            be.getClass().getMethod("trimMemory").invoke(be);
            be.getClass().getMethod("resetPeakMemory").invoke(be);
        } catch (ReflectiveOperationException ignored) {
            // backends without memory accounting report 0
        }
    }

    /** peakMemory: held from the driver incl. cached blocks (PyTorch's max_memory_reserved); peakMemoryInUse: live tensors + scratch (max_memory_allocated, the peer's "peak"). */
    static double peakGiB(Backend be, String method) {
        try {
            return ((Number) be.getClass().getMethod(method).invoke(be)).doubleValue() / (1L << 30);
        } catch (ReflectiveOperationException e) {
            return 0;
        }
    }
}
