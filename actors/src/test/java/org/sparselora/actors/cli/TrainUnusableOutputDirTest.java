package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code sparselora train} as a process, on a job whose output_dir cannot be used: it exits non-zero
 * within seconds, saying why (it used to hang for ever, deaf to SIGTERM).
 */
class TrainUnusableOutputDirTest {

    @TempDir
    Path dir;

    @Test
    void anOutputDirNamingAFileEndsTrainWithAnError() throws Exception {
        Path file = Files.writeString(dir.resolve("taken"), "not a directory");
        for (String outputDir : List.of("taken", "taken/run")) {
            Path job = CliRunner.jobFile(dir, "j", 4, 1, 0, 0);
            Files.writeString(job, Files.readString(job).replace("output_dir: out-j", "output_dir: " + outputDir));
            String java = ProcessHandle.current().info().command().orElse("java");
            Process p = new ProcessBuilder(java, "--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                    "--sun-misc-unsafe-memory-access=allow", "-Xmx256m", "-cp", System.getProperty("java.class.path"),
                    Main.class.getName(), "train", "--config", job.toString())
                    .redirectOutput(dir.resolve("child.out").toFile()).redirectError(dir.resolve("child.err").toFile()).start();
            boolean exited = p.waitFor(60, TimeUnit.SECONDS);
            if (!exited) {
                p.destroyForcibly().waitFor();
                throw new AssertionError("train did not exit on output_dir " + outputDir);
            }
            String out = Files.readString(dir.resolve("child.out")), err = Files.readString(dir.resolve("child.err"));
            // refused before the pipeline starts: a user error (exit 2) naming the path, no stack trace
            assertEquals(2, p.exitValue(), out + err);
            assertTrue(err.contains(file + " exists and is not a directory") || err.contains(file + ", which is a file, not a directory"), err);
            assertFalse(err.contains("Exception"), err);
            assertEquals("not a directory", Files.readString(file));
        }
    }
}
