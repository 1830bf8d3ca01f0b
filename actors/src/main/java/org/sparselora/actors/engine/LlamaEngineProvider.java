package org.sparselora.actors.engine;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.sparselora.actors.job.Devices;
import org.sparselora.actors.job.JobSpecException;
import org.sparselora.actors.job.JobSpecs;
import org.sparselora.actors.job.SparsityProtos;
import org.sparselora.actors.pipeline.AdapterExporter;
import org.sparselora.actors.pipeline.BatchSource;
import org.sparselora.actors.pipeline.DataPosition;
import org.sparselora.actors.pipeline.DataSummary;
import org.sparselora.actors.pipeline.EngineProvider;
import org.sparselora.actors.pipeline.JobRuntime;
import org.sparselora.actors.pipeline.PredictorBuilder;
import org.sparselora.actors.pipeline.PredictorFactors;
import org.sparselora.actors.pipeline.WorkerFactory;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.data.Batcher;
import org.sparselora.engine.data.DatasetFormat;
import org.sparselora.engine.data.DatasetReader;
import org.sparselora.engine.data.ExampleTokenizer;
import org.sparselora.engine.data.PromptTemplate;
import org.sparselora.engine.data.TokenizedExample;
import org.sparselora.engine.io.AdapterFiles;
import org.sparselora.engine.data.TextPacker;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.io.HfCheckpointWriter;
import org.sparselora.engine.io.Llama2cCheckpoint;
import org.sparselora.engine.io.LoraSpec;
import org.sparselora.engine.io.PeftAdapter;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.RandomWeights;
import org.sparselora.engine.train.FullTrainer;
import org.sparselora.engine.train.LlamaFullModel;
import org.sparselora.engine.sparse.ChannelSelection;
import org.sparselora.engine.train.InProcessScoreExchange;
import org.sparselora.engine.sparse.LowRankSvd;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.sparse.SparsePlanner;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.engine.sparse.SvdPredictor;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.tokenizer.Tokenizers;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.train.GradientExchange;
import org.sparselora.engine.train.LocalGradientExchange;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.OptimizerConfig;
import org.sparselora.engine.train.TrainerState;
import org.sparselora.engine.train.TrainingWorker;
import org.sparselora.proto.control.JobSpec;

/**
 * The engine's Llama-family LoRA trainer behind the pipeline: a HF checkpoint directory (with
 * config.json) or a llama2.c {@code .bin} as the base model, its tokenizer, an Alpaca/GSM8K/text
 * dataset batched by the engine's {@link Batcher} (left padding, labels -100 on the prompt,
 * shuffled per epoch with the job's seed, every batch exactly batch_size rows so it splits evenly
 * over the workers), one {@link LoraTrainer} per worker on its own backend (CPU; or GPU
 * {@code cuda:<n + worker>} for device {@code cuda[:n]}, created on the worker's pinned thread, with
 * fixed-length batches for static shapes), the SVD predictor
 * built once per base model ({@link SvdPredictor}, cached on disk) and handed to each worker as
 * its {@link SparsePlanner}, and the PEFT adapter written at stop. With more than one worker the
 * workers register their adapters' flat gradient buffers with one in-process
 * {@link GradientExchange} (peer copies on the GPUs, {@link LocalGradientExchange} on the CPU), so
 * the pipeline's gradient rounds sum on the devices instead of through host arrays.
 *
 * <p>Timing jobs: {@code model: random:<preset|config.json>} ({@link RandomModel}: weights drawn on
 * each worker's backend, random SVD factors as in StepBenchmark — their values do not change the
 * cost) and {@code data: {synthetic: …}} (StepBenchmark's batches, a fresh draw per step).
 */
public final class LlamaEngineProvider implements EngineProvider {

    /**
     * Last resort for a worker that neither sends its channel scores nor fails: the gradient round's
     * time-out normally restarts the job first (and the replacement releases the waiting workers).
     */
    static final java.time.Duration SCORE_EXCHANGE_TIMEOUT = java.time.Duration.ofMinutes(10);

