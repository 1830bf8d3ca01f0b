package org.sparselora.arcagi;

import java.util.ArrayList;
import java.util.List;
import org.sparselora.engine.data.TokenizedExample;

/**
 * A task's test-time-training data, leave-one-out: from n demonstrations, n smaller tasks each
 * holding out one demonstration as the query (the other n−1 are its demonstrations), each under
 * augmentations ({@link Augmentation#plan}: the unaugmented task first). Examples are taken
 * round-robin over the held-out index — every held-out demonstration once per augmentation — until
 * the budget is reached. An example longer than {@code maxLen} tokens is left out and counted,
 * never cut. A task with one demonstration has no leave-one-out data.
 */
public final class LeaveOneOut {

    private LeaveOneOut() {}

    /** @param tooLong examples left out because prompt + target exceed the length limit */
    public record Data(List<TokenizedExample> examples, int tooLong) {}

    /**
     * @param budget         examples wanted (at most this many are returned)
     * @param keepBackground colour 0 is never permuted
     */
    public static Data examples(ArcTask task, int budget, int maxLen, long seed, boolean keepBackground) {
        int n = task.train().size();
        List<TokenizedExample> out = new ArrayList<>();
        if (n < 2 || budget <= 0) return new Data(out, 0);
        int rounds = (budget + n - 1) / n;
        List<Augmentation> augs = Augmentation.plan(rounds, n - 1, seed, keepBackground);
        int tooLong = 0;
        for (int a = 0; a < rounds && out.size() < budget; a++)
            for (int i = 0; i < n && out.size() < budget; i++) {
                List<ArcTask.Pair> rest = new ArrayList<>(task.train());
                ArcTask.Pair held = rest.remove(i);
                Augmentation aug = augs.get(a);
                ArcTask.Pair q = aug.apply(held);
                int[] prompt = ArcFormat.prompt(aug.applyDemos(rest), q.input()), target = ArcFormat.target(q.output());
                if (prompt.length + target.length > maxLen) {
                    tooLong++;
                    continue;
                }
                out.add(new TokenizedExample(prompt, target, null, a * n + i));
            }
        return new Data(out, tooLong);
    }
}
