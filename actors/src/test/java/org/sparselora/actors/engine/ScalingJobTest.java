package org.sparselora.actors.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.job.JobFiles;
import org.sparselora.actors.job.JobSpecException;
import org.sparselora.actors.job.JobSpecs;
import org.sparselora.actors.pipeline.CheckpointStore;
import org.sparselora.actors.pipeline.JobListener;
import org.sparselora.actors.pipeline.JobRuntime;
import org.sparselora.actors.pipeline.JobSupervisor;
import org.sparselora.actors.pipeline.MetricsLog;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.LocalGradientExchange;
import org.sparselora.engine.train.TrainerState;
import org.sparselora.proto.control.JobEvent;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;

/**
 * Issue 6's job on the CPU at a tiny shape: a {@code random:<config.json>} model with synthetic
 * timing data, sparse steps (random predictor factors), {@code workers: 2} and {@code 3}; the
 * in-process gradient exchange gives the same bits as the host {@code float[][]} path, the replicas
 * end identical (replicas.json), metrics carry agg_ms/agg_overlap; and the job file's validation.
 */
class ScalingJobTest {

    static ActorTestKit kit;

    @TempDir
    Path tmp;

    @BeforeAll
    static void start() {
        kit = ActorTestKit.create("scaling", org.sparselora.actors.pipeline.JobsAccess.serializeAll());
    }

    @AfterAll
    static void stop() {
        if (kit != null) kit.shutdownTestKit();
    }

    Path tinyConfig() throws Exception {
        Path c = tmp.resolve("tiny/config.json");
        Files.createDirectories(c.getParent());
        try (var in = getClass().getResourceAsStream("/scaling/tiny-config.json")) {
            Files.copy(in, c);
        }
        return c;
    }

    Path sparsity() throws Exception {
        Path p = tmp.resolve("tiny-sparsity.yaml");
        Files.writeString(p, """
                start_step: 0.3
                mode: svd_4
                sparsity:
                  layers.1.mlp: 0.75
                  layers.2.mlp: 0.5
                  layers.1.self_attn: 0.5
                """);
        return p;
    }

    JobSpec job(String name, int workers, String extra) throws Exception {
        Path f = tmp.resolve(name + ".yaml");
        Files.writeString(f, """
                name: %s
                model: random:tiny/config.json
                data: {synthetic: {batch: 2, seq: 24, output_tokens: 6}}
                lora: {r: 4, alpha: 8, targets: [q, k, v, o]}
                sparsity: tiny-sparsity.yaml
                optimizer: {lr: 0.01}
                steps: 6
                workers: %d
                device: cpu
                checkpoint_every: 3
                seed: 5
                output_dir: out-%s
                %s
                """.formatted(name, workers, name, extra));
        return JobSpecs.prepare(JobFiles.load(f));
    }

    JobEvent run(JobSpec s, JobRuntime rt) throws Exception {
        var done = new java.util.concurrent.CompletableFuture<JobEvent>();
        JobListener l = e -> {
            if (e.hasState() && List.of(JobState.FINISHED, JobState.FAILED, JobState.CANCELLED).contains(e.getState().getState())) done.complete(e);
        };
        kit.spawn(JobSupervisor.create(s.getName(), s, rt, l, JobSupervisor.Settings.defaults().withRoundTimeout(java.time.Duration.ofMinutes(2))));
        return done.get(120, java.util.concurrent.TimeUnit.SECONDS);
    }

    JobRuntime open(JobSpec s, boolean exchange) {
        LlamaEngineProvider.useExchange = exchange;
        try {
            return new LlamaEngineProvider().open(s);
        } finally {
            LlamaEngineProvider.useExchange = true;
        }
    }

    static TrainerState finalState(JobSpec s) throws Exception {
        return CheckpointStore.toTrainerState(new CheckpointStore(Path.of(s.getOutputDir())).read());
    }

    static List<JsonNode> metrics(JobSpec s) throws Exception {
        ObjectMapper m = new ObjectMapper();
        List<JsonNode> rows = new ArrayList<>();
        for (String l : Files.readAllLines(Path.of(s.getOutputDir(), MetricsLog.FILE))) rows.add(m.readTree(l));
        return rows;
    }

    /** `train --random-init` swaps the job's model for random weights of the named shape (timing runs); a bad name is one clear error. */
    @Test
    void trainRandomInitReplacesTheJobsModel() throws Exception {
        Path cfg = tinyConfig();
        Path f = tmp.resolve("ri.yaml");
        Files.writeString(f, """
                name: ri
                model: random:llama3-8b
                data: {synthetic: {batch: 2, seq: 24, output_tokens: 6}}
                lora: {r: 4, alpha: 8, targets: [q, v]}
                steps: 2
                device: cpu
                output_dir: out-ri
                """);
        org.sparselora.actors.cli.CliRunner.Result r = org.sparselora.actors.cli.CliRunner.run("train", "--config", f.toString(), "--random-init", cfg.toString());
        assertEquals(0, r.code(), r.err());
        assertEquals(2, Files.readAllLines(tmp.resolve("out-ri").resolve(MetricsLog.FILE)).size(), "two steps on the tiny shape (not the 8B of the job file)");
        org.sparselora.actors.cli.CliRunner.Result bad = org.sparselora.actors.cli.CliRunner.run("train", "--config", f.toString(), "--random-init", "llama9-70b");
        assertTrue(bad.code() != 0, "a bad preset fails");
        assertTrue(bad.err().contains("--random-init llama9-70b"), bad.err());
    }