    /** The host-side SVD factors; each worker uploads them to its own backend. */
    public record Factors(String cacheKey, SvdPredictor predictor) implements PredictorFactors {
        /** SHA-256 over every factored projection's P and Q values, in layer and projection order. */
        @Override
        public String fingerprint() {
            try {
                java.security.MessageDigest md = java.security.MessageDigest.getInstance("SHA-256");
                java.nio.ByteBuffer buf = java.nio.ByteBuffer.allocate(4);
                for (int l = 0; l < predictor.config().numLayers(); l++)
                    for (SvdPredictor.Proj pr : SvdPredictor.Proj.values()) {
                        var f = predictor.get(l, pr);
                        if (f == null) continue;
                        md.update((pr.key(l) + ";").getBytes(java.nio.charset.StandardCharsets.UTF_8));
                        for (float[] a : new float[][]{f.p(), f.q()})
                            for (float v : a) md.update(buf.clear().putInt(Float.floatToRawIntBits(v)).array());
                    }
                return java.util.HexFormat.of().formatHex(md.digest());
            } catch (java.security.NoSuchAlgorithmException e) {
                throw new IllegalStateException(e);
            }
        }
    }

    @Override
    public String name() { return "llama"; }

    /** Tests set this to compare the host path with the exchange; real jobs always use the exchange when N > 1. */
    static volatile boolean useExchange = true;

    @Override
    public boolean accepts(JobSpec spec) {
        if (RandomModel.isRandom(spec.getModel())) return true;
        Path p;
        try {
            p = Path.of(spec.getModel());
        } catch (RuntimeException e) {
            return false;
        }
        return Files.isRegularFile(p.resolve("config.json")) || Files.isRegularFile(p) && p.getFileName().toString().endsWith(".bin");
    }

    @Override
    public JobRuntime open(JobSpec spec) { return open(spec, (java.util.function.IntFunction<org.sparselora.engine.sparse.ScoreExchange>) null); }

    /** Workers of a job whose other workers run in other JVMs: no in-process exchanges; {@code scores} joins worker w's selection to the others'. */
    @Override
    public JobRuntime openOnNode(JobSpec spec, java.util.function.IntFunction<org.sparselora.engine.sparse.ScoreExchange> scores) {
        return open(spec, java.util.Objects.requireNonNull(scores, "scores"));
    }

    private JobRuntime open(JobSpec spec, java.util.function.IntFunction<org.sparselora.engine.sparse.ScoreExchange> remoteScores) {
        boolean full = JobSpecs.isFull(spec.getMode());
        if (RandomModel.isRandom(spec.getModel())) {
            if (!full) return open(spec, null, false, null, RandomModel.config(spec.getModel()), remoteScores);
            // pretraining from scratch: the PRETRAIN init, the vocabulary of the job's tokenizer (if any), the same draw on every worker
            LlamaConfig cfg = spec.getTokenizer().isEmpty() ? RandomModel.config(spec.getModel()) : randomConfig(spec);
            return open(spec, null, false, new RandomWeights(cfg, spec.getSeed(), RandomWeights.Scheme.PRETRAIN), cfg, remoteScores);
        }
        Path model = Path.of(spec.getModel());
        boolean hf = Files.isDirectory(model);
        WeightSource src = hf ? HfCheckpoint.open(model) : Llama2cCheckpoint.open(model);
        try {
            return open(spec, model, hf, src, src.config(), remoteScores);
        } catch (RuntimeException e) {
            src.close();
            throw e;
        }
    }

    /** A random: preset sized to the job's tokenizer. */
    private static LlamaConfig randomConfig(JobSpec spec) {
        try (Tokenizer tok = Tokenizers.load(Path.of(spec.getTokenizer()))) {
            return RandomModel.config(spec.getModel(), tok.vocabSize(), tok.bosId(), tok.eosId());
        }
    }

