package org.sparselora.arcagi;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.stream.Stream;
import org.sparselora.engine.sparse.SparsityConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code sparselora arc solve}: per task, test-time training then augmented inference and voting;
 * writes {@code submission.json} (ARC Prize format) and {@code results.json} and prints a table.
 */
@Command(name = "solve", mixinStandardHelpOptions = true,
        description = {"Solve ARC tasks: per task a fresh LoRA adapter trained on leave-one-out copies of its demonstrations",
                "under augmentations, then one greedy answer per augmentation, mapped back and voted into two attempts.",
                "Writes submission.json and results.json to --out."})
public final class SolveCommand implements Callable<Integer> {

    @Option(names = "--model", required = true, description = "ARC model directory (from 'arc pretrain': config.json, weights, ARC tokenizer.json)")
    Path model;
    @Option(names = "--tasks", required = true, description = "an ARC task .json or a directory of them") Path tasks;
    @Option(names = "--limit", defaultValue = "0", description = "at most this many tasks, in id order (0 = all)") int limit;
    @Option(names = "--out", required = true, description = "output directory for submission.json and results.json") Path out;
    @Option(names = "--device", defaultValue = "cpu", paramLabel = "cpu|cuda[:N]", description = "backend (default: ${DEFAULT-VALUE})") String device;
    @Option(names = "--no-ttt", description = "no test-time training: the base model answers (baseline)") boolean noTtt;
    @Option(names = "--ttt-steps", defaultValue = "32", description = "optimizer steps per task (default: ${DEFAULT-VALUE})") int tttSteps;
    @Option(names = "--ttt-examples", defaultValue = "64", description = "leave-one-out examples per task (default: ${DEFAULT-VALUE})") int tttExamples;
    @Option(names = "--batch-size", defaultValue = "4", description = "(default: ${DEFAULT-VALUE})") int batchSize;
    @Option(names = "--lora-r", defaultValue = "16", description = "(default: ${DEFAULT-VALUE})") int loraR;
    @Option(names = "--lora-alpha", defaultValue = "32", description = "(default: ${DEFAULT-VALUE})") double loraAlpha;
    @Option(names = "--lr", defaultValue = "1e-4", description = "(default: ${DEFAULT-VALUE})") double lr;
    @Option(names = "--sparsity", description = "SparseLoRA config (e.g. configs/sparsity/llama3.1-8b-arc-agi.yaml); default: dense LoRA") Path sparsity;
    @Option(names = "--augmentations", defaultValue = "8", description = "generations per test input, K (default: ${DEFAULT-VALUE})") int augmentations;
    @Option(names = "--permute-background", description = "let colour permutations move colour 0 too (default: 0 stays)") boolean permuteBackground;
    @Option(names = "--max-len", defaultValue = "8192", description = "longest sequence in tokens, capped at the model's positions (default: ${DEFAULT-VALUE})") int maxLen;
    @Option(names = "--seed", defaultValue = "0") long seed;

    @Override
    public Integer call() throws Exception {
        List<ArcTask> list = load(tasks, limit);
        SparsityConfig sc = sparsity == null ? null : SparsityConfig.load(sparsity);
        Files.createDirectories(out);
        ArcSolver.Settings settings = new ArcSolver.Settings(noTtt ? 0 : tttSteps, tttExamples, batchSize, loraR, loraAlpha, lr, augmentations,
                !permuteBackground, maxLen, sc, sc == null ? null : out.resolve("predictor-r" + sc.rank() + ".safetensors"), seed);
        List<ArcResults.TaskResult> results = new ArrayList<>();
        try (ArcModel m = ArcModel.open(model, device);
             ArcSolver solver = new ArcSolver(m, settings, msg -> System.err.println("arc solve: " + msg))) {
            for (ArcTask t : list) {
                ArcResults.TaskResult r = solver.solve(t);
                results.add(r);
                System.err.printf("arc solve: %s %d/%d score %s (ttt %.1f s, inference %.1f s)%n", t.id(), results.size(), list.size(),
                        Double.isNaN(r.score()) ? "-" : String.format("%.3f", r.score()), r.tttSeconds(), r.inferenceSeconds());
                ArcResults.write(out, results);   // after every task: an interrupted run keeps what it solved
            }
        }
        System.out.print(ArcResults.table(results));
        System.out.println("wrote " + out.resolve("submission.json") + " and " + out.resolve("results.json"));
        return 0;
    }

    /** The tasks of a file or a directory (in id order), all loaded and checked before any work starts. */
    static List<ArcTask> load(Path tasks, int limit) throws java.io.IOException {
        if (limit < 0) throw new IllegalArgumentException("--limit must be >= 0, got " + limit);
        List<Path> files = new ArrayList<>();
        if (Files.isDirectory(tasks)) {
            try (Stream<Path> s = Files.list(tasks)) {
                s.filter(p -> p.toString().endsWith(".json")).sorted().forEach(files::add);
            }
            if (files.isEmpty()) throw new IllegalArgumentException("--tasks " + tasks + ": no .json task files");
        } else if (Files.isRegularFile(tasks)) files.add(tasks);
        else throw new IllegalArgumentException("--tasks " + tasks + ": no such file or directory");
        if (limit > 0 && files.size() > limit) files = files.subList(0, limit);
        List<ArcTask> out = new ArrayList<>();
        for (Path f : files) out.add(ArcTask.load(f));
        return out;
    }
}
