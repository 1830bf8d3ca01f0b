package org.sparselora.actors.pipeline;

import java.time.Duration;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.sparselora.engine.sparse.ScoreExchange;

/**
 * One remote worker's side of the channel-score all-reduce: its planner calls
 * {@link #allReduceSum} on the Stepper's thread in the middle of the forward pass, which asks the
 * job's {@link ScoreHub} on the coordinator and blocks until the sum over all workers comes back
 * (the Stepper's thread is pinned and does nothing else meanwhile). The Stepper tells it the
 * generation of every step it starts ({@link WorkerFactory#beginStep}), so scores of a step the job
 * abandoned in a restart never mix into the rounds of the restarted one.
 */
public final class ClusterScoreExchange implements ScoreExchange {

    private final ActorSystem<?> system;
    private final ActorRef<ScoreHub.Command> hub;
    private final int worker;
    private final int workers;
    private final Duration timeout;
    private volatile long generation;
    private int step = -1;

    public ClusterScoreExchange(ActorSystem<?> system, ActorRef<ScoreHub.Command> hub, int worker, int workers, Duration timeout) {
        this.system = system;
        this.hub = hub;
        this.worker = worker;
        this.workers = workers;
        this.timeout = timeout;
    }

    void generation(long g) { generation = g; }

    @Override
    public int workers() { return workers; }

    @Override
    public void beginStep(int step, boolean participates) {
        this.step = step;
        if (!participates) hub.tell(new ScoreHub.Contribution(generation, step, -1, "", worker, true, null, null));
    }

    @Override
    public float[] allReduceSum(int layer, String what, float[] local) {
        if (step < 0) throw new IllegalStateException("worker " + worker + " exchanged scores before beginStep");
        long g = generation;
        int s = step;
        try {
            ScoreHub.Sum r = AskPattern.<ScoreHub.Command, ScoreHub.Sum>ask(hub,
                            reply -> new ScoreHub.Contribution(g, s, layer, what, worker, false, local, reply), timeout, system.scheduler())
                    .toCompletableFuture().get(timeout.toMillis() + 1000, TimeUnit.MILLISECONDS);
            return r.sum();
        } catch (TimeoutException | ExecutionException e) {
            throw new IllegalStateException("channel-score exchange of step " + (s + 1) + ", layer " + layer + " (" + what
                    + "): no sum from the coordinator within " + timeout, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while waiting for the channel scores of the other workers", e);
        }
    }

    @Override
    public String toString() { return "cluster score exchange worker " + worker + "/" + workers; }
}