    /**
     * @param model the model path (null: a random: model)
     * @param src   the base weights (null: a random: LoRA-mode model, drawn on each worker's backend from {@code cfg})
     */
    private JobRuntime open(JobSpec spec, Path model, boolean hf, WeightSource src, LlamaConfig cfg,
                            java.util.function.IntFunction<org.sparselora.engine.sparse.ScoreExchange> remoteScores) {
        Devices.Device device = Devices.forJob(spec.getDevice(), spec.getWorkers());
        boolean gpu = device.gpu();
        if (gpu) checkGpus(device, spec.getWorkers());
        boolean full = JobSpecs.isFull(spec.getMode());
        SparsityConfig sparsity = SparsityProtos.forJob(spec);
        SparsityConfig.Resolved resolved = sparsity.resolve(cfg);
        Path tokPath = null;

        BatchSource data;
        if (spec.getData().hasSynthetic()) {
            // each update's rows: every worker's micro-batches
            data = new SyntheticSource(cfg, spec.getData().getSynthetic(), spec.getWorkers() * Math.max(1, spec.getGradAccumSteps()), spec.getSeed(), src);
        } else {
            if (model == null && spec.getTokenizer().isEmpty())
                throw new JobSpecException("data", "a random: model has no tokenizer: use data.synthetic (or give tokenizer)");
            tokPath = !spec.getTokenizer().isEmpty() ? Path.of(spec.getTokenizer()) : hf ? model : model.resolveSibling("tokenizer.bin");
            Tokenizer tok = Tokenizers.load(tokPath);
            String fmt = spec.getData().getFormat();
            DatasetReader.Dataset ds = DatasetReader.read(Path.of(spec.getData().getPath()), fmt.isEmpty() ? null : DatasetFormat.parse(fmt),
                    new DatasetReader.Options(PromptTemplate.LLM_ADAPTERS, spec.getData().getField().isEmpty() ? "text" : spec.getData().getField()));
            int rows = org.sparselora.actors.job.JobSpecs.rowsPerUpdate(spec);   // batch_size × grad_accum_steps
            if (full && ds.format() == DatasetFormat.TEXT) {
                // pretraining text: documents joined with EOS into full seq_len rows, loss on every token
                data = new PackedTextSource(new TextPacker(tok, ds.examples(), new TextPacker.Options(rows, spec.getSeqLen(), spec.getSeed(), true)), ds, src);
            } else {
                List<TokenizedExample> examples = ExampleTokenizer.tokenizeAll(tok, ds.examples());
                Batcher batcher = new Batcher(examples, new Batcher.Options(rows, spec.getSeqLen(), spec.getSeed(), true, true, gpu), tok);
                data = new BatcherSource(batcher, ds, src);
            }
        }
        int totalSteps = org.sparselora.actors.job.JobSpecs.totalSteps(spec, data.updatesPerEpoch());
        OptimizerConfig opt = opt(spec, totalSteps);
        if (full) return openFull(spec, device, cfg, src, data, tokPath, opt);

        List<String> modules = new ArrayList<>();
        for (String t : spec.getLora().getTargetsList()) modules.add(t + "_proj");
        var l = spec.getLora();
        LoraConfig lora = new LoraConfig(l.getR(), (float) l.getAlpha(), (float) l.getDropout(), LoraConfig.targetsOf(modules), l.getRslora(), spec.getSeed());
        int threads = Math.max(1, Runtime.getRuntime().availableProcessors() / spec.getWorkers());

        // one channel selection per sparse step across the job's workers: they sum their channel scores here
        boolean remote = remoteScores != null;   // the job's other workers are in other JVMs
        java.util.Map<TrainingWorker, Integer> remoteIndex = java.util.Collections.synchronizedMap(new java.util.IdentityHashMap<>());
        InProcessScoreExchange scores = spec.getWorkers() > 1 && !remote ? new InProcessScoreExchange(spec.getWorkers(), SCORE_EXCHANGE_TIMEOUT) : null;
        // every worker of the job is in this JVM: gradients are summed on the devices, not through host arrays
        GradientExchange exchange = spec.getWorkers() > 1 && useExchange && !remote
                ? (gpu ? new org.sparselora.cuda.PeerGradientExchange(spec.getWorkers()) : new LocalGradientExchange(spec.getWorkers()))
                : null;

        WorkerFactory workers = new WorkerFactory() {
            @Override
            public TrainingWorker create(int worker, int n) {
                // a replacement worker (restart) releases the survivors still waiting in the abandoned step
                if (scores != null) scores.workerStarting(worker);
                // on the Stepper's pinned thread: the CUDA context is bound to the thread that creates it
                Backend be = gpu ? org.sparselora.cuda.GpuBackend.create(device.gpuOf(worker, n)) : new CpuBackend(threads);
                OwnedWorker t;
                try {
                    // a random model: the same seed on every worker, so the replicas hold the same base
                    boolean nf4 = spec.getQuantize().equals("nf4");   // QLoRA: the frozen projections stored as NF4
                    LlamaWeights weights = src != null ? (nf4 ? LlamaWeights.uploadNf4(be, src, false) : LlamaWeights.upload(be, src))
                            : nf4 ? LlamaWeights.randomNf4(be, cfg, spec.getSeed()) : LlamaWeights.random(be, cfg, spec.getSeed());
                    LlamaModel m = src != null ? new LlamaModel(be, weights) : new LlamaModel(be, weights, Math.max(spec.getSeqLen(), 1));
                    m.setGradientCheckpointing(spec.getGradientCheckpointing());
                    LoraAdapter adapter = new LoraAdapter(be, cfg, lora);
                    t = new OwnedWorker(new LoraTrainer(m, adapter, opt), adapter, weights, be);
                    if (exchange != null) exchange.register(worker, adapter.flatGrads());
                } catch (RuntimeException | Error e) {
                    be.close();   // a GPU backend holds device memory and a context reference until closed
                    throw e;
                }
                if (remote) remoteIndex.put(t, worker);
                return scores == null ? t : scores.member(worker, t);   // restoring a member rejoins the exchange
            }

            @Override
            public void attachPredictor(TrainingWorker w, PredictorFactors f) {
                LoraTrainer t = ((OwnedWorker) (w instanceof InProcessScoreExchange.Member m ? m.inner() : w)).trainer();
                Backend be = t.model().backend();
                SparsePlanner planner = new SparsePlanner(be, sparsity, new ChannelSelection(be, ((Factors) f).predictor(), resolved),
                        totalSteps, spec.getSeed());
                if (w instanceof InProcessScoreExchange.Member m) planner.withExchange(m.scores());
                Integer index = remoteIndex.get(w);
                if (index != null && spec.getWorkers() > 1) planner.withExchange(remoteScores.apply(index));
                t.setSparsePlanner(planner);
            }
        };

        PredictorBuilder predictor = null;
        if (!sparsity.denseMode() && resolved.anySparse() && src == null) {
            // timing job: random factors (StepBenchmark's), made at once; their values do not change the cost
            String key = spec.getModel() + "#timing#svd_" + sparsity.rank() + "#mlp" + java.util.Arrays.toString(resolved.mlpRatio())
                    + "#attn" + java.util.Arrays.toString(resolved.attnRatio());
            predictor = new PredictorBuilder() {
                @Override
                public String cacheKey() { return key; }

                @Override
                public PredictorFactors build(ProgressListener progress) {
                    progress.progress("svd", 1, "random predictor factors (timing model)");
                    return new Factors(key, SvdPredictor.randomForTiming(cfg, resolved, sparsity.rank(), 11));
                }
            };
        } else if (!sparsity.denseMode() && resolved.anySparse()) {
            String key = model.toAbsolutePath().normalize() + "#svd_" + sparsity.rank() + "#mlp" + java.util.Arrays.toString(resolved.mlpRatio())
                    + "#attn" + java.util.Arrays.toString(resolved.attnRatio());
            Path cache = predictorCache(model, sparsity.rank());
            predictor = new PredictorBuilder() {
                @Override
                public String cacheKey() { return key; }

                @Override
                public PredictorFactors build(ProgressListener progress) {
                    SvdPredictor p = SvdPredictor.forConfig(src, resolved, sparsity.rank(), cache, LowRankSvd.Method.AUTO,
                            new SvdPredictor.Progress() {
                                @Override
                                public void step(int done, int total, String what) {
                                    progress.progress("svd", total == 0 ? 1 : (double) done / total, what);
                                }

                                @Override
                                public void note(String message) { progress.progress("svd", -1, message); }
                            });
                    return new Factors(key, p);
                }
            };
        }

        AdapterExporter exporter = (state, dir) -> PeftAdapter.write(dir, adapterFiles(state, cfg, spec, modules));
        return new JobRuntime(workers, data, predictor, exporter, exchange);
    }

