package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.time.Duration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.job.OutputDirs;
import org.sparselora.actors.pipeline.LossPlot;
import org.sparselora.actors.pipeline.MetricsLog;

/**
 * {@code train} and its output_dir: an unusable directory fails at once with the reason (no hang),
 * an earlier run's files are never silently replaced, planted symlinks are never written through,
 * two runs of one directory cannot overlap, and a resume with other training settings is refused
 * naming them.
 */
class OutputDirHardeningTest {

    @TempDir
    Path dir;

    private Path job(String name, int steps) throws Exception {
        return CliRunner.jobFile(dir, name, steps, 1, 2, 0);
    }

    private Path jobWith(String name, int steps, String from, String to) throws Exception {
        Path f = job(name, steps);
        String y = Files.readString(f);
        assertTrue(y.contains(from), y);
        Files.writeString(f, y.replace(from, to));
        return f;
    }

    private static CliRunner.Result train(String... args) {
        String[] all = new String[args.length + 1];
        all[0] = "train";
        System.arraycopy(args, 0, all, 1, args.length);
        return assertTimeoutPreemptively(Duration.ofSeconds(60), () -> CliRunner.run(all), "train hung");
    }

    @Test
    void anUnusableOutputDirFailsAtOnceWithTheReason() throws Exception {
        Files.writeString(dir.resolve("afile"), "x");
        for (String[] c : new String[][] {{"output_dir: out-bad", "output_dir: afile", "exists and is not a directory"},
                {"output_dir: out-bad", "output_dir: afile/sub", "which is a file, not a directory"},
                {"output_dir: out-bad", "output_dir: /proc/sparselora-x", "cannot create /proc/sparselora-x"}}) {
            Path f = jobWith("bad", 4, c[0], c[1]);
            CliRunner.Result r = train("--config", f.toString());
            assertTrue(r.code() != 0, r.out());
            assertTrue(r.err().contains("output_dir") && r.err().contains(c[2]), r.err());
            assertFalse(r.err().contains("\tat "), "no stack trace: " + r.err());
        }
        assertEquals("x", Files.readString(dir.resolve("afile")));
    }

    @Test
    void anEarlierRunsFilesAreNotReplacedWithoutOverwrite() throws Exception {
        Path out = Files.createDirectories(dir.resolve("out-keep"));
        Path adapter = Files.createDirectories(out.resolve("adapter"));
        Files.writeString(adapter.resolve("mine.txt"), "precious");
        Files.writeString(out.resolve(MetricsLog.FILE), "{\"step\": 1, \"loss\": 9}\n");
        CliRunner.Result r = train("--config", job("keep", 4).toString());
        assertTrue(r.code() != 0, r.out());
        assertTrue(r.err().contains("is not empty") && r.err().contains("--overwrite"), r.err());
        assertEquals("precious", Files.readString(adapter.resolve("mine.txt")));
        assertEquals("{\"step\": 1, \"loss\": 9}\n", Files.readString(out.resolve(MetricsLog.FILE)));

        CliRunner.Result o = train("--config", job("keep", 4).toString(), "--overwrite");
        assertEquals(0, o.code(), o.out() + o.err());
        assertEquals(4, Files.readAllLines(out.resolve(MetricsLog.FILE)).size());
        assertFalse(Files.exists(adapter.resolve("mine.txt")), "--overwrite starts over");
    }

    @Test
    void plantedSymlinksAtTempNamesAreNeverWrittenThrough() throws Exception {
        Path f = job("links", 6);
        assertEquals(0, train("--config", f.toString(), "--stop-after", "2").code());
        Path out = dir.resolve("out-links");
        Path victim1 = Files.writeString(dir.resolve("victim1"), "keep me 1"), victim2 = Files.writeString(dir.resolve("victim2"), "keep me 2");
        Files.deleteIfExists(out.resolve(LossPlot.FILE));
        Files.createSymbolicLink(out.resolve(MetricsLog.FILE + ".tmp"), victim1);
        Files.createSymbolicLink(out.resolve(LossPlot.FILE + ".tmp"), victim2);
        CliRunner.Result r = train("--config", f.toString(), "--resume");
        assertEquals(0, r.code(), r.out() + r.err());
        assertEquals("keep me 1", Files.readString(victim1));
        assertEquals("keep me 2", Files.readString(victim2));
        assertTrue(Files.isRegularFile(out.resolve(MetricsLog.FILE), LinkOption.NOFOLLOW_LINKS), "metrics.jsonl must be a regular file");
        assertTrue(Files.isRegularFile(out.resolve(LossPlot.FILE), LinkOption.NOFOLLOW_LINKS));
        assertEquals(6, Files.readAllLines(out.resolve(MetricsLog.FILE)).size());
    }

