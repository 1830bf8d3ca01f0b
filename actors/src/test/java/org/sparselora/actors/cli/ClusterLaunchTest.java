package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.pipeline.CheckpointStore;

/**
 * A coordinator (this JVM) and 2 worker JVMs on loopback train stories260K — dense warm-up, then
 * sparse steps whose channel scores are all-reduced across the JVMs — and end with the adapter
 * that {@code workers: 2} gives in one JVM. The cluster run writes cluster.json (3 nodes).
 */
@Tag("shared-data")
class ClusterLaunchTest {

    static Path shared;

    @TempDir
    Path tmp;

    @BeforeAll
    static void data() {
        shared = Path.of(System.getProperty("sparselora.shared", "../shared")).toAbsolutePath().normalize();
        Path model = shared.resolve("data/models/stories260K/stories260K.bin");
        if (!Files.isRegularFile(model))
            throw new IllegalStateException("shared data not found: " + model + " is missing; pass -Dsparselora.shared=<dir holding data/>");
    }

    Path job(String name, int steps) throws Exception {
        Path f = tmp.resolve(name + ".yaml");
        Files.writeString(f, "name: " + name + "\n"
                + "model: " + shared.resolve("data/models/stories260K/stories260K.bin") + "\n"
                + "tokenizer: " + shared.resolve("data/tokenizers/llama2c-tok512/tok512.bin") + "\n"
                + "data: {path: " + shared.resolve("data/pretrain/tinyshakespeare.jsonl") + ", format: text}\n"
                + "lora: {r: 8, alpha: 16, targets: [q, k, v, o, gate, up, down]}\n"
                + "optimizer: {lr: 2.0e-3}\n"
                + "sparsity: {start_step: 0.3, skip_output_tokens: false, sparsity: {layers.1.mlp: 0.5, layers.2.mlp: 0.75, layers.3.self_attn: 0.5}}\n"
                + "steps: " + steps + "\nbatch_size: 4\nseq_len: 48\nworkers: 2\ncheckpoint_every: 4\nseed: 3\n"
                + "output_dir: " + tmp.resolve("out-" + name) + "\n");
        return f;
    }

    @Test
    @Timeout(300)
    void twoWorkerJvmsMatchTwoWorkersInOneJvm() throws Exception {
        assertEquals(0, Main.run("train", "--config", job("one-jvm", 8).toString()));
        assertEquals(0, Main.run("launch", "--local", "2", "--wait", "150s", "train", "--config", job("cluster", 8).toString()));

        String cluster = Files.readString(tmp.resolve("out-cluster/cluster.json"));
        assertEquals(1, count(cluster, "\"role\": \"coordinator\""), cluster);
        assertEquals(2, count(cluster, "\"role\": \"worker\""), cluster);
        assertTrue(cluster.contains("\"pid\": " + ProcessHandle.current().pid()), cluster);
        assertEquals(8, Files.readAllLines(tmp.resolve("out-cluster/metrics.jsonl")).size());
        assertTrue(Files.readString(tmp.resolve("out-cluster/metrics.jsonl")).contains("\"sparse\":true"), "sparse steps ran");
        double d = maxWeightDiff(tmp.resolve("out-one-jvm"), tmp.resolve("out-cluster"));
        System.out.printf("cluster vs one JVM: max |dw| %.3g%n", d);
        assertTrue(d <= 1e-5, "max |dw| " + d);
    }

    /**
     * A worker JVM SIGKILLed at a random step (several trials): the coordinator sees its node
     * downed, places both workers on the surviving node, restarts from the last checkpoint, and the
     * job ends with the adapter of the uninterrupted run and exactly one metrics row per step.
     */
    @Test
    @Timeout(900)
    void workerKilledMidRunFinishesWithTheSameAdapter() throws Exception {
        assertEquals(0, Main.run("train", "--config", job("reference", 10).toString()));
        java.util.Random rnd = new java.util.Random(Long.getLong("sparselora.trialSeed", System.nanoTime()));
        for (int trial = 0; trial < 2; trial++) {
            int killAfter = 2 + rnd.nextInt(6);   // rows already written when the kill comes
            String name = "killed-" + trial;
            Path metrics = tmp.resolve("out-" + name + "/metrics.jsonl");
            var run = java.util.concurrent.CompletableFuture.supplyAsync(() -> {
                try {
                    return Main.run("launch", "--local", "2", "--wait", "150s", "train", "--config", job(name, 10).toString());
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            long killed = -1;
            while (!run.isDone() && killed < 0) {
                Thread.sleep(200);
                if (Files.isRegularFile(metrics) && Files.readAllLines(metrics).size() >= killAfter) {
                    // the coordinator runs in this JVM: its only child processes are the worker JVMs
                    ProcessHandle victim = ProcessHandle.current().children().filter(ProcessHandle::isAlive).findFirst().orElseThrow();
                    killed = victim.pid();
                    victim.destroyForcibly();   // SIGKILL
                }
            }
            System.out.printf("trial %d: worker JVM %d SIGKILLed after %d steps%n", trial, killed, killAfter);
            assertTrue(killed > 0, "the job finished before the kill");
            assertEquals(0, run.get(600, java.util.concurrent.TimeUnit.SECONDS));
            List<String> rows = Files.readAllLines(metrics);
            assertEquals(10, rows.size(), "one metrics row per step");
            for (int i = 0; i < rows.size(); i++) assertTrue(rows.get(i).startsWith("{\"step\":" + (i + 1) + ","), rows.get(i));
            double d = maxWeightDiff(tmp.resolve("out-reference"), tmp.resolve("out-" + name));
            System.out.printf("trial %d: killed run vs uninterrupted: max |dw| %.3g%n", trial, d);
            assertTrue(d <= 1e-5, "max |dw| " + d);
        }
    }

    static int count(String s, String what) {
        int n = 0;
        for (int i = s.indexOf(what); i >= 0; i = s.indexOf(what, i + 1)) n++;
        return n;
    }

    /** Max |Δw| over the LoRA weights (not the AdamW moments) of two finished runs. */
    static double maxWeightDiff(Path a, Path b) throws Exception {
        Map<String, float[]> x = CheckpointStore.toTrainerState(new CheckpointStore(a).read()).tensors();
        Map<String, float[]> y = CheckpointStore.toTrainerState(new CheckpointStore(b).read()).tensors();
        double max = 0, maxAbs = 0;
        for (String k : x.keySet()) {
            if (k.endsWith(".exp_avg") || k.endsWith(".exp_avg_sq")) continue;
            for (int i = 0; i < x.get(k).length; i++) {
                max = Math.max(max, Math.abs(x.get(k)[i] - y.get(k)[i]));
                maxAbs = Math.max(maxAbs, Math.abs(x.get(k)[i]));
            }
        }
        assertTrue(maxAbs > 1e-3, "the adapter trained");
        return max;
    }
}