    /** The job's optimizer over {@code totalSteps} updates (steps, or epochs × the data's updates per epoch). */
    static OptimizerConfig opt(JobSpec spec, int totalSteps) {
        var o = spec.getOptimizer();
        return new OptimizerConfig((float) o.getLr(), (float) o.getBeta1(), (float) o.getBeta2(), (float) o.getEps(),
                (float) o.getWeightDecay(), (float) o.getGradClip(), OptimizerConfig.Schedule.parse(spec.getSchedule().getType()),
                spec.getSchedule().getWarmupSteps(), totalSteps);
    }

    /**
     * Full mode: one {@link FullTrainer} per worker over the model's weight gradients, initialised
     * from {@code src} (the file's fp32 values become the masters, so a BF16 compute copy's rounding
     * never enters them); with several workers their flat gradient buffers are registered with the
     * exchange. At the end the trained weights (the checkpoint's masters) and the tokenizer are
     * written to {@code <output_dir>/model/}, a HF model directory the other commands load.
     */
    private JobRuntime openFull(JobSpec spec, Devices.Device device, LlamaConfig cfg, WeightSource src, BatchSource data,
                                Path tokenizer, OptimizerConfig opt) {
        boolean gpu = device.gpu();
        int threads = Math.max(1, Runtime.getRuntime().availableProcessors() / spec.getWorkers());
        boolean decayAll = spec.getOptimizer().getDecayNormsAndEmbeddings();
        GradientExchange exchange = spec.getWorkers() > 1 && useExchange
                ? (gpu ? new org.sparselora.cuda.PeerGradientExchange(spec.getWorkers()) : new LocalGradientExchange(spec.getWorkers()))
                : null;
        WorkerFactory workers = new WorkerFactory() {
            @Override
            public TrainingWorker create(int worker, int n) {
                Backend be = gpu ? org.sparselora.cuda.GpuBackend.create(device.gpuOf(worker, n)) : new CpuBackend(threads);
                LlamaWeights weights = null;
                LlamaModel m = null;
                try {
                    weights = LlamaWeights.upload(be, src);
                    m = new LlamaModel(be, weights, Math.max(Math.min(cfg.maxPositions(), 16384), spec.getSeqLen()));
                    FullTrainer t = new FullTrainer(new LlamaFullModel(m), src, opt, decayAll);
                    OwnedWorker w = new OwnedWorker(t, m, weights, be);
                    if (exchange != null) {
                        if (t.grads().flat() == null) {
                            w.close();
                            throw new IllegalStateException("full mode with " + n + " workers: the model has more than 2^31 gradient values, more than one exchange buffer holds; use one worker");
                        }
                        exchange.register(worker, t.grads().flat());
                    }
                    return w;
                } catch (RuntimeException | Error e) {
                    if (m != null) m.close();
                    if (weights != null) weights.close();
                    be.close();
                    throw e;
                }
            }

            @Override
            public void attachPredictor(TrainingWorker w, PredictorFactors f) {
                throw new IllegalStateException("full mode has no sparsity predictor");
            }
        };
        AdapterExporter exporter = AdapterExporter.into("model", (state, dir) ->
                HfCheckpointWriter.writeTrained(new StateWeights(cfg, state), dir, DType.F32, HfCheckpointWriter.DEFAULT_MAX_SHARD_BYTES, tokenizer));
        return new JobRuntime(workers, data, null, exporter, exchange);
    }

