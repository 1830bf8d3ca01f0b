package org.sparselora.arcagi;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.stream.Stream;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.SpawnProtocol;
import org.sparselora.actors.pipeline.JobSupervisor;
import org.sparselora.actors.server.JobManager;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code sparselora arc}: test-time training on ARC-AGI tasks, printing one JSON line per task
 * ({@code task, attempts, solved, loss, ms}) and a pass@2 summary.
 */
@Command(name = "arc", mixinStandardHelpOptions = true,
        description = {"ARC-AGI test-time training: per task, train a LoRA adapter on its demonstrations (leave-one-out,",
                "rotations/transpose) through the training pipeline, then answer each test input twice (pass@2)."})
public final class ArcCommand implements Callable<Integer> {

    @Option(names = "--model", required = true, description = "HF checkpoint directory or llama2.c .bin") String model;
    @Option(names = "--tokenizer", description = "tokenizer (default: the model's)") String tokenizer;
    @Option(names = "--tasks", required = true, description = "an ARC task .json or a directory of them") Path tasks;
    @Option(names = "--limit", defaultValue = "0", description = "at most this many tasks (0 = all)") int limit;
    @Option(names = "--sparsity", description = "SparseLoRA config, e.g. configs/llama3.1-8b-arc-agi.yaml (default: dense LoRA)") String sparsity;
    @Option(names = "--steps", defaultValue = "40") int steps;
    @Option(names = "--batch-size", defaultValue = "4") int batchSize;
    @Option(names = "--seq-len", defaultValue = "2048") int seqLen;
    @Option(names = "--lora-r", defaultValue = "16") int loraR;
    @Option(names = "--lr", defaultValue = "1e-4") double lr;
    @Option(names = "--seed", defaultValue = "0") long seed;
    @Option(names = "--max-new-tokens", defaultValue = "1000") int maxNewTokens;
    @Option(names = "--no-augment", description = "train on the demonstrations as given (no rotations/transpose)") boolean noAugment;
    @Option(names = "--workers", defaultValue = "1") int workers;
    @Option(names = "--out", required = true, description = "work directory (per task: ttt.json, run/)") Path out;

    @Override
    public Integer call() throws Exception {
        List<Path> files = new ArrayList<>();
        if (Files.isDirectory(tasks)) {
            try (Stream<Path> s = Files.list(tasks)) {
                s.filter(p -> p.toString().endsWith(".json")).sorted().forEach(files::add);
            }
        } else files.add(tasks);
        if (files.isEmpty()) throw new IllegalArgumentException("--tasks " + tasks + ": no .json task files");
        if (limit > 0 && files.size() > limit) files = files.subList(0, limit);
        ActorSystem<SpawnProtocol.Command> system = ActorSystem.create(SpawnProtocol.create(), "sparselora-arc");
        ObjectMapper json = new ObjectMapper();
        int tests = 0, solved = 0;
        try (JobManager jobs = new JobManager(system, 1, JobManager.engines(), JobSupervisor.Settings.defaults())) {
            ArcTtt ttt = new ArcTtt(jobs, new ArcTtt.Settings(Path.of(model).toAbsolutePath().toString(),
                    tokenizer == null ? null : Path.of(tokenizer).toAbsolutePath().toString(),
                    sparsity == null ? null : Path.of(sparsity).toAbsolutePath().toString(), steps, batchSize, seqLen, loraR, lr, seed,
                    maxNewTokens, !noAugment, workers));
            for (Path f : files) {
                ArcTtt.Result r = ttt.solve(ArcTask.load(f), out.toAbsolutePath());
                ObjectNode row = json.createObjectNode().put("task", r.task()).put("loss", r.finalLoss()).put("ms", r.millis());
                row.set("attempts", json.valueToTree(r.attempts()));
                row.set("solved", json.valueToTree(r.solved()));
                System.out.println(json.writeValueAsString(row));
                for (Boolean b : r.solved())
                    if (b != null) {
                        tests++;
                        if (b) solved++;
                    }
            }
        } finally {
            system.terminate();
        }
        System.out.println(json.writeValueAsString(json.createObjectNode().put("tasks", files.size()).put("tests", tests)
                .put("pass@2", tests == 0 ? 0 : (double) solved / tests)));
        return 0;
    }
}