    @Test
    void twoRunsOfOneDirectoryCannotOverlap() throws Exception {
        Path f = job("locked", 6);
        assertEquals(0, train("--config", f.toString(), "--stop-after", "2").code());
        // another process's run holds the directory's lock (here: this JVM, as the other process would)
        try (var held = OutputDirs.claim(dir.resolve("out-locked").toRealPath(), true, false)) {
            CliRunner.Result r = train("--config", f.toString(), "--resume");
            assertTrue(r.code() != 0, r.out());
            assertTrue(r.err().contains("in use"), r.err());
        }
        CliRunner.Result after = train("--config", f.toString(), "--resume");
        assertEquals(0, after.code(), after.out() + after.err());
    }

    @Test
    void aSecondProcessCannotResumeADirectoryAnotherIsTraining() throws Exception {
        Path f = CliRunner.jobFile(dir, "twoproc", 10_000, 1, 50, 20);
        assertEquals(0, train("--config", f.toString(), "--stop-after", "2").code());
        Process other = new ProcessBuilder(ServeHardeningProcessTest.javaCmd("train", "--config", f.toString(), "--resume"))
                .redirectErrorStream(true).redirectOutput(dir.resolve("other.log").toFile()).start();
        try {
            Path rows = dir.resolve("out-twoproc").resolve(MetricsLog.FILE);
            long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(60);
            while (Files.readAllLines(rows).size() < 5 && System.nanoTime() < deadline) Thread.sleep(50);
            assertTrue(Files.readAllLines(rows).size() >= 5, "the other process did not start training: " + Files.readString(dir.resolve("other.log")));
            CliRunner.Result r = train("--config", f.toString(), "--resume");
            assertTrue(r.code() != 0, r.out());
            assertTrue(r.err().contains("is in use by another run"), r.err());
        } finally {
            other.destroy(); // SIGTERM: it stops with a checkpoint
            assertTrue(other.waitFor(60, java.util.concurrent.TimeUnit.SECONDS));
        }
    }

    @Test
    void aResumeWithOtherTrainingSettingsIsRefusedNamingThem() throws Exception {
        Path f = job("compat", 8);
        assertEquals(0, train("--config", f.toString(), "--stop-after", "3").code());
        String base = Files.readString(f);
        byte[] checkpoint = Files.readAllBytes(dir.resolve("out-compat/checkpoint/checkpoint.pb"));
        String[][] changes = {{"optimizer: {lr: 0.05}", "optimizer: {lr: 0.01}", "optimizer.lr"},
                {"seq_len: 10", "seq_len: 12", "seq_len"},
                {"lora: {r: 8, alpha: 16, targets: [q, v]}", "lora: {r: 4, alpha: 16, targets: [q, v]}", "lora.r"},
                {"lora: {r: 8, alpha: 16, targets: [q, v]}", "lora: {r: 8, alpha: 16, targets: [q, k, v]}", "lora.targets"}};
        for (String[] c : changes) {
            Files.writeString(f, base.replace(c[0], c[1]));
            CliRunner.Result r = train("--config", f.toString(), "--resume");
            assertTrue(r.code() != 0, r.out());
            assertTrue(r.err().contains(c[2] + " (checkpoint"), c[2] + ": " + r.err());
            assertFalse(r.err().contains("\tat "), r.err());
        }
        Files.writeString(f, base.replace("steps: 8", "steps: 9"));
        CliRunner.Result steps = train("--config", f.toString(), "--resume");
        assertTrue(steps.err().contains("steps (checkpoint 8, job 9)") && steps.err().contains("--allow-changes steps"), steps.err());
        CliRunner.Result notChangeable = train("--config", f.toString(), "--resume", "--allow-changes", "seed");
        assertTrue(notChangeable.err().contains("'seed' cannot be changed on resume"), notChangeable.err());
        assertArrayEquals(checkpoint, Files.readAllBytes(dir.resolve("out-compat/checkpoint/checkpoint.pb")), "refusals leave the checkpoint as it was");
        Files.writeString(f, base);
        CliRunner.Result ok = train("--config", f.toString(), "--resume");
        assertEquals(0, ok.code(), ok.out() + ok.err());
    }

    @Test
    void emptyTargetListsAndDuplicateKeysAreErrors() throws Exception {
        Path f = jobWith("targets", 4, "targets: [q, v]", "targets: []");
        CliRunner.Result r = train("--config", f.toString());
        assertTrue(r.code() != 0 && r.err().contains("lora.targets") && r.err().contains("empty list"), r.err());
        Path d = jobWith("dup", 4, "seed: 7", "seed: 7\nsteps: 9");
        CliRunner.Result dup = train("--config", d.toString());
        assertTrue(dup.code() != 0 && dup.err().contains("steps"), dup.err());
        assertFalse(Files.exists(dir.resolve("out-dup")), "nothing written for a refused job");
    }
}