    /**
     * Fails the job at open, with the reason, when a GPU it names is missing: otherwise each Stepper
     * would fail on creating its backend and the supervisor would restart it until it gives up. Never
     * falls back to the CPU.
     */
    public static void checkGpus(Devices.Device device, int workers) {
        org.sparselora.cuda.Gpu.Availability a;
        try {
            a = org.sparselora.cuda.Gpu.check();
        } catch (LinkageError e) {
            throw new JobSpecException("device", device.text() + ": no usable CUDA GPU (" + e.getMessage() == null ? e.toString() : e.getMessage().strip().lines().findFirst().orElse("") + ")");
        }
        // JCuda's load failure carries both native stack traces in its message: the first line says it
        if (!a.available()) throw new JobSpecException("device", device.text() + ": no usable CUDA GPU ("
                + (a.reason() == null ? "unknown reason" : a.reason().strip().lines().findFirst().orElse("")) + ")");
        for (int g : device.gpusUsed(workers))
            if (g >= a.deviceCount())
                throw new JobSpecException("device", device.text() + ": GPU " + g + " does not exist (" + a.deviceCount() + " visible)"
                        + (device.explicit() ? "" : "; worker w runs on GPU <first> + w, so " + workers
                        + " workers need that many GPUs: list one ordinal per worker, e.g. cuda:0,0, to share one"));
    }

