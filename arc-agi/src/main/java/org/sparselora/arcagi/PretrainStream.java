package org.sparselora.arcagi;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.sparselora.engine.model.Batch;

/**
 * The pretraining example stream: tasks (the training split only) visited epoch after epoch in a
 * seeded order; each visit makes one example — a random pair of the task (demonstrations and test
 * pairs alike) is the query, the other pairs are its demonstrations in random order, and the whole
 * example is rewritten by a random symmetry and colour permutation. Serialized with
 * {@link ArcFormat} ({@code prompt ++ target}); the loss is on every output grid and the EOS after
 * it (demonstrations' outputs included: each is a prediction from the pairs before it), never on
 * inputs or markers.
 *
 * <p>Packing: a row of {@code seqLen} tokens holds whole examples back to back (each begins with
 * BOS) and is left-padded to the row length. An example is never cut: one longer than
 * {@code seqLen} is skipped and counted ({@link #skipped()}).
 */
public final class PretrainStream {

    private final List<ArcTask> tasks;
    private final int seqLen;
    private final boolean keepBackground;
    private final SplittableRandom rnd;
    private int[] order;
    private int next, epoch;
    private long skipped, examples;
    private Example pending;

    /** One serialized example. @param loss per token: whether predicting it carries loss */
    public record Example(int[] tokens, boolean[] loss) {}

    public PretrainStream(List<ArcTask> tasks, int seqLen, long seed, boolean keepBackground) {
        if (tasks.isEmpty()) throw new IllegalArgumentException("no tasks to pretrain on");
        if (seqLen < 8) throw new IllegalArgumentException("sequence length must be >= 8, got " + seqLen);
        this.tasks = List.copyOf(tasks);
        this.seqLen = seqLen;
        this.keepBackground = keepBackground;
        this.rnd = new SplittableRandom(seed);
        reshuffle();
    }

    private void reshuffle() {
        order = Augmentation.randomOrder(rnd, tasks.size());
        next = 0;
    }

    public int epoch() { return epoch; }

    /** Examples skipped for being longer than a row. */
    public long skipped() { return skipped; }

    /** Examples emitted. */
    public long examples() { return examples; }

    /** The next example of the stream (any length). */
    public Example nextExample() {
        if (next == order.length) {
            epoch++;
            reshuffle();
        }
        ArcTask task = tasks.get(order[next++]);
        List<ArcTask.Pair> pairs = new ArrayList<>(task.train());
        for (ArcTask.Pair p : task.test()) if (p.output() != null) pairs.add(p);
        ArcTask.Pair query = pairs.remove(rnd.nextInt(pairs.size()));
        Augmentation aug = new Augmentation(rnd.nextInt(Augmentation.DIHEDRAL), Augmentation.randomColors(rnd, keepBackground),
                Augmentation.randomOrder(rnd, pairs.size()));
        return serialize(aug.applyDemos(pairs), aug.apply(query));
    }

    /** {@code prompt ++ target} with the loss on every output grid and its EOS. */
    static Example serialize(List<ArcTask.Pair> demos, ArcTask.Pair query) {
        int[] prompt = ArcFormat.prompt(demos, query.input()), target = ArcFormat.target(query.output());
        int[] tokens = new int[prompt.length + target.length];
        System.arraycopy(prompt, 0, tokens, 0, prompt.length);
        System.arraycopy(target, 0, tokens, prompt.length, target.length);
        boolean[] loss = new boolean[tokens.length];
        boolean inOutput = false;
        for (int i = 0; i < tokens.length; i++) {
            int t = tokens[i];
            if (t == ArcTokenizer.OUTPUT) inOutput = true;
            else if (t == ArcTokenizer.INPUT || t == ArcTokenizer.BOS) inOutput = false;
            else if (inOutput) loss[i] = true;   // cells, row ends and the EOS closing the output
            if (t == ArcTokenizer.EOS) inOutput = false;
        }
        return new Example(tokens, loss);
    }

    /** The next batch: {@code rows} rows of {@code seqLen} tokens, each packed with whole examples. */
    public Batch nextBatch(int rows) {
        int n = rows * seqLen;
        int[] tokens = new int[n], targets = new int[n], positions = new int[n], keyStart = new int[rows];
        for (int r = 0; r < rows; r++) {
            List<Example> row = new ArrayList<>();
            int used = 0;
            while (true) {
                Example e = pending != null ? pending : nextFitting();
                pending = null;
                if (used + e.tokens().length > seqLen) {
                    pending = e;
                    break;
                }
                row.add(e);
                used += e.tokens().length;
                examples++;
            }
            int pad = seqLen - used, base = r * seqLen;
            keyStart[r] = pad;
            for (int i = 0; i < pad; i++) {
                tokens[base + i] = ArcTokenizer.PAD;
                targets[base + i] = Batch.IGNORE;
            }
            int at = base + pad, pos = 0;
            for (Example e : row)
                for (int i = 0; i < e.tokens().length; i++, at++) {
                    tokens[at] = e.tokens()[i];
                    positions[at] = pos++;
                }
            // the target of a position is the next token of the same example where that token carries loss
            at = base + pad;
            for (Example e : row)
                for (int i = 0; i < e.tokens().length; i++, at++)
                    targets[at] = i + 1 < e.tokens().length && e.loss()[i + 1] ? e.tokens()[i + 1] : Batch.IGNORE;
        }
        return new Batch(rows, seqLen, tokens, targets, positions, keyStart);
    }

    private Example nextFitting() {
        for (int tries = 0; ; tries++) {
            Example e = nextExample();
            if (e.tokens().length <= seqLen) return e;
            skipped++;
            if (tries > 100 * tasks.size())
                throw new IllegalArgumentException("no pretraining example fits " + seqLen + " tokens: raise --seq-len");
        }
    }
}
