package org.sparselora.actors.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import com.fasterxml.jackson.dataformat.yaml.YAMLGenerator;
import com.typesafe.config.Config;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.stream.Stream;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.SpawnProtocol;
import org.sparselora.actors.job.JobFiles;
import org.sparselora.actors.server.JobManager;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.data.DatasetFormat;
import org.sparselora.engine.data.DatasetReader;
import org.sparselora.engine.data.Example;
import org.sparselora.actors.demo.DemoEval;
import org.sparselora.actors.demo.DemoFiles;
import org.sparselora.actors.demo.DemoModel;
import org.sparselora.actors.demo.DemoReport;
import org.sparselora.actors.demo.DemoTask;
import org.sparselora.engine.io.AtomicFiles;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;
import org.sparselora.proto.control.JobStatus;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code sparselora demo}: the embedded default job — no network, no shared data; the CPU, or a GPU
 * when one is usable ({@code --device auto}). Builds (or reuses from the cache) a small Llama trained
 * on a generated COPY task, writes the SHIFT task (long prompt, short answer: the shape SparseLoRA
 * pays on) as dataset files and two job files, and trains it twice through the same in-process actor
 * pipeline {@code train} uses: dense LoRA, then SparseLoRA (same seed, data and steps). Then it
 * reads both adapters back from disk, scores them and the base model on held-out words, and ends
 * with the per-step and accuracy tables and {@code summary.json}, computed from the runs' metrics.jsonl.
 */
@Command(name = "demo", mixinStandardHelpOptions = true,
        description = {"The embedded default job: dense LoRA vs SparseLoRA on a generated task, on a small model built here.",
                "Writes DIR/data/, DIR/dense.yaml + DIR/dense/, DIR/sparse.yaml + DIR/sparse/ (metrics.jsonl, checkpoint, adapter),",
                "DIR/sparsity.yaml, DIR/adapter/ (a copy of the SparseLoRA adapter) and DIR/summary.json.",
                "The per-step table compares the two jobs on the same step numbers: the SparseLoRA job's dense warm-up, its sparse steps, all steps",
                "(ms/step: the median wall time; GFLOP/step: the mean, predictor included)."})
public final class DemoCommand implements Callable<Integer> {

    @Option(names = "--out", paramLabel = "DIR", defaultValue = "sparselora-demo", description = "output directory (default: ${DEFAULT-VALUE})")
    Path out;

    @Option(names = "--steps", paramLabel = "N", defaultValue = "80", description = "training steps of each job (default: ${DEFAULT-VALUE})")
    int steps;

    @Option(names = "--device", paramLabel = "DEV", defaultValue = "auto", description = {"training device: auto (a GPU when one is usable, else the CPU),",
            "cpu, cuda or cuda:<n> (default: ${DEFAULT-VALUE}; evaluation runs on the CPU)"})
    String device;

    @Option(names = "--cache", paramLabel = "DIR", description = {"where the base model is cached (default: $SPARSELORA_CACHE or ~/.cache/sparselora);",
            "the SVD predictor factors go to the pipeline's cache, $SPARSELORA_CACHE or ~/.cache/sparselora/predictors"})
    Path cache;

    @Option(names = "--eval-examples", paramLabel = "N", defaultValue = "256", description = "held-out SHIFT words to score (default: ${DEFAULT-VALUE})")
    int evalExamples;

    @Option(names = "--seed", paramLabel = "S", defaultValue = "42", description = "seed of both jobs (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--mlp-sparsity", paramLabel = "R", defaultValue = "0.95", description = "fraction of MLP channels pruned in the middle layers (default: ${DEFAULT-VALUE})")
    double mlpSparsity;

    @Option(names = "--attn-sparsity", paramLabel = "R", defaultValue = "0", description = "fraction of attention channels pruned in the middle layers (default: ${DEFAULT-VALUE})")
    double attnSparsity;

    // for tests: a tiny base model and small batches, so the whole pipeline runs in seconds
    @Option(names = "--base-recipe", hidden = true, defaultValue = "3x40", paramLabel = "CxS")
    String baseRecipe;