    /**
     * A worker's trainer together with what it alone owns: its LoRA adapter (full mode: its model's
     * buffers), its copy of the base weights and its backend. Closing it (the Stepper does, on its own
     * thread, when it stops or is replaced) releases them all, so a restarted worker or a finished job
     * leaves no device memory or CUDA context reference behind.
     */
    static final class OwnedWorker implements TrainingWorker {
        private final TrainingWorker trainer;
        private final AutoCloseable owned;
        private final LlamaWeights weights;
        private final Backend backend;
        private boolean closed;

        OwnedWorker(TrainingWorker trainer, AutoCloseable owned, LlamaWeights weights, Backend backend) {
            this.trainer = trainer;
            this.owned = owned;
            this.weights = weights;
            this.backend = backend;
        }

        /** The LoRA trainer (LoRA mode only: sparsity planners attach to it). */
        LoraTrainer trainer() { return (LoraTrainer) trainer; }

        /** The trainer, whatever the mode. */
        TrainingWorker worker() { return trainer; }

        Backend backend() { return backend; }

        boolean isClosed() { return closed; }

        @Override
        public org.sparselora.engine.train.StepResult computeGradients(Batch batch, int step, boolean sparse) {
            return trainer.computeGradients(batch, step, sparse);
        }

        @Override public float[][] gradientsToHost() { return trainer.gradientsToHost(); }

        @Override public void gradientsFromHost(float[][] grads) { trainer.gradientsFromHost(grads); }

        @Override public float applyUpdate(int step, long totalOutputTokens) { return trainer.applyUpdate(step, totalOutputTokens); }

        @Override public TrainerState state() { return trainer.state(); }

        @Override public void restore(TrainerState state) { trainer.restore(state); }

        @Override
        public void close() {
            if (closed) return;
            closed = true;
            // each step runs even if an earlier one throws; the backend last (it frees what the others hold)
            try (backend; weights; AutoCloseable o = owned; trainer) {
                // closed in reverse order: trainer (optimizer moments, gradients), adapter or model, weights, backend
            } catch (RuntimeException | Error e) {
                throw e;
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        }
    }

    /** $SPARSELORA_CACHE or ~/.cache/sparselora: predictor factors by model path and rank. */
    public static Path predictorCache(Path model, int rank) {
        String base = System.getenv("SPARSELORA_CACHE");
        Path dir = base != null ? Path.of(base) : Path.of(System.getProperty("user.home"), ".cache", "sparselora");
        String name = model.toAbsolutePath().normalize().toString().replaceAll("[^A-Za-z0-9._-]", "_");
        return dir.resolve("predictors").resolve(name + "-r" + rank + ".safetensors");
    }

