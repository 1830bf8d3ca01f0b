package org.sparselora.actors.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.job.JobSpecs;
import org.sparselora.actors.pipeline.CheckpointStore;
import org.sparselora.actors.pipeline.EngineProvider;
import org.sparselora.actors.pipeline.JobListener;
import org.sparselora.actors.pipeline.JobRuntime;
import org.sparselora.actors.pipeline.PredictorFactors;
import org.sparselora.actors.pipeline.WorkerFactory;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.StepResult;
import org.sparselora.engine.train.TrainerState;
import org.sparselora.engine.train.TrainingWorker;
import org.sparselora.actors.pipeline.JobSupervisor;
import org.sparselora.actors.pipeline.MetricsLog;
import org.sparselora.actors.pipeline.PredictorCache;
import org.sparselora.engine.io.AdapterFiles;
import org.sparselora.engine.io.PeftAdapter;
import org.sparselora.proto.control.DataSpec;
import org.sparselora.proto.control.JobEvent;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;
import org.sparselora.proto.control.LoraSpec;
import org.sparselora.proto.control.OptimizerSpec;
import org.sparselora.proto.control.SparsityConfig;

/**
 * The real engine through the pipeline, on the pretrained stories260K model and Tiny Shakespeare
 * from ../shared/data: a SparseLoRA job (predictor built, dense warm-up then sparse, loss goes
 * down, PEFT adapter written), and data parallelism on the real LoraTrainer (2 workers with half
 * batches = 1 worker, dense steps).
 */
@Tag("shared-data")
class LlamaEngineProviderTest {

    static Path shared;
    static ActorTestKit kit;

    @TempDir
    Path tmp;

    @BeforeAll
    static void start() {
        String prop = System.getProperty("sparselora.shared", "../shared");
        shared = Path.of(prop).toAbsolutePath().normalize();
        Path model = shared.resolve("data/models/stories260K/stories260K.bin");
        if (!Files.isRegularFile(model))
            throw new IllegalStateException("shared data not found: " + model + " is missing; pass -Dsparselora.shared=<dir holding data/> (got " + shared + ")");
        kit = ActorTestKit.create("llama", org.sparselora.actors.pipeline.JobsAccess.serializeAll());
    }

    @AfterAll
    static void stop() {
        if (kit != null) kit.shutdownTestKit();
    }

    JobSpec spec(String name, int workers, int steps, SparsityConfig sparsity) {
        JobSpec.Builder b = JobSpec.newBuilder().setName(name)
                .setModel(shared.resolve("data/models/stories260K/stories260K.bin").toString())
                .setTokenizer(shared.resolve("data/tokenizers/llama2c-tok512/tok512.bin").toString())
                .setData(DataSpec.newBuilder().setPath(shared.resolve("data/pretrain/tinyshakespeare.jsonl").toString()).setFormat("text"))
                .setLora(LoraSpec.newBuilder().setR(8).setAlpha(16).addAllTargets(List.of("q", "k", "v", "o", "gate", "up", "down")))
                .setOptimizer(OptimizerSpec.newBuilder().setLr(2e-3))
                .setSteps(steps).setBatchSize(4).setSeqLen(48).setWorkers(workers).setCheckpointEvery(5).setSeed(3)
                .setOutputDir(tmp.resolve(name).toString());
        if (sparsity != null) b.setSparsity(sparsity);
        return JobSpecs.prepare(b.build());
    }

    JobEvent run(JobSpec s) throws Exception {
        EngineProvider p = new LlamaEngineProvider();
        assertTrue(p.accepts(s));
        return run(s, p.open(s), new java.util.concurrent.CopyOnWriteArrayList<>());
    }

    JobEvent run(JobSpec s, JobRuntime runtime, List<JobEvent> events) throws Exception {
        var done = new java.util.concurrent.CompletableFuture<JobEvent>();
        JobListener l = e -> {
            events.add(e);
            if (e.hasState() && List.of(JobState.FINISHED, JobState.FAILED, JobState.CANCELLED).contains(e.getState().getState())) done.complete(e);
        };
        kit.spawn(JobSupervisor.create(s.getName(), s, runtime, l, JobSupervisor.Settings.defaults().withRoundTimeout(java.time.Duration.ofMinutes(5))));
        return done.get(240, java.util.concurrent.TimeUnit.SECONDS);
    }

