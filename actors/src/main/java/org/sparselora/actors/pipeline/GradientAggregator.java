package org.sparselora.actors.pipeline;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.sparselora.engine.train.GradientExchange;
import org.sparselora.engine.train.StepResult;

/**
 * The all-reduce of one training step, as a short-lived per-round actor (scatter-gather): it waits
 * for the gradient shard of each of the N Steppers, sums them in worker order (deterministic) and
 * sends every Stepper the sum and the global output-token count, then stops. Gradients are sums
 * over output tokens, so the sum over workers equals one worker's gradient on the union batch.
 * Two ways to sum, chosen by the JobSupervisor: when every worker's backend lives in this JVM the
 * engine provides a {@link GradientExchange} and the shards are only "gradients ready" notices (no
 * arrays; the worker index is the handle into the exchange) — the round runs the exchange once all
 * N arrived (on the devices: peer copies + adds in worker order, the sum written back into every
 * worker's buffer) and replies without arrays; otherwise (workers in other JVMs, cluster messages)
 * shards carry {@code float[][]} host copies, summed here. The two give the same bits on the CPU.
 * With one worker, shards carry no gradients (no host round trip) and the round only relays the
 * token count. If the summed loss is NaN/inf the round tells the workers to skip the update. If not
 * every shard arrives within the timeout the round reports {@link JobSupervisor.RoundTimedOut}
 * (naming the missing workers) and stops.
 */
public final class GradientAggregator {

    public sealed interface Command permits Contribute, Timeout {}

    /** A worker's shard: gradients (null with one worker or with a device exchange) and its step statistics. */
    public record Contribute(long generation, int step, int worker, float[][] grads, StepResult stats,
                             ActorRef<Stepper.Command> stepper) implements Command, ClusterMessage {}

    private enum Timeout implements Command, LocalMessage { INSTANCE }

    /** A host-path round (shards carry their gradients as arrays). */
    public static Behavior<Command> round(long generation, int step, int workers, Duration timeout,
                                          ActorRef<JobSupervisor.Command> supervisor) {
        return round(generation, step, workers, null, timeout, supervisor);
    }

    /**
     * @param exchange the in-process device exchange the workers registered their gradient buffers
     *                 with (shards then carry no arrays); null: the host path
     */
    public static Behavior<Command> round(long generation, int step, int workers, GradientExchange exchange, Duration timeout,
                                          ActorRef<JobSupervisor.Command> supervisor) {
        return Behaviors.setup(ctx -> Behaviors.withTimers(timers -> {
            timers.startSingleTimer(Timeout.INSTANCE, timeout);
            return new Round(ctx, generation, step, workers, exchange, supervisor).behaviour();
        }));
    }

    private static final class Round {
        private final ActorContext<Command> ctx;
        private final long generation;
        private final int step;
        private final Contribute[] shards;
        private final ActorRef<JobSupervisor.Command> supervisor;
        private final GradientExchange exchange;
        private int received;

        Round(ActorContext<Command> ctx, long generation, int step, int workers, GradientExchange exchange,
              ActorRef<JobSupervisor.Command> supervisor) {
            this.ctx = ctx;
            this.exchange = exchange;
            this.generation = generation;
            this.step = step;
            this.shards = new Contribute[workers];
            this.supervisor = supervisor;
        }

        Behavior<Command> behaviour() {
            return Behaviors.receive(Command.class)
                    .onMessage(Contribute.class, this::onContribute)
                    .onMessageEquals(Timeout.INSTANCE, this::onTimeout)
                    .build();
        }

        private Behavior<Command> onContribute(Contribute c) {
            if (c.generation() != generation || c.step() != step || c.worker() < 0 || c.worker() >= shards.length
                    || shards[c.worker()] != null) {
                ctx.getLog().warn("round {} ignores a stray shard (worker {}, step {}, generation {})", step, c.worker(), c.step(), c.generation());
                return Behaviors.same();
            }
            shards[c.worker()] = c;
            if (++received < shards.length) return Behaviors.same();
            reduce();
            return Behaviors.stopped();
        }

        private void reduce() {
            long totalOut = 0;
            double loss = 0;
            for (Contribute c : shards) {
                totalOut += c.stats().outputTokens();
                loss += c.stats().lossSum();
            }
            boolean skip = !Double.isFinite(loss);
            float[][] sum = null;
            if (shards.length > 1 && exchange != null) {
                for (Contribute c : shards)
                    if (c.grads() != null)
                        throw new IllegalStateException("worker " + c.worker() + " sent gradient arrays to a device-exchange round");
                if (!skip) exchange.allReduce();   // a skipped update uses no gradients (as on the host path)
            } else if (shards.length > 1) {
                sum = new float[shards[0].grads().length][];
                for (int t = 0; t < sum.length; t++) sum[t] = shards[0].grads()[t].clone();
                for (int w = 1; w < shards.length; w++) {
                    float[][] g = shards[w].grads();
                    if (g == null || g.length != sum.length)
                        throw new IllegalStateException("worker " + w + " sent " + (g == null ? "no" : g.length) + " gradient tensors, expected " + sum.length);
                    for (int t = 0; t < sum.length; t++) {
                        if (g[t].length != sum[t].length)
                            throw new IllegalStateException("worker " + w + " gradient " + t + " has " + g[t].length + " values, expected " + sum[t].length);
                        for (int i = 0; i < sum[t].length; i++) sum[t][i] += g[t][i];
                    }
                }
            }
            for (int w = 0; w < shards.length; w++) {
                // each worker gets its own buffer: a worker may scale its gradients in place
                float[][] mine = sum == null ? null : (w == 0 ? sum : deepCopy(sum));
                shards[w].stepper().tell(new Stepper.Reduced(generation, step, mine, totalOut, skip));
            }
        }

        private Behavior<Command> onTimeout() {
            List<Integer> missing = new ArrayList<>();
            for (int w = 0; w < shards.length; w++) if (shards[w] == null) missing.add(w);
            supervisor.tell(new JobSupervisor.RoundTimedOut(generation, step, missing));
            return Behaviors.stopped();
        }

        private static float[][] deepCopy(float[][] a) {
            float[][] c = new float[a.length][];
            for (int i = 0; i < a.length; i++) c[i] = a[i].clone();
            return c;
        }
    }
}
