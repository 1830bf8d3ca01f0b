package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.pipeline.CheckpointStore;
import org.sparselora.actors.pipeline.MetricsLog;

/**
 * {@code sparselora serve} as its own process on loopback: the CLI submits a job with the token,
 * watches it to the end and lists it; a second job is running when the server gets SIGTERM, and
 * the server stops it with a checkpoint before exiting.
 */
class ServeProcessTest {

    @TempDir
    Path dir;

    @Test
    void submitAndWatchAgainstAServeProcessThenShutItDownCleanly() throws Exception {
        Path token = dir.resolve("token");
        Files.writeString(token, "tok-" + System.nanoTime());
        String java = ProcessHandle.current().info().command().orElse("java");
        List<String> cmd = new ArrayList<>(List.of(java, "--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                "--sun-misc-unsafe-memory-access=allow", "-Xmx256m", "-cp", System.getProperty("java.class.path"), Main.class.getName(),
                "serve", "--port", "0", "--token-file", token.toString(), "--root", dir.toString()));
        Process serve = new ProcessBuilder(cmd).redirectError(dir.resolve("serve.err").toFile()).start();
        try {
            BufferedReader out = new BufferedReader(new InputStreamReader(serve.getInputStream(), StandardCharsets.UTF_8));
            String first = out.readLine();
            Matcher m = Pattern.compile("listening on 127\\.0\\.0\\.1:(\\d+) \\(bearer token required\\)").matcher(first == null ? "" : first);
            assertTrue(m.find(), "serve said: " + first + " / " + Files.readString(dir.resolve("serve.err")));
            String server = "127.0.0.1:" + m.group(1);

            Path job = CliRunner.jobFile(dir, "served", 8, 2, 3, 0);
            CliRunner.Result sub = CliRunner.run("submit", job.toString(), "--watch", "--server", server, "--token-file", token.toString());
            assertEquals(0, sub.code(), sub.out() + sub.err());
            assertTrue(sub.out().contains("finished at step 8"), sub.out());
            assertEquals(8, Files.readAllLines(dir.resolve("out-served").resolve(MetricsLog.FILE)).size());

            Path slow = CliRunner.jobFile(dir, "slow", 10_000, 1, 0, 20);
            CliRunner.Result s2 = CliRunner.run("submit", slow.toString(), "--server", server, "--token-file", token.toString());
            assertEquals(0, s2.code(), s2.err());
            Path rows = dir.resolve("out-slow").resolve(MetricsLog.FILE);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while ((!Files.exists(rows) || Files.readAllLines(rows).size() < 3) && System.nanoTime() < deadline) Thread.sleep(20);
            CliRunner.Result list = CliRunner.run("jobs", "--server", server, "--token-file", token.toString());
            assertTrue(list.out().contains("running"), list.out());

            serve.destroy(); // SIGTERM: the shutdown hook cancels running jobs with a checkpoint
            assertTrue(serve.waitFor(60, TimeUnit.SECONDS), "serve did not exit");
            int done = new CheckpointStore(dir.resolve("out-slow")).read().getStep();
            assertEquals(Files.readAllLines(rows).size(), done, "the final checkpoint is at the last metrics row");
            assertTrue(done >= 3 && done < 10_000);
        } finally {
            serve.destroyForcibly();
        }
    }
}