    @Test
    void deviceExchangeEqualsTheHostPathBitForBitWithTwoAndThreeCpuWorkers() throws Exception {
        tinyConfig();
        sparsity();
        for (int n : new int[]{2, 3}) {
            JobSpec dev = job("dev" + n, n, ""), host = job("host" + n, n, "");
            JobRuntime devRt = open(dev, true), hostRt = open(host, false);
            assertTrue(devRt.exchange() instanceof LocalGradientExchange, "CPU workers in one JVM use the in-process exchange");
            assertNull(hostRt.exchange());
            JobEvent a = run(dev, devRt), b = run(host, hostRt);
            assertEquals(JobState.FINISHED, a.getState().getState(), a.getState().getReason());
            assertEquals(JobState.FINISHED, b.getState().getState(), b.getState().getReason());
            TrainerState x = finalState(dev), y = finalState(host);
            assertEquals(6, x.step());
            assertEquals(x.tensors().keySet(), y.tensors().keySet());
            for (Map.Entry<String, float[]> e : x.tensors().entrySet()) {
                float[] p = e.getValue(), q = y.tensors().get(e.getKey());
                for (int i = 0; i < p.length; i++)
                    assertEquals(Float.floatToRawIntBits(q[i]), Float.floatToRawIntBits(p[i]), n + " workers: " + e.getKey() + "[" + i + "]");
            }
            // the run trained: some B moved off its zero init
            assertTrue(x.tensors().entrySet().stream().filter(e -> e.getKey().contains("lora_B") && !e.getKey().contains("exp_avg"))
                    .anyMatch(e -> { for (float v : e.getValue()) if (v != 0) return true; return false; }));
            List<JsonNode> rows = metrics(dev);
            assertEquals(6, rows.size());
            for (int i = 0; i < rows.size(); i++) {
                JsonNode r = rows.get(i);
                assertEquals(i >= 2, r.get("sparse").asBoolean(), r.toString());   // start_step 0.3 of 6 → sparse from step 3
                assertTrue(r.get("agg_ms").asDouble() >= 0 && r.get("agg_ms").asDouble() < 60_000, r.toString());
                assertEquals(0.0, r.get("agg_overlap").asDouble(), r.toString());  // the exchange starts after the last backward
                assertEquals(2 * n * 24, r.get("tokens").asInt(), r.toString());
            }
            for (JsonNode r : metrics(host)) {
                double o = r.get("agg_overlap").asDouble();
                assertTrue(o >= 0 && o <= 1, r.toString());
            }
            for (JobSpec s : List.of(dev, host)) {
                JsonNode rep = new ObjectMapper().readTree(Path.of(s.getOutputDir(), JobSupervisor.REPLICAS_FILE).toFile());
                assertEquals(n, rep.get("workers").asInt());
                assertEquals(6, rep.get("step").asInt());
                assertEquals(0.0, rep.get("max_abs_diff").asDouble(), rep.toString());
                assertEquals(0.0, rep.get("max_abs_diff_moments").asDouble(), rep.toString());
            }
            assertTrue(Files.isRegularFile(Path.of(dev.getOutputDir(), "adapter", "adapter_model.safetensors")));
        }
    }

    @Test
    void aReplacedWorkerRejoinsTheExchangeAndTheJobEndsAsIfUninterrupted() throws Exception {
        tinyConfig();
        sparsity();
        JobSpec plain = job("plain", 2, ""), faulty = job("faulty", 2, "");
        assertEquals(JobState.FINISHED, run(plain, open(plain, true)).getState().getState());
        JobRuntime rt = open(faulty, true);
        var thrown = new java.util.concurrent.atomic.AtomicBoolean();
        var inject = new org.sparselora.actors.pipeline.WorkerFactory() {
            @Override
            public org.sparselora.engine.train.TrainingWorker create(int worker, int workers) throws Exception {
                var w = rt.workers().create(worker, workers);   // registers the (new) worker's buffer with the exchange
                return worker != 1 ? w : new LlamaEngineProviderTest.FailingOnce(w, 4, thrown);
            }

            @Override
            public void attachPredictor(org.sparselora.engine.train.TrainingWorker w, org.sparselora.actors.pipeline.PredictorFactors f) {
                rt.workers().attachPredictor(w instanceof LlamaEngineProviderTest.FailingOnce fo ? fo.inner : w, f);
            }
        };
        JobEvent end = run(faulty, new JobRuntime(inject, rt.data(), rt.predictor(), rt.exporter(), rt.exchange()));
        assertEquals(JobState.FINISHED, end.getState().getState(), end.getState().getReason());
        assertTrue(thrown.get(), "the fault was injected");
        TrainerState x = finalState(plain), y = finalState(faulty);
        for (Map.Entry<String, float[]> e : x.tensors().entrySet())
            assertEquals(java.util.Arrays.toString(e.getValue()), java.util.Arrays.toString(y.tensors().get(e.getKey())), e.getKey());
        assertEquals(6, metrics(faulty).size());
    }

