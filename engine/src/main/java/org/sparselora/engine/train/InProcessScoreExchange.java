package org.sparselora.engine.train;

import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.sparse.ScoreExchange;

/**
 * The {@link ScoreExchange} of N data-parallel workers in one JVM (each on its own thread): one
 * rendezvous per (step, layer, what) at which every participating worker deposits its per-channel
 * sums of squares; the last to arrive sums them <em>in worker order</em> (so the result does not
 * depend on arrival order and is bit-identical for everyone) and all of them get that one array.
 *
 * <p>Failures. A worker that never arrives makes the others give up after {@code timeout} with an
 * error naming the missing workers. When a job restarts workers, {@link #reset} (or
 * {@link #workerStarting} for a replacement worker) starts a new epoch: every worker still waiting in
 * the old epoch is released at once with its own local sums — its step belongs to a generation the
 * job has abandoned, so those gradients are thrown away — and every later call of that stale step
 * returns at once too. A worker takes part in the new epoch only once it has <em>rejoined</em>: a
 * replacement when it is created ({@link #workerStarting}), a survivor when it is restored to the
 * checkpoint ({@link #rejoin}, which {@link #member} does from {@link TrainingWorker#restore}). Until
 * then its steps are stale, so a survivor that starts one more step of the abandoned generation
 * after the reset neither blocks nor mixes into the new rounds.
 */
public final class InProcessScoreExchange {

    private final int workers;
    private final long timeoutNanos;
    private final Duration timeout;
    private long epoch;
    private final Map<Key, Round> rounds = new HashMap<>();
    /** Workers that sit out a step of the current epoch (their shard has no sparse token). */
    private final Map<Integer, BitSet> abstaining = new HashMap<>();
    private final BitSet started = new BitSet();
    /** The epoch each worker last (re)joined; a step begun in another epoch is stale. */
    private final long[] joined;
    private String lastReset;

    private record Key(long epoch, int step, int layer, String what) {}

    private static final class Round {
        final float[][] parts;
        float[] sum;
        int taken;

        Round(int workers) { parts = new float[workers][]; }
    }

    public InProcessScoreExchange(int workers, Duration timeout) {
        if (workers < 1) throw new IllegalArgumentException("workers must be at least 1, got " + workers);
        if (timeout.isNegative() || timeout.isZero()) throw new IllegalArgumentException("timeout must be positive, got " + timeout);
        this.workers = workers;
        this.timeout = timeout;
        this.timeoutNanos = timeout.toNanos();
        this.joined = new long[workers];
    }

    public int workers() { return workers; }

    /** Worker {@code w}'s side of the exchange (its planner keeps it across restarts). */
    public ScoreExchange worker(int w) {
        Objects.checkIndex(w, workers);
        return new View(w);
    }

    /**
     * Called when worker {@code w} is (re)created: a second creation of the same index means the job
     * replaced a failed worker, so the epoch is reset and the survivors stop waiting for the old one.
     */
    public synchronized void workerStarting(int w) {
        Objects.checkIndex(w, workers);
        if (started.get(w)) reset("worker " + w + " was replaced");
        started.set(w);
        joined[w] = epoch;
    }

    /** Worker {@code w} was restored to the job's checkpoint after a reset: its next step takes part again. */
    public synchronized void rejoin(int w) {
        Objects.checkIndex(w, workers);
        joined[w] = epoch;
    }

    /**
     * Worker {@code w}'s training worker, wrapped so that restoring it (the job's restart path)
     * {@link #rejoin rejoins} this exchange. {@link Member#inner()} is the wrapped worker.
     */
    public Member member(int w, TrainingWorker inner) {
        Objects.checkIndex(w, workers);
        return new Member(this, w, inner);
    }

    /** A {@link TrainingWorker} of this exchange: delegates everything, and rejoins on restore. */
    public static final class Member implements TrainingWorker {
        private final InProcessScoreExchange exchange;
        private final int worker;
        private final TrainingWorker inner;

        private Member(InProcessScoreExchange exchange, int worker, TrainingWorker inner) {
            this.exchange = exchange;
            this.worker = worker;
            this.inner = Objects.requireNonNull(inner, "inner");
        }

        public int worker() { return worker; }

        public TrainingWorker inner() { return inner; }

        /** This member's side of the exchange, for its planner. */
        public ScoreExchange scores() { return exchange.worker(worker); }