    @Option(names = "--batch-size", hidden = true, defaultValue = "32")
    int batchSize;

    @Option(names = "--train-examples", hidden = true, defaultValue = "4096")
    int trainExamples;

    static final int LORA_R = 16, LORA_ALPHA = 32;
    static final double LR = 2e-3, START_STEP = 0.1;

    private final PrintStream log = System.err;

    @Override
    public Integer call() throws Exception {
        long t0 = System.nanoTime();
        if (steps < 1) throw new IllegalArgumentException("--steps must be at least 1, got " + steps);
        for (double r : new double[] {mlpSparsity, attnSparsity})
            if (!(r >= 0 && r < 1)) throw new IllegalArgumentException("--mlp-sparsity and --attn-sparsity must be in [0, 1), got " + r);
        if (evalExamples < 1) throw new IllegalArgumentException("--eval-examples must be at least 1, got " + evalExamples);
        DemoModel.Recipe recipe = parseRecipe(baseRecipe);
        // before minutes of work: a GPU that is not there fails here, with the driver's reason (never a CPU fallback)
        org.sparselora.actors.job.Devices.Device dev;
        try {
            dev = org.sparselora.actors.job.Devices.parse(device.equals("auto") ? autoDevice() : device);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--device must be auto, or " + e.getMessage().replaceFirst("^must be ", ""));
        }
        if (dev.gpu()) org.sparselora.actors.engine.LlamaEngineProvider.checkGpus(dev, 1);
        Path dir = out.toAbsolutePath().normalize();
        Path cacheRoot = cache != null ? cache.toAbsolutePath() : defaultCache();
        say("output directory " + dir + "; training on " + dev.text() + (device.equals("auto") ? " (--device auto)" : ""));

        Path base;
        try (CpuBackend be = new CpuBackend()) {
            base = DemoModel.baseCheckpoint(cacheRoot, recipe, be, this::say);
        }

        // the task as files the normal job path reads
        Path data = dir.resolve("data"), train = data.resolve(DemoFiles.TRAIN), eval = data.resolve(DemoFiles.EVAL);
        DemoFiles.writeDataset(train, DemoTask.examples(DemoTask.Kind.SHIFT, trainExamples, seed, false));
        DemoFiles.writeDataset(eval, DemoTask.examples(DemoTask.Kind.SHIFT, evalExamples, seed + 1, true));
        Path sparsity = dir.resolve("sparsity.yaml");
        DemoFiles.writeText(sparsity, DemoFiles.sparsityYaml(DemoModel.config().numLayers(), mlpSparsity, attnSparsity, START_STEP));
        Path denseOut = dir.resolve("dense"), sparseOut = dir.resolve("sparse"), adapter = dir.resolve("adapter");
        // outputs of an earlier demo run in this directory: a job refuses a directory holding a checkpoint
        for (Path p : List.of(denseOut, sparseOut)) AtomicFiles.deleteQuietly(p);
        Path denseJob = writeJob(dir.resolve("dense.yaml"), "demo-dense", base, train, denseOut, null, dev.text());
        Path sparseJob = writeJob(dir.resolve("sparse.yaml"), "demo-sparse", base, train, sparseOut, sparsity, dev.text());
        say("task: SHIFT (the first " + DemoTask.ANSWER + " letters of a " + DemoTask.WORD + "-letter word, each → its successor), "
                + trainExamples + " training words in " + train + ", " + evalExamples + " held-out words in " + eval);
        say("job files: " + denseJob + ", " + sparseJob + " (rerun either with `sparselora train --config`)");

        List<Example> held = DatasetReader.read(eval, DatasetFormat.PROMPT_COMPLETION, DatasetReader.Options.DEFAULT).examples();
        DemoEval.Score baseScore;
        try (CpuBackend be = new CpuBackend(); DemoEval ev = new DemoEval(be, base)) {
            baseScore = ev.score(null, held);
        }
        say(String.format(Locale.ROOT, "base model before fine-tuning: exact match %.3f, eval loss %.4f", baseScore.exactMatch(), baseScore.evalLoss()));

        Config conf = Launch.config();
        ActorSystem<SpawnProtocol.Command> system = Launch.actorSystem(conf);
        try (JobManager jobs = new JobManager(system, 1, JobManager.engines(), Launch.settings(conf))) {
            say("job 1/2: dense LoRA, " + steps + " steps");
            if (!runJob(jobs, denseJob)) return 1;
            say("job 2/2: SparseLoRA (" + dir.relativize(sparsity) + "), " + steps + " steps");
            if (!runJob(jobs, sparseJob)) return 1;
        } finally {
            system.terminate();
            system.getWhenTerminated().toCompletableFuture().join();
        }

        copyDirectory(sparseOut.resolve("adapter"), adapter);
        DemoEval.Score denseScore, sparseScore;
        try (CpuBackend be = new CpuBackend(); DemoEval ev = new DemoEval(be, base)) {
            say("evaluating the adapters on " + held.size() + " held-out words");
            denseScore = ev.score(denseOut.resolve("adapter"), held);
            sparseScore = ev.score(adapter, held);
        }

        Path denseMetrics = denseOut.resolve("metrics.jsonl"), sparseMetrics = sparseOut.resolve("metrics.jsonl");
        List<DemoReport.Step> denseRun = DemoReport.readMetrics(denseMetrics), sparseRun = DemoReport.readMetrics(sparseMetrics);
        DemoReport.Phase[] phases = DemoReport.phases(denseRun, denseMetrics, sparseRun, sparseMetrics);
        DemoReport.Summary summary = new DemoReport.Summary(steps, phases[0], phases[1], phases[2], baseScore,
                DemoReport.variant("dense LoRA", denseOut, denseOut.resolve("adapter"), denseRun, denseScore),
                DemoReport.variant("SparseLoRA", sparseOut, sparseOut.resolve("adapter"), sparseRun, sparseScore),
                adapter, sparsity, (System.nanoTime() - t0) / 1e9);
        DemoReport.writeSummary(dir.resolve("summary.json"), summary);

        LlamaConfig mc = DemoModel.config();
        PrintStream o = System.out;
        o.println();
        o.printf(Locale.ROOT, "Model: Llama, %d layers, hidden %d, MLP %d; LoRA r=%d on q,k,v,o; %d steps per job, batch %d of %d tokens "
                        + "(%d context + %d output tokens each: context tokens run sparse, output tokens dense); device %s%n",
                mc.numLayers(), mc.hiddenSize(), mc.intermediateSize(), LORA_R, steps, batchSize, DemoModel.SEQ_LEN,
                DemoModel.CONTEXT_TOKENS, DemoModel.SEQ_LEN - DemoModel.CONTEXT_TOKENS, dev.text());
        o.printf(Locale.ROOT, "SparseLoRA config %s: MLP %.0f%% pruned, attention %.0f%% pruned in layers 1-%d; the first %.0f%% of the steps dense%n",
                dir.relativize(sparsity), 100 * mlpSparsity, 100 * attnSparsity, mc.numLayers() - 2, 100 * START_STEP);
        o.println();
        o.println("Training steps, the two jobs on the same step numbers (ms: median wall time per step; GFLOP: mean per step, predictor included):");
        o.print(DemoReport.stepTable(summary));
        o.println();
        o.printf(Locale.ROOT, "SHIFT task, %d held-out words:%n", held.size());
        o.print(DemoReport.scoreTable(summary));
        o.println();
        o.print(DemoReport.headline(summary));
        o.println("(ms/step is wall time on this machine, one job after the other: on a busy machine it varies from run to run."
                + " In the warm-up both jobs run dense; their times differ there by the JIT's warm-up, which the first job pays,"
                + " and the predictor's build, which the SparseLoRA job runs meanwhile.)");
        o.println("adapter: " + adapter + " (a copy of the SparseLoRA adapter, " + sparseOut.resolve("adapter") + ")");
        o.println("summary: " + dir.resolve("summary.json"));
        o.printf(Locale.ROOT, "done in %.1f s%n", summary.wallSeconds());
        return 0;
    }