    static AdapterFiles adapterFiles(TrainerState state, LlamaConfig cfg, JobSpec spec, List<String> modules) {
        LinkedHashMap<String, float[]> tensors = new LinkedHashMap<>();
        Map<String, int[]> shapes = new HashMap<>();
        int r = spec.getLora().getR();
        for (Map.Entry<String, float[]> e : state.tensors().entrySet()) {
            PeftAdapter.LoraKey k = PeftAdapter.parseKey(e.getKey());
            if (k == null) continue; // the AdamW moments
            int[] io = PeftAdapter.inOut(cfg, k.module());
            tensors.put(e.getKey(), e.getValue());
            shapes.put(e.getKey(), k.isA() ? new int[]{r, io[0]} : new int[]{io[1], r});
        }
        var l = spec.getLora();
        return new AdapterFiles(new LoraSpec(r, (float) l.getAlpha(), (float) l.getDropout(), modules, l.getRslora(),
                RandomModel.isRandom(spec.getModel()) ? spec.getModel() : Path.of(spec.getModel()).toAbsolutePath().toString()), tensors, shapes);
    }

    /**
     * Synthetic timing data: global batch s (0-based) is {@link RandomModel#batch} of batch · blocks
     * rows drawn from (job seed, s), blocks = workers × grad_accum_steps, so each block (one
     * worker's micro-batch) is batch rows and a
     * resumed or restarted job sees the same batches. Closing it releases the base weights, if any.
     */
    static final class SyntheticSource implements BatchSource {
        private final LlamaConfig cfg;
        private final org.sparselora.proto.control.SyntheticData shape;
        private final int workers;
        private final long seed;
        private final WeightSource weights;
        private long batches;

        SyntheticSource(LlamaConfig cfg, org.sparselora.proto.control.SyntheticData shape, int workers, long seed, WeightSource weights) {
            this.cfg = cfg;
            this.shape = shape;
            this.workers = workers;
            this.seed = seed;
            this.weights = weights;
        }

        @Override
        public DataSummary open() { return new DataSummary(0, 0, List.of()); }

        @Override
        public Batch next() {
            long s = batches++;
            return RandomModel.batch(cfg, shape.getBatch() * workers, shape.getSeq(), shape.getOutputTokens(),
                    seed * 0x9E3779B97F4A7C15L + s);
        }

        @Override
        public DataPosition position() { return new DataPosition(0, batches, 0, batches); }

        @Override
        public void seek(DataPosition p) { batches = p.batches(); }

        @Override
        public void close() { if (weights != null) weights.close(); }
    }

    /** The engine's Batcher as the DataLoader's source; closing it releases the base weights. */
    static final class BatcherSource implements BatchSource {
        private final Batcher batcher;
        private final DatasetReader.Dataset ds;
        private final WeightSource weights;
        private long batches;

        BatcherSource(Batcher batcher, DatasetReader.Dataset ds, WeightSource weights) {
            this.batcher = batcher;
            this.ds = ds;
            this.weights = weights;
        }

        @Override
        public DataSummary open() {
            List<String> lines = new ArrayList<>();
            for (DatasetReader.Malformed m : ds.malformed()) lines.add(ds.file().getFileName() + " line " + m.line() + ": " + m.reason());
            return new DataSummary(ds.examples().size(), ds.malformed().size(), lines);
        }

        @Override
        public Batch next() {
            batches++;
            return batcher.next();
        }

        @Override
        public long updatesPerEpoch() { return batcher.batchesPerEpoch(); }

        @Override
        public DataPosition position() {
            Batcher.DataPosition p = batcher.position();
            return new DataPosition(p.epoch(), p.batch(), 0, batches); // the shuffle is a function of (seed, epoch)
        }

        @Override
        public void seek(DataPosition p) {
            batcher.seek(new Batcher.DataPosition((int) p.epoch(), (int) p.offset()));
            batches = p.batches();
        }

        @Override
        public void close() { weights.close(); }
    }
}
