package org.sparselora.arcagi;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.function.Consumer;
import org.sparselora.engine.data.Batcher;
import org.sparselora.engine.generate.BatchGenerator;
import org.sparselora.engine.generate.Generator;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.sparse.ChannelSelection;
import org.sparselora.engine.sparse.DenseWarmup;
import org.sparselora.engine.sparse.LowRankSvd;
import org.sparselora.engine.sparse.SparsePlanner;
import org.sparselora.engine.sparse.SparsityConfig;
import org.sparselora.engine.sparse.SvdPredictor;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.OptimizerConfig;
import org.sparselora.engine.train.StepResult;

/**
 * Solves ARC tasks with one base model: per task, a fresh LoRA adapter trained on the task's
 * leave-one-out data ({@link LeaveOneOut}; SparseLoRA when a sparsity config is given), then, for
 * every test input, one greedy generation per augmentation ({@link Augmentation#plan}), each decoded
 * ({@link ArcFormat#decode}), mapped back ({@link Augmentation#invert}) and scored by its mean
 * log-probability under the model that produced it; {@link Voting} picks the two attempts.
 *
 * <p>Lengths are never cut: a leave-one-out example that does not fit {@code maxLen} is left out
 * (counted), an augmentation whose prompt does not fit is skipped, and a test input none of whose
 * prompts fit makes the task fail with that reason (scored 0).
 */
public final class ArcSolver implements AutoCloseable {

    /**
     * @param tttSteps       optimizer steps per task; 0 = no test-time training (the base model answers)
     * @param tttExamples    leave-one-out examples per task (the budget)
     * @param augmentations  generations per test input (K)
     * @param maxLen         longest sequence, prompt + answer (the model's positions at most)
     * @param sparsity       SparseLoRA config, or null for dense LoRA
     * @param predictorCache file caching the SVD predictor factors (built once per base model), or null
     */
    public record Settings(int tttSteps, int tttExamples, int batchSize, int loraR, double loraAlpha, double lr, int augmentations,
                           boolean keepBackground, int maxLen, SparsityConfig sparsity, Path predictorCache, long seed) {
        public Settings {
            if (tttSteps < 0) throw new IllegalArgumentException("--ttt-steps must be >= 0, got " + tttSteps);
            if (tttSteps > 0 && tttExamples < 1) throw new IllegalArgumentException("--ttt-examples must be >= 1, got " + tttExamples);
            if (batchSize < 1) throw new IllegalArgumentException("--batch-size must be >= 1, got " + batchSize);
            if (loraR < 1) throw new IllegalArgumentException("--lora-r must be >= 1, got " + loraR);
            if (augmentations < 1) throw new IllegalArgumentException("--augmentations must be >= 1, got " + augmentations);
            if (maxLen < 8) throw new IllegalArgumentException("--max-len must be >= 8, got " + maxLen);
        }
    }

    private final ArcModel base;
    private final Settings s;
    private final Consumer<String> log;
    /** SparseLoRA's channel selection (SVD predictor factors of the base weights): built once, shared by every task's planner. */
    private ChannelSelection selection;

    public ArcSolver(ArcModel base, Settings settings, Consumer<String> log) {
        this.base = base;
        this.log = log;
        int positions = base.model.config().maxPositions();
        this.s = settings.maxLen() <= positions ? settings : new Settings(settings.tttSteps(), settings.tttExamples(), settings.batchSize(),
                settings.loraR(), settings.loraAlpha(), settings.lr(), settings.augmentations(), settings.keepBackground(), positions,
                settings.sparsity(), settings.predictorCache(), settings.seed());
        if (s.sparsity() != null) {
            SparsityConfig.Resolved resolved = s.sparsity().resolve(base.model.config());   // a config naming a missing layer fails here
            if (resolved.anySparse()) {
                SvdPredictor predictor = SvdPredictor.forConfig(base.source, resolved, s.sparsity().rank(), s.predictorCache(),
                        LowRankSvd.Method.AUTO, SvdPredictor.Progress.NONE);
                selection = new ChannelSelection(base.backend, predictor, resolved);
            }
        }
    }

    @Override
    public void close() {
        if (selection != null) selection.close();
        selection = null;
    }

    public Settings settings() { return s; }