    private boolean runJob(JobManager jobs, Path jobFile) throws Exception {
        JobSpec spec = JobFiles.load(jobFile);
        try (ProgressView view = new ProgressView(log, spec.getName())) {
            String id = jobs.submit(spec);
            jobs.watch(id, false, view::on, () -> {});
            JobStatus end = jobs.completion(id).get();
            view.close();
            say(spec.getName() + ": " + view.summary());
            if (end.getState() != JobState.FINISHED) {
                log.println("sparselora demo: job " + spec.getName() + " did not finish (" + end.getState() + "); see " + jobFile);
                return false;
            }
            return true;
        }
    }

    /** A job file in the documented job.yaml schema, so the user can rerun it with {@code train}. */
    private Path writeJob(Path file, String name, Path model, Path train, Path outputDir, Path sparsity, String trainDevice) {
        ObjectMapper yaml = new ObjectMapper(new YAMLFactory().disable(YAMLGenerator.Feature.WRITE_DOC_START_MARKER)
                .enable(YAMLGenerator.Feature.MINIMIZE_QUOTES));
        ObjectNode j = yaml.createObjectNode();
        j.put("name", name);
        j.put("model", model.toString());
        j.put("data", train.toString());
        ObjectNode lora = j.putObject("lora");
        lora.put("r", LORA_R);
        lora.put("alpha", LORA_ALPHA);
        lora.putArray("targets").add("q").add("k").add("v").add("o");
        if (sparsity != null) j.put("sparsity", sparsity.toString());
        j.putObject("optimizer").put("lr", LR);
        j.putObject("schedule").put("type", "cosine").put("warmup_steps", Math.max(1, steps / 16));
        j.put("steps", steps);
        j.put("batch_size", batchSize);
        j.put("seq_len", DemoModel.SEQ_LEN);
        j.put("output_dir", outputDir.toString());
        j.put("checkpoint_every", 0);
        j.put("seed", seed);
        j.put("device", trainDevice);
        try {
            String text = yaml.writeValueAsString(j);
            DemoFiles.writeText(file, "# written by `sparselora demo`\n" + text);
        } catch (IOException e) {
            throw new IllegalStateException("cannot write " + file + ": " + e.getMessage(), e);
        }
        return file;
    }

