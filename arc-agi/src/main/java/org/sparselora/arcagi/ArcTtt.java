package org.sparselora.arcagi;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.sparselora.actors.job.JobSpecs;
import org.sparselora.actors.pipeline.CheckpointStore;
import org.sparselora.actors.server.JobManager;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.cpu.CpuBackend;
import org.sparselora.engine.data.PromptTemplate;
import org.sparselora.engine.generate.Generator;
import org.sparselora.engine.io.HfCheckpoint;
import org.sparselora.engine.io.Llama2cCheckpoint;
import org.sparselora.engine.io.PeftAdapter;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.tokenizer.Tokenizer;
import org.sparselora.engine.tokenizer.Tokenizers;
import org.sparselora.proto.control.DataSpec;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;
import org.sparselora.proto.control.JobStatus;
import org.sparselora.proto.control.LoraSpec;
import org.sparselora.proto.control.OptimizerSpec;

/**
 * ARC-AGI test-time training, one task at a time, as a client of the training pipeline: build the
 * task's leave-one-out data ({@link TttDataset}), train a fresh LoRA adapter on it through a
 * {@link JobManager} job (the same actors, checkpoints and SparseLoRA schedule as any job; the
 * ARC-AGI sparsity config starts sparse at 10% of the steps), then load the adapter onto the base
 * model and answer each test input twice — greedy, then sampled — scoring pass@2 where the task
 * file has the answers.
 */
public final class ArcTtt {

    /**
     * @param sparsityPath a SparseLoRA config (docs/METHOD.md#config) or null for dense LoRA
     */
    public record Settings(String model, String tokenizer, String sparsityPath, int steps, int batchSize, int seqLen, int loraR,
                           double lr, long seed, int maxNewTokens, boolean augment, int workers) {}

    /** @param solved per test pair: one of the two attempts equals the answer (null when the file has none) */
    public record Result(String task, List<List<String>> attempts, List<Boolean> solved, double finalLoss, long millis) {
        public boolean allSolved() { return !solved.isEmpty() && solved.stream().allMatch(b -> b != null && b); }
    }

    private final JobManager jobs;
    private final Settings s;

    public ArcTtt(JobManager jobs, Settings settings) {
        this.jobs = jobs;
        this.s = settings;
    }

    JobSpec spec(ArcTask task, Path data, Path out, int records) {
        JobSpec.Builder b = JobSpec.newBuilder().setName("arc-" + task.id()).setModel(s.model()).setTokenizer(s.tokenizer() == null ? "" : s.tokenizer())
                .setData(DataSpec.newBuilder().setPath(data.toString()).setFormat("alpaca"))
                .setLora(LoraSpec.newBuilder().setR(s.loraR()).setAlpha(2.0 * s.loraR()).addAllTargets(List.of("q", "k", "v", "o", "gate", "up", "down")))
                .setOptimizer(OptimizerSpec.newBuilder().setLr(s.lr()))
                .setSteps(s.steps()).setBatchSize(Math.max(s.workers(), Math.min(s.batchSize(), records) / s.workers() * s.workers()))
                .setSeqLen(s.seqLen()).setWorkers(s.workers()).setOutputDir(out.toString()).setCheckpointEvery(0).setSeed(s.seed());
        if (s.sparsityPath() != null) b.setSparsityPath(s.sparsityPath());
        return JobSpecs.prepare(b.build());
    }

    public Result solve(ArcTask task, Path workDir) throws Exception {
        long t0 = System.nanoTime();
        Path dir = workDir.resolve(task.id());
        Path data = dir.resolve("ttt.json"), out = dir.resolve("run");
        List<TttDataset.Record> records = TttDataset.records(task, s.augment());
        if (records.isEmpty()) throw new IllegalArgumentException(task.id() + ": needs at least two demonstration pairs for test-time training");
        TttDataset.write(records, data);
        if (Files.exists(out)) throw new IllegalArgumentException(out + " exists: choose a fresh --out directory");
        JobSpec spec = spec(task, data, out, records.size());
        String id = jobs.submit(spec);
        JobStatus end = jobs.completion(id).get(6, TimeUnit.HOURS);
        if (end.getState() != JobState.FINISHED) throw new IllegalStateException(task.id() + ": training " + end.getState().name().toLowerCase() + ": " + end.getReason());

        Map<String, float[]> state = CheckpointStore.toTrainerState(new CheckpointStore(out).read()).tensors();
        Map<String, float[]> params = new LinkedHashMap<>();
        for (var e : state.entrySet()) if (PeftAdapter.parseKey(e.getKey()) != null) params.put(e.getKey(), e.getValue());
        Path modelPath = Path.of(s.model());
        List<List<String>> attempts = new ArrayList<>();
        List<Boolean> solved = new ArrayList<>();
        try (WeightSource src = Files.isDirectory(modelPath) ? HfCheckpoint.open(modelPath) : Llama2cCheckpoint.open(modelPath)) {
            Tokenizer tok = Tokenizers.load(s.tokenizer() != null ? Path.of(s.tokenizer()) : Files.isDirectory(modelPath) ? modelPath : modelPath.resolveSibling("tokenizer.bin"));
            Backend be = new CpuBackend();
            LlamaModel model = new LlamaModel(be, LlamaWeights.upload(be, src));
            List<String> modules = new ArrayList<>();
            for (String t : spec.getLora().getTargetsList()) modules.add(t + "_proj");
            LoraAdapter lora = new LoraAdapter(be, src.config(), new LoraConfig(spec.getLora().getR(), (float) spec.getLora().getAlpha(), 0f,
                    LoraConfig.targetsOf(modules), spec.getLora().getRslora(), spec.getSeed()));
            lora.fromHost(params);
            Generator gen = new Generator(model, lora);
            for (ArcTask.Pair test : task.test()) {
                TttDataset.Record p = TttDataset.prompt(task, test.input());
                int[] ids = tok.encode(PromptTemplate.LLM_ADAPTERS.prompt(p.instruction(), p.input()), true);
                int room = Math.min(s.maxNewTokens(), Math.max(0, model.config().maxPositions() - ids.length));
                if (room == 0) throw new IllegalArgumentException(task.id() + ": the prompt (" + ids.length + " tokens) fills the model's "
                        + model.config().maxPositions() + " positions");
                List<String> tries = new ArrayList<>();
                boolean hit = false;
                for (Generator.Options o : List.of(Generator.Options.greedy(room, tok.eosId()),
                        new Generator.Options(room, 0.7f, 0.95f, s.seed(), tok.eosId()))) {
                    String text = tok.decode(gen.generate(ids, o));
                    int[][] grid = Grids.parse(text);
                    tries.add(grid == null ? text : Grids.render(grid));
                    hit |= test.output() != null && Grids.same(grid, test.output());
                }
                attempts.add(tries);
                solved.add(test.output() == null ? null : hit);
            }
        }
        return new Result(task.id(), attempts, solved, end.getLastLoss(), (System.nanoTime() - t0) / 1_000_000);
    }
}