    @Test
    void aSparseLoraJobOnStories260KLearnsAndWritesAPeftAdapter() throws Exception {
        JobSpec s = spec("sparse", 2, 10, SparsityConfig.newBuilder().setStartStep(0.3)
                .putSparsity("layers.2.mlp", 0.5).putSparsity("layers.3.mlp", 0.5).putSparsity("layers.2.self_attn", 0.25).build());
        JobEvent end = run(s);
        assertEquals(JobState.FINISHED, end.getState().getState(), end.getState().getReason());
        ObjectMapper m = new ObjectMapper();
        List<com.fasterxml.jackson.databind.JsonNode> rows = Files.readAllLines(Path.of(s.getOutputDir(), MetricsLog.FILE)).stream().map(l -> {
            try {
                return m.readTree(l);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }).toList();
        assertEquals(10, rows.size());
        for (int i = 0; i < 10; i++) assertEquals(i >= 3, rows.get(i).get("sparse").asBoolean(), rows.get(i).toString());
        assertTrue(rows.get(5).get("predictor_flops").asLong() > 0);
        double first = (rows.get(0).get("loss").asDouble() + rows.get(1).get("loss").asDouble()) / 2;
        double last = (rows.get(8).get("loss").asDouble() + rows.get(9).get("loss").asDouble()) / 2;
        assertTrue(last < first - 0.5, "loss " + first + " -> " + last);
        AdapterFiles a = PeftAdapter.read(Path.of(s.getOutputDir(), "adapter"));
        assertEquals(8, a.spec().r());
        Map<String, float[]> state = CheckpointStore.toTrainerState(new CheckpointStore(Path.of(s.getOutputDir())).read()).tensors();
        for (var e : a.tensors().entrySet()) org.junit.jupiter.api.Assertions.assertArrayEquals(state.get(e.getKey()), e.getValue(), e.getKey());
    }

    @Test
    void twoWorkersWithHalfBatchesMatchOneWorkerOnTheRealTrainer() throws Exception {
        JobSpec one = spec("one", 1, 10, null), two = spec("two", 2, 10, null);
        assertEquals(JobState.FINISHED, run(one).getState().getState());
        assertEquals(JobState.FINISHED, run(two).getState().getState());
        assertSameAdapter(one, two, 1e-4);
    }

    /** Sparse from step 2 on; every token sparse, so every selection shapes the loss of its step. */
    static SparsityConfig everyTokenSparse() {
        return SparsityConfig.newBuilder().setStartStep(0.2).setSkipOutputTokens(false)
                .putSparsity("layers.1.mlp", 0.5).putSparsity("layers.2.mlp", 0.75).putSparsity("layers.4.mlp", 0.5)
                .putSparsity("layers.1.self_attn", 0.25).putSparsity("layers.3.self_attn", 0.5).build();
    }

    @Test
    void twoWorkersMatchOneWorkerOnSparseStepsWithOneGlobalSelection() throws Exception {
        JobSpec one = spec("sparse-one", 1, 10, everyTokenSparse()), two = spec("sparse-two", 2, 10, everyTokenSparse());
        assertEquals(JobState.FINISHED, run(one).getState().getState());
        assertEquals(JobState.FINISHED, run(two).getState().getState());
        List<String> rows = Files.readAllLines(Path.of(two.getOutputDir(), MetricsLog.FILE));
        assertEquals(10, rows.size());
        for (int i = 0; i < 10; i++) assertEquals(i >= 2, new ObjectMapper().readTree(rows.get(i)).get("sparse").asBoolean(), rows.get(i));
        assertSameAdapter(one, two, 1e-4);
    }

    @Test
    void aWorkerFailingInASparseStepDoesNotBlockTheOtherAndTheJobEndsAsIfUninterrupted() throws Exception {
        JobSpec plain = spec("sparse-plain", 2, 10, everyTokenSparse()), faulty = spec("sparse-faulty", 2, 10, everyTokenSparse());
        assertEquals(JobState.FINISHED, run(plain).getState().getState());
        // worker 1 throws once at the start of step 7 (sparse): worker 0 is by then waiting for its channel scores
        JobRuntime rt = new LlamaEngineProvider().open(faulty);
        java.util.concurrent.atomic.AtomicBoolean thrown = new java.util.concurrent.atomic.AtomicBoolean();
        WorkerFactory inject = new WorkerFactory() {
            @Override
            public TrainingWorker create(int worker, int workers) throws Exception {
                TrainingWorker w = rt.workers().create(worker, workers);
                return worker != 1 ? w : new FailingOnce(w, 6, thrown);
            }

            @Override
            public void attachPredictor(TrainingWorker w, PredictorFactors f) {
                rt.workers().attachPredictor(w instanceof FailingOnce fo ? fo.inner : w, f);
            }
        };
        List<JobEvent> events = new java.util.concurrent.CopyOnWriteArrayList<>();
        long t0 = System.nanoTime();
        JobEvent end = run(faulty, new JobRuntime(inject, rt.data(), rt.predictor(), rt.exporter()), events);
        assertEquals(JobState.FINISHED, end.getState().getState(), end.getState().getReason());
        assertTrue(thrown.get(), "the fault was injected");
        assertEquals(1, events.stream().filter(JobEvent::hasRestarted).count());
        assertTrue(System.nanoTime() - t0 < 120_000_000_000L, "finished long before the score exchange's time-out");
        assertSameAdapter(plain, faulty, 0);
    }

    /** A worker that throws once, at the start of step {@code at}. */
    static final class FailingOnce implements TrainingWorker {
        final TrainingWorker inner;
        final int at;
        final java.util.concurrent.atomic.AtomicBoolean thrown;

        FailingOnce(TrainingWorker inner, int at, java.util.concurrent.atomic.AtomicBoolean thrown) {
            this.inner = inner;
            this.at = at;
            this.thrown = thrown;
        }

        @Override
        public StepResult computeGradients(Batch batch, int step, boolean sparse) {
            if (step == at && thrown.compareAndSet(false, true)) throw new IllegalStateException("injected fault at step " + (step + 1));
            return inner.computeGradients(batch, step, sparse);
        }

        @Override public float[][] gradientsToHost() { return inner.gradientsToHost(); }
        @Override public void gradientsFromHost(float[][] g) { inner.gradientsFromHost(g); }
        @Override public float applyUpdate(int step, long tokens) { return inner.applyUpdate(step, tokens); }
        @Override public TrainerState state() { return inner.state(); }
        @Override public void restore(TrainerState s) { inner.restore(s); }
        @Override public void close() { inner.close(); }
    }

    /** The LoRA weights (not the AdamW moments) of two finished jobs agree to {@code tol}·max(1, max |w|). */
    static void assertSameAdapter(JobSpec one, JobSpec two, double tol) throws Exception {
        Map<String, float[]> a = CheckpointStore.toTrainerState(new CheckpointStore(Path.of(one.getOutputDir())).read()).tensors();
        Map<String, float[]> b = CheckpointStore.toTrainerState(new CheckpointStore(Path.of(two.getOutputDir())).read()).tensors();
        double maxDiff = 0, maxAbs = 0;
        for (String k : a.keySet()) {
            if (k.endsWith(".exp_avg") || k.endsWith(".exp_avg_sq")) continue;
            float[] x = a.get(k), y = b.get(k);
            for (int i = 0; i < x.length; i++) {
                maxDiff = Math.max(maxDiff, Math.abs(x[i] - y[i]));
                maxAbs = Math.max(maxAbs, Math.abs(x[i]));
            }
        }
        System.out.printf("%s vs %s: max |dw| %.3g (max |w| %.3g)%n", one.getName(), two.getName(), maxDiff, maxAbs);
        assertTrue(maxAbs > 1e-3, "the adapter trained");
        assertTrue(maxDiff <= tol * Math.max(1, maxAbs), "max |dw| " + maxDiff + " (max |w| " + maxAbs + ")");
    }
}
