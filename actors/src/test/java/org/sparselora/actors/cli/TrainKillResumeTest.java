package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.pipeline.CheckpointStore;
import org.sparselora.actors.pipeline.MetricsLog;
import org.sparselora.actors.testengine.BigramWorker;

/**
 * {@code sparselora train} as a user runs it: in-process to completion, and in a child JVM that
 * is SIGKILLed mid-run and then resumed with {@code --resume} — the result equals the
 * uninterrupted run's, the checkpoint file is complete at every instant, and metrics.jsonl has
 * every step exactly once.
 */
class TrainKillResumeTest {

    @TempDir
    Path dir;

    @Test
    void trainRunsTheJobInProcessAndReportsTheOutcome() throws Exception {
        Path job = CliRunner.jobFile(dir, "inproc", 6, 1, 2, 0);
        CliRunner.Result r = CliRunner.run("train", "--config", job.toString());
        assertEquals(0, r.code(), r.out() + r.err());
        assertTrue(r.out().startsWith("finished at step 6, loss "), r.out());
        assertTrue(r.err().contains("40 records, 2 malformed (skipped)"), r.err());
        CliRunner.Result again = CliRunner.run("train", "--config", job.toString());
        assertTrue(again.code() != 0, again.out());
        assertTrue(again.err().contains("is not empty") && again.err().contains("resume the run it holds"), again.err());
        CliRunner.Result bad = CliRunner.run("train", "--config", dir.resolve("nope.yaml").toString());
        assertEquals(2, bad.code());
        assertTrue(bad.err().contains("nope.yaml: cannot read the file"), bad.err());
    }

    /** --stop-after ends a run with a checkpoint and exit 0; --resume finishes it with the uninterrupted result. */
    @Test
    void stopAfterCheckpointsAndResumeEndsWithTheUninterruptedResult() throws Exception {
        int steps = 12;
        Path ref = CliRunner.jobFile(dir, "ref12", steps, 2, 0, 0);
        assertEquals(0, CliRunner.run("train", "--config", ref.toString()).code());
        float[] expected = weights(dir.resolve("out-ref12"));

        Path job = CliRunner.jobFile(dir, "stop", steps, 2, 0, 0);
        Path out = dir.resolve("out-stop");
        CliRunner.Result first = CliRunner.run("train", "--config", job.toString(), "--stop-after", "5");
        assertEquals(0, first.code(), first.out() + first.err());
        assertTrue(first.out().contains("(--stop-after)"), first.out());
        int stoppedAt = new CheckpointStore(out).read().getStep();
        assertTrue(stoppedAt >= 5 && stoppedAt < steps, "checkpoint at " + stoppedAt);   // the step in flight may finish too
        assertEquals(stoppedAt, Files.readAllLines(out.resolve(MetricsLog.FILE)).size());

        CliRunner.Result rest = CliRunner.run("train", "--config", job.toString(), "--resume");
        assertEquals(0, rest.code(), rest.out() + rest.err());
        assertTrue(rest.out().startsWith("finished at step 12"), rest.out());
        assertArrayEquals(expected, weights(out));
        assertEquals(steps, Files.readAllLines(out.resolve(MetricsLog.FILE)).size());

        for (String bad : new String[] {"0", "12"}) {
            CliRunner.Result r = CliRunner.run("train", "--config", job.toString(), "--resume", "--stop-after", bad);
            assertEquals(2, r.code(), r.out() + r.err());
            assertTrue(r.err().contains("--stop-after must be in [1, 11] (the job has 12 steps), got " + bad), r.err());
        }
    }

    @Test
    void aTrainProcessKilledMidRunAndResumedEndsWithTheUninterruptedResult() throws Exception {
        int steps = 30;
        Path ref = CliRunner.jobFile(dir, "ref", steps, 2, 4, 0);
        assertEquals(0, CliRunner.run("train", "--config", ref.toString()).code());
        float[] expected = weights(dir.resolve("out-ref"));

        Path job = CliRunner.jobFile(dir, "kill", steps, 2, 4, 60);
        Path out = dir.resolve("out-kill");
        Path ckpt = out.resolve("checkpoint").resolve(CheckpointStore.FILE);
        Process child = childTrain(job, false);
        // read the checkpoint continuously while the child writes it: it must always be whole
        AtomicBoolean stop = new AtomicBoolean();
        AtomicInteger reads = new AtomicInteger();
        AtomicReference<Throwable> torn = new AtomicReference<>();
        Thread reader = Thread.ofPlatform().start(() -> {
            while (!stop.get()) {
                if (Files.exists(ckpt)) {
                    try {
                        new CheckpointStore(out).read();
                        reads.incrementAndGet();
                    } catch (java.nio.file.NoSuchFileException gone) {
                        // between exists() and the read: not a torn file
                    } catch (Throwable t) {
                        torn.compareAndSet(null, t);
                    }
                }
            }
        });
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (metricsRows(out) < 11 && child.isAlive() && System.nanoTime() < deadline) Thread.sleep(20);
        int rowsAtKill = metricsRows(out);
        assertTrue(child.isAlive(), "child ended before it could be killed: " + Files.readString(dir.resolve("child.err")));
        child.destroyForcibly(); // SIGKILL
        assertEquals(137, child.waitFor(), "rows at kill " + rowsAtKill + "; " + Files.readString(dir.resolve("child.err")));
        stop.set(true);
        reader.join();
        assertEquals(null, torn.get(), "a reader saw a damaged checkpoint");
        assertTrue(reads.get() > 0);
        int killedAt = new CheckpointStore(out).read().getStep();
        assertTrue(killedAt >= 8 && killedAt < steps, "checkpoint at " + killedAt);

        Process resumed = childTrain(job, true);
        int code = resumed.waitFor();
        String err = Files.readString(dir.resolve("child.err"));
        assertEquals(0, code, err);
        assertTrue(err.contains("resuming from step " + killedAt), err);
        assertArrayEquals(expected, weights(out));
        List<Integer> rows = new ArrayList<>();
        ObjectMapper m = new ObjectMapper();
        for (String l : Files.readAllLines(out.resolve(MetricsLog.FILE))) rows.add(m.readTree(l).get("step").asInt());
        List<Integer> want = new ArrayList<>();
        for (int i = 1; i <= steps; i++) want.add(i);
        assertEquals(want, rows);
        try (var ds = Files.newDirectoryStream(out.resolve("checkpoint"))) {
            for (Path p : ds) assertFalse(p.getFileName().toString().endsWith(".tmp"), "stale temp file " + p);
        }
    }

    private Process childTrain(Path job, boolean resume) throws Exception {
        String java = ProcessHandle.current().info().command().orElse("java");
        List<String> cmd = new ArrayList<>(List.of(java, "--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                "--sun-misc-unsafe-memory-access=allow", "-Xmx256m", "-cp", System.getProperty("java.class.path"),
                Main.class.getName(), "train", "--config", job.toString()));
        if (resume) cmd.add("--resume");
        return new ProcessBuilder(cmd).redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectError(dir.resolve("child.err").toFile()).start();
    }

    private static int metricsRows(Path out) {
        try {
            return (int) Files.readAllLines(out.resolve(MetricsLog.FILE)).stream().filter(l -> l.endsWith("}")).count();
        } catch (Exception e) {
            return 0;
        }
    }

    private static float[] weights(Path out) throws Exception {
        return CheckpointStore.toTrainerState(new CheckpointStore(out).read()).tensors().get(BigramWorker.WEIGHT);
    }
}
