package org.sparselora.actors.cli;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/** Runs {@link Main} in this JVM and captures what it prints (tests run one command at a time). */
public final class CliRunner {

    public record Result(int code, String out, String err) {}

    public static synchronized Result run(String... args) {
        PrintStream oldOut = System.out, oldErr = System.err;
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
        try {
            var cl = Main.commandLine();
            cl.setOut(new java.io.PrintWriter(System.out, true));
            cl.setErr(new java.io.PrintWriter(System.err, true));
            int code = cl.execute(args);
            return new Result(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
        } finally {
            System.setOut(oldOut);
            System.setErr(oldErr);
        }
    }

    /** A toy job file (the test engine's bigram model on Markov data). */
    public static Path jobFile(Path dir, String name, int steps, int workers, int checkpointEvery, long delayMs) throws Exception {
        Path f = dir.resolve(name + ".yaml");
        Files.writeString(f, """
                name: %s
                model: toy:bigram?vocab=12&delay_ms=%d
                data: toy:markov?records=40&malformed=2
                lora: {r: 8, alpha: 16, targets: [q, v]}
                sparsity:
                  start_step: 0.25
                  mode: svd_8
                  sparsity:
                    layers.1.mlp: 0.9
                optimizer: {lr: 0.05}
                schedule: {type: cosine, warmup_steps: 2}
                steps: %d
                batch_size: 4
                seq_len: 10
                workers: %d
                output_dir: out-%s
                checkpoint_every: %d
                seed: 7
                """.formatted(name, delayMs, steps, workers, name, checkpointEvery));
        return f;
    }
}