    private static void copyDirectory(Path from, Path to) {
        if (!Files.isDirectory(from)) throw new IllegalStateException("no adapter at " + from + " (the job wrote none)");
        AtomicFiles.writeDirectory(to, tmp -> {
            try (Stream<Path> files = Files.list(from)) {
                for (Path f : files.toList()) if (Files.isRegularFile(f)) Files.copy(f, tmp.resolve(f.getFileName()));
            }
        });
    }

    static DemoModel.Recipe parseRecipe(String s) {
        String[] p = s.split("x");
        try {
            if (p.length == 2) return new DemoModel.Recipe(Integer.parseInt(p[0]), Integer.parseInt(p[1]));
        } catch (NumberFormatException e) {
            // fall through
        }
        throw new IllegalArgumentException("--base-recipe must be CYCLESxSTEPS like 3x40, got '" + s + "'");
    }

    /**
     * {@code --device auto}: the first GPU when the CUDA runtime loads and sees one, else the CPU.
     * A machine without the CUDA libraries fails the check (or fails to link it); both mean the CPU.
     */
    static String autoDevice() {
        try {
            org.sparselora.cuda.Gpu.Availability a = org.sparselora.cuda.Gpu.check();
            return a.available() && a.deviceCount() > 0 ? "cuda" : "cpu";
        } catch (LinkageError e) {
            return "cpu";
        }
    }

    static Path defaultCache() {
        String env = System.getenv("SPARSELORA_CACHE");
        return env != null ? Path.of(env) : Path.of(System.getProperty("user.home"), ".cache", "sparselora");
    }

    private void say(String s) {
        log.println("[demo] " + s);
    }
}