        @Override public StepResult computeGradients(Batch batch, int step, boolean sparse) { return inner.computeGradients(batch, step, sparse); }
        @Override public float[][] gradientsToHost() { return inner.gradientsToHost(); }
        @Override public void gradientsFromHost(float[][] grads) { inner.gradientsFromHost(grads); }
        @Override public float applyUpdate(int step, long totalOutputTokens) { return inner.applyUpdate(step, totalOutputTokens); }
        @Override public TrainerState state() { return inner.state(); }

        @Override
        public void restore(TrainerState state) {
            inner.restore(state);
            exchange.rejoin(worker);
        }

        @Override public void close() { inner.close(); }
    }

    /** Abandons every round in progress: waiting workers return their own sums; the next steps start afresh. */
    public synchronized void reset(String why) {
        lastReset = why;
        epoch++;
        rounds.clear();
        abstaining.clear();
        notifyAll();
    }

    /** The current epoch (bumped by every reset). */
    public synchronized long epoch() { return epoch; }

    private synchronized void begin(View v, int step, boolean participates) {
        v.step = step;
        // a worker that has not rejoined since the last reset is still running the abandoned generation
        v.epoch = joined[v.worker] == epoch ? epoch : -1;
        if (v.epoch != epoch) return;
        // steps of one epoch advance in lock-step, so nothing older than the previous step is still needed
        abstaining.keySet().removeIf(s -> s < step - 1);
        if (!participates) {
            abstaining.computeIfAbsent(step, s -> new BitSet()).set(v.worker);
            notifyAll();   // rounds of this step may now be complete without this worker
        }
    }

    private synchronized float[] reduce(View v, int layer, String what, float[] local) {
        if (v.step < 0) throw new IllegalStateException("worker " + v.worker + " exchanged scores before beginStep");
        if (v.epoch != epoch) return local;   // a step the job abandoned in a restart: its result is discarded
        Key key = new Key(v.epoch, v.step, layer, what);
        Round r = rounds.computeIfAbsent(key, k -> new Round(workers));
        if (r.parts[v.worker] != null)
            throw new IllegalStateException("worker " + v.worker + " sent " + what + " scores of layer " + layer
                    + " twice at step " + (v.step + 1));
        for (float[] p : r.parts)
            if (p != null && p.length != local.length)
                throw new IllegalArgumentException("workers disagree on the number of " + what + " channels of layer " + layer
                        + ": " + p.length + " vs " + local.length);
        r.parts[v.worker] = local;
        long deadline = System.nanoTime() + timeoutNanos;
        while (true) {
            if (v.epoch != epoch) return local;
            if (r.sum == null && complete(r, v.step)) {
                r.sum = sum(r.parts);
                notifyAll();
            }
            if (r.sum != null) {
                int contributors = 0;
                for (float[] p : r.parts) if (p != null) contributors++;
                if (++r.taken == contributors) rounds.remove(key);
                return r.sum;
            }
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                List<Integer> missing = new ArrayList<>();
                BitSet out = abstaining.get(v.step);
                for (int w = 0; w < workers; w++) if (r.parts[w] == null && (out == null || !out.get(w))) missing.add(w);
                throw new IllegalStateException("channel-score exchange of step " + (v.step + 1) + ", layer " + layer + " (" + what
                        + "): no scores from worker(s) " + missing + " within " + timeout
                        + (lastReset == null ? "" : " (last restart: " + lastReset + ")"));
            }
            try {
                wait(Math.max(1, left / 1_000_000), 0);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while waiting for the channel scores of the other workers", e);
            }
        }
    }

    private boolean complete(Round r, int step) {
        BitSet out = abstaining.get(step);
        for (int w = 0; w < workers; w++) if (r.parts[w] == null && (out == null || !out.get(w))) return false;
        return true;
    }

    /** Σ_w parts[w] in worker order (absent workers skipped), in float like one worker's sum would be. */
    private static float[] sum(float[][] parts) {
        float[] s = null;
        for (float[] p : parts) {
            if (p == null) continue;
            if (s == null) s = p.clone();
            else for (int i = 0; i < s.length; i++) s[i] += p[i];
        }
        return s;
    }

    private final class View implements ScoreExchange {
        final int worker;
        long epoch = -1;   // the epoch of the step in progress; -1: stale (or none yet)
        int step = -1;

        View(int worker) { this.worker = worker; }

        @Override public int workers() { return workers; }

        @Override public void beginStep(int step, boolean participates) { begin(this, step, participates); }

        @Override public float[] allReduceSum(int layer, String what, float[] local) { return reduce(this, layer, what, local); }

        @Override public String toString() { return "score exchange worker " + worker + "/" + workers; }
    }
}
