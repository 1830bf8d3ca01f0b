package org.sparselora.actors.pipeline;

import java.util.HashMap;
import java.util.Map;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.javadsl.Behaviors;

/**
 * The channel-score all-reduce of sparse steps when a job's workers live in other JVMs (one per job,
 * on the coordinator, a child of the JobSupervisor). SparseLoRA keeps one channel set per layer per
 * step for the whole global batch; every selection score is a sum of squares over the batch, so
 * each worker sends its per-channel sums ({@link Contribution}) and gets back the sum over all
 * participating workers, added in worker order, so every worker runs the top-k on bit-identical
 * scores and keeps the channels one worker would keep on the union batch. A worker whose shard has
 * no sparse token abstains for the step. Generations: a restart ({@link NewGeneration}) releases
 * every worker still waiting with its own sums (its step is abandoned) and ignores older ones.
 */
public final class ScoreHub {

    public sealed interface Command permits Contribution, NewGeneration {}

    /** A worker's scores of ({@code layer}, {@code what}) at {@code step}; {@code abstain}: none this step. */
    public record Contribution(long generation, int step, int layer, String what, int worker, boolean abstain, float[] scores,
                               ActorRef<Sum> replyTo) implements Command, ClusterMessage {}

    /** The sum over the workers (or, for a released or stale contributor, its own scores). */
    public record Sum(long generation, int step, int layer, String what, float[] sum) implements ClusterMessage {}

    public record NewGeneration(long generation) implements Command, LocalMessage {}

    private record Key(int step, int layer, String what) {}

    public static Behavior<Command> create(int workers, long generation) {
        return Behaviors.setup(ctx -> new ScoreHub(workers, generation).behaviour());
    }

    private final int workers;
    private long generation;
    private final Map<Key, Contribution[]> rounds = new HashMap<>();
    private final Map<Integer, boolean[]> abstaining = new HashMap<>();

    private ScoreHub(int workers, long generation) {
        this.workers = workers;
        this.generation = generation;
    }

    private Behavior<Command> behaviour() {
        return Behaviors.receive(Command.class)
                .onMessage(NewGeneration.class, m -> {
                    generation = m.generation();
                    for (Contribution[] parts : rounds.values())
                        for (Contribution c : parts) if (c != null) release(c);
                    rounds.clear();
                    abstaining.clear();
                    return Behaviors.same();
                })
                .onMessage(Contribution.class, m -> {
                    if (m.generation() != generation) {
                        if (!m.abstain()) release(m);
                        return Behaviors.same();
                    }
                    if (m.abstain()) {
                        abstaining.computeIfAbsent(m.step(), s -> new boolean[workers])[m.worker()] = true;
                        abstaining.keySet().removeIf(s -> s < m.step() - 1);
                        // rounds of this step may now be complete without it
                        for (Key k : rounds.keySet().toArray(Key[]::new)) if (k.step() == m.step()) tryComplete(k);
                        return Behaviors.same();
                    }
                    Key k = new Key(m.step(), m.layer(), m.what());
                    Contribution[] parts = rounds.computeIfAbsent(k, x -> new Contribution[workers]);
                    if (parts[m.worker()] != null)
                        throw new IllegalStateException("worker " + m.worker() + " sent " + m.what() + " scores of layer " + m.layer()
                                + " twice at step " + (m.step() + 1));
                    parts[m.worker()] = m;
                    tryComplete(k);
                    return Behaviors.same();
                })
                .build();
    }

    private void tryComplete(Key k) {
        Contribution[] parts = rounds.get(k);
        boolean[] out = abstaining.get(k.step());
        for (int w = 0; w < workers; w++) if (parts[w] == null && (out == null || !out[w])) return;
        float[] sum = null;
        for (Contribution c : parts) {   // worker order: the same float additions whatever the arrival order
            if (c == null) continue;
            if (sum == null) sum = c.scores().clone();
            else {
                if (c.scores().length != sum.length)
                    throw new IllegalStateException("workers disagree on the number of " + k.what() + " channels of layer " + k.layer()
                            + ": " + sum.length + " vs " + c.scores().length);
                for (int i = 0; i < sum.length; i++) sum[i] += c.scores()[i];
            }
        }
        rounds.remove(k);
        for (Contribution c : parts) if (c != null) c.replyTo().tell(new Sum(generation, k.step(), k.layer(), k.what(), sum));
    }

    private static void release(Contribution c) {
        c.replyTo().tell(new Sum(c.generation(), c.step(), c.layer(), c.what(), c.scores()));
    }
}