    @Test
    void theSyntheticBatchIsStepBenchmarksTimingBatch() {
        LlamaConfig c = new LlamaConfig("LlamaForCausalLM", 16, 24, 2, 4, 2, 4, 50, 64, 1e-5f, 10000f, null, false, false, 1, 2);
        Batch b = RandomModel.batch(c, 3, 10, 4, 5);
        assertEquals(3, b.batch());
        assertEquals(10, b.seqLen());
        assertEquals(12, b.outputTokenCount());
        for (int r = 0; r < 3; r++)
            for (int t = 0; t < 10; t++) {
                int i = r * 10 + t;
                assertEquals(t, b.positions()[i]);
                assertTrue(b.tokens()[i] >= 0 && b.tokens()[i] < 50);
                if (t < 6) assertEquals(Batch.IGNORE, b.targets()[i]);
                else if (t < 9) assertEquals(b.tokens()[i + 1], b.targets()[i]);
            }
        assertEquals(java.util.Arrays.toString(b.tokens()), java.util.Arrays.toString(RandomModel.batch(c, 3, 10, 4, 5).tokens()));
        assertTrue(!java.util.Arrays.equals(b.tokens(), RandomModel.batch(c, 3, 10, 4, 6).tokens()));
    }

    @Test
    void presetsAndValidationErrorsNameTheField() throws Exception {
        assertEquals(4096, RandomModel.config("random:llama3-8b").hiddenSize());
        assertEquals(32, RandomModel.config("random:llama3-8b").numLayers());
        assertEquals(2048, RandomModel.config("random:llama3.2-1b").hiddenSize());
        tinyConfig();
        sparsity();
        JobSpec ok = job("ok", 2, "");
        assertEquals(4, ok.getBatchSize());   // 2 rows per worker × 2 workers
        assertEquals(24, ok.getSeqLen());
        assertEquals("random:" + tmp.resolve("tiny/config.json"), ok.getModel());
        // round trip through the YAML form
        Path again = tmp.resolve("again.yaml");
        Files.writeString(again, JobFiles.toYaml(ok));
        assertEquals(ok.getData(), JobFiles.load(again).getData());

        record Bad(String field, String yamlExtra, String model) {}
        for (Bad bad : List.of(
                new Bad("batch_size", "batch_size: 5", null),
                new Bad("seq_len", "seq_len: 30", null),
                new Bad("model", "", "random:llama9-70b"),
                new Bad("model", "", "random:nowhere/config.json"))) {
            Path f = tmp.resolve("bad.yaml");
            Files.writeString(f, """
                    model: %s
                    data: {synthetic: {batch: 2, seq: 24, output_tokens: 6}}
                    steps: 3
                    workers: 2
                    output_dir: o
                    %s
                    """.formatted(bad.model() == null ? "random:llama3-8b" : bad.model(), bad.yamlExtra()));
            var e = assertThrows(JobSpecException.class, () -> JobFiles.load(f), bad.toString());
            assertTrue(e.getMessage().contains("key '" + bad.field() + "'"), e.getMessage());
        }
        for (String[] bad : new String[][]{
                {"data.synthetic.output_tokens", "data: {synthetic: {batch: 2, seq: 24, output_tokens: 25}}"},
                {"data.synthetic.batch", "data: {synthetic: {batch: 0, seq: 24, output_tokens: 2}}"},
                {"data.synthetic.size", "data: {synthetic: {batch: 1, seq: 24, size: 2}}"},
                {"data.path", "data: {path: x.jsonl, synthetic: {batch: 1, seq: 24, output_tokens: 2}}"},
                {"data", "data: x.jsonl"}}) {
            Path f = tmp.resolve("bad.yaml");
            Files.writeString(f, "model: random:llama3-8b\n" + bad[1] + "\nsteps: 3\nbatch_size: 2\nseq_len: 24\noutput_dir: o\n");
            var e = assertThrows(JobSpecException.class, () -> JobFiles.load(f), bad[0]);
            assertTrue(e.getMessage().contains("key '" + bad[0] + "'"), e.getMessage());
        }
        assertNotNull(ok);
    }
}