    public ArcResults.TaskResult solve(ArcTask task) {
        long t0 = System.nanoTime();
        LoraAdapter lora = null;
        double[] loss = {Double.NaN, Double.NaN};   // first and last step
        int examples = 0;
        try {
            if (s.tttSteps() > 0) {
                LeaveOneOut.Data data = LeaveOneOut.examples(task, s.tttExamples(), s.maxLen(), s.seed(), s.keepBackground());
                examples = data.examples().size();
                if (data.tooLong() > 0) log.accept(task.id() + ": " + data.tooLong() + " leave-one-out examples longer than " + s.maxLen() + " tokens left out");
                if (!data.examples().isEmpty()) {
                    lora = new LoraAdapter(base.backend, base.model.config(), new LoraConfig(s.loraR(), (float) s.loraAlpha(), 0f,
                            EnumSet.allOf(Projection.class), false, s.seed()));
                    loss = train(lora, data);
                } else {
                    log.accept(task.id() + ": no leave-one-out data (" + (task.train().size() < 2 ? "one demonstration" : "every example too long")
                            + "): the base model answers");
                }
            }
            long t1 = System.nanoTime();
            List<int[][][]> attempts = new ArrayList<>();
            List<Boolean> solved = new ArrayList<>();
            String error = null;
            for (int i = 0; i < task.test().size(); i++) {
                ArcTask.Pair test = task.test().get(i);
                int[][][] a = answer(task, test.input(), i, lora);
                if (a == null) {
                    error = "test " + i + ": no augmented prompt fits " + s.maxLen() + " tokens (shortest "
                            + ArcFormat.prompt(task.train(), test.input()).length + "+ tokens)";
                    a = new int[][][] {null, null};
                }
                attempts.add(a);
                solved.add(test.output() == null ? null : ArcResults.solved(a, test.output()));
            }
            if (error != null) {
                // a task that does not fit is reported and scored 0, never answered from a cut prompt
                attempts.replaceAll(x -> new int[][][] {null, null});
                solved.replaceAll(b -> b == null ? null : false);
            }
            long t2 = System.nanoTime();
            return new ArcResults.TaskResult(task.id(), attempts, solved, (t1 - t0) / 1e9, (t2 - t1) / 1e9, loss[0], loss[1], examples, error);
        } finally {
            if (lora != null) lora.close();
        }
    }

    /** Trains {@code lora} on the leave-one-out data for the configured steps; the first and the last step's loss. */
    private double[] train(LoraAdapter lora, LeaveOneOut.Data data) {
        int steps = s.tttSteps();
        OptimizerConfig opt = new OptimizerConfig((float) s.lr(), 0.9f, 0.999f, 1e-8f, 0f, 1f, OptimizerConfig.Schedule.COSINE,
                Math.max(0, steps / 10), steps);
        int batch = Math.min(s.batchSize(), data.examples().size());
        boolean gpu = base.backend.graphCapture().isPresent();
        Batcher batcher = new Batcher(data.examples(), new Batcher.Options(batch, s.maxLen(), s.seed(), true, false, false),
                ArcTokenizer.PAD, ArcTokenizer.BOS);
        SparsePlanner planner = s.sparsity() == null ? null : new SparsePlanner(base.backend, s.sparsity(), selection, steps, s.seed());
        DenseWarmup schedule = s.sparsity() == null ? null : DenseWarmup.of(s.sparsity(), steps);
        double[] loss = {Double.NaN, Double.NaN};
        try (LoraTrainer tr = new LoraTrainer(base.model, lora, opt)) {
            if (planner != null) tr.setSparsePlanner(planner);
            if (!gpu) tr.setShapeBucket(0);
            for (int step = 0; step < steps; step++) {
                Batch b = batcher.next();
                StepResult r = tr.computeGradients(b, step, schedule != null && schedule.sparseAt(step));
                tr.applyUpdate(step, r.outputTokens());
                if (step == 0) loss[0] = r.meanLoss();
                loss[1] = r.meanLoss();
            }
        } finally {
            if (planner != null) planner.close();
        }
        if (batcher.truncatedRows() > 0) throw new IllegalStateException("leave-one-out rows were truncated: their lengths were checked against " + s.maxLen());
        return loss;
    }

    /**
     * Attempts for one test input: one greedy generation per augmentation that fits, all augmented
     * prompts generated together as one batch (the KV cache batched on the model's backend), each
     * answer inverted and voted by count, then by its mean log-probability (the generated grid and its
     * EOS, read off the generation itself); null when no augmented prompt fits. Candidates that do not
     * decode to a grid are dropped.
     */
    private int[][][] answer(ArcTask task, int[][] input, int testIndex, LoraAdapter lora) {
        List<Augmentation> augs = Augmentation.plan(s.augmentations(), task.train().size(), s.seed() + 1 + testIndex, s.keepBackground());
        List<Augmentation> fitted = new ArrayList<>();
        List<int[]> prompts = new ArrayList<>();
        List<Integer> rooms = new ArrayList<>();
        for (Augmentation aug : augs) {
            int[] prompt = ArcFormat.prompt(aug.applyDemos(task.train()), aug.apply(input));
            int room = Math.min(ArcFormat.MAX_TARGET, s.maxLen() - prompt.length);
            if (room < 2) continue;
            fitted.add(aug);
            prompts.add(prompt);
            rooms.add(room);
        }
        if (fitted.isEmpty()) return null;
        int[] budgets = rooms.stream().mapToInt(Integer::intValue).toArray();
        int maxRoom = java.util.Arrays.stream(budgets).max().orElse(1);
        List<BatchGenerator.Result> outs = new BatchGenerator(base.model, lora)
                .generate(prompts, Generator.Options.greedy(maxRoom, ArcTokenizer.EOS), budgets);
        List<Voting.Candidate> candidates = new ArrayList<>();
        int malformed = 0;
        for (int i = 0; i < fitted.size(); i++) {
            BatchGenerator.Result r = outs.get(i);
            ArcFormat.Decoded d = ArcFormat.decode(r.ids(), r.stoppedAtEos());
            if (!d.ok()) {
                malformed++;
                continue;
            }
            candidates.add(new Voting.Candidate(fitted.get(i).invert(d.grid()), r.meanLogProb()));
        }
        if (malformed > 0) log.accept(task.id() + " test " + testIndex + ": " + malformed + " of " + fitted.size() + " generations were not a grid");
        return Voting.attempts(candidates);
    }
}
