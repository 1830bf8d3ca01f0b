package org.sparselora.actors.pipeline;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.ChildFailed;
import org.apache.pekko.actor.typed.PostStop;
import org.apache.pekko.actor.typed.Terminated;
import org.apache.pekko.actor.typed.javadsl.AbstractBehavior;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.javadsl.Receive;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.StepResult;
import org.sparselora.engine.train.TrainerState;
import org.sparselora.proto.cluster.Checkpoint;
import org.sparselora.proto.control.CheckpointSaved;
import org.sparselora.proto.control.DataReport;
import org.sparselora.proto.control.JobEvent;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;
import org.sparselora.proto.control.Progress;
import org.sparselora.proto.control.Restarted;
import org.sparselora.proto.control.StateChange;
import org.sparselora.proto.control.StepMetrics;

/**
 * Owns one training job: its DataLoader, Predictor, N Steppers and the per-step GradientAggregator
 * rounds. It drives the step loop (batch → split over workers → round → acknowledgements →
 * metrics row), holds the first sparse step until the predictor is ready, checkpoints every
 * {@code checkpoint_every} steps and at stop ({@link CheckpointStore}: adapter + AdamW state, step,
 * data position, RNG state; written in order on one IO thread, temp file + rename), and handles
 * faults: a failed or timed-out Stepper is replaced, every other Stepper and the DataLoader are
 * reset to the last checkpoint, and the metrics file is cut back to it, so the finished job equals
 * an uninterrupted one. It gives up with a clear reason after more than {@code maxRestarts}
 * failures, or when the loss stays NaN/inf for {@code maxNonFiniteSteps} consecutive steps (such
 * updates are skipped meanwhile). Everything observable is published as a {@link JobEvent}.
 */
public final class JobSupervisor extends AbstractBehavior<JobSupervisor.Command> {

    public interface Command {}

    public record StepperReady(long generation, int worker, ActorRef<Stepper.Command> stepper) implements Command, LocalMessage {}

    /** A worker applied (or skipped) the update of {@code step}. */
    public record StepApplied(long generation, int step, int worker, double lr, StepResult stats, boolean skipped, AggTimes times)
            implements Command, ClusterMessage {}

    /**
     * A worker's {@code System.nanoTime()} stamps of one step's gradient aggregation: its backward
     * pass ended, its shard was sent (after the host copy on the host path), the summed gradients were
     * in place. Comparable across workers of one JVM (the only place the figures are computed).
     */
    public record AggTimes(long backwardEnd, long contributed, long sumReady) {}

    public record RoundTimedOut(long generation, int step, List<Integer> missingWorkers) implements Command, ClusterMessage {}

    public record StateSnapshot(long generation, TrainerState state, int worker) implements Command, LocalMessage {}

    /** {@code output_dir/replicas.json}: written at a clean stop with N > 1 workers. */
    public static final String REPLICAS_FILE = "replicas.json";

    /** Stop after the current step, with a final checkpoint. */
    public record Cancel(String reason) implements Command, LocalMessage {}

    private record DataEvent(DataLoader.Event event) implements Command, LocalMessage {}

    private record PredictorEvent(Predictor.Event event) implements Command, LocalMessage {}

    private record CheckpointDone(long generation, int step, boolean last, Throwable error) implements Command, LocalMessage {}

    private record ExportDone(Throwable error) implements Command, LocalMessage {}

    /** Fault-handling knobs; the defaults suit real jobs, tests shorten the timeout. */
    public record Settings(Duration roundTimeout, int maxRestarts, int maxNonFiniteSteps, PredictorCache predictorCache) {
        public static Settings defaults() { return new Settings(Duration.ofMinutes(30), 3, 3, PredictorCache.shared()); }

        public Settings withRoundTimeout(Duration d) { return new Settings(d, maxRestarts, maxNonFiniteSteps, predictorCache); }
    }

    private enum Phase { STARTING, ALIGNING, IDLE, WAITING_DATA, WAITING_PREDICTOR, STEPPING, CHECKPOINTING, STOPPING }

    /**
     * @param spec a validated spec whose sparsity is inline (see JobSpecs.resolveSparsity)
     */
    public static Behavior<Command> create(String jobId, JobSpec spec, JobRuntime runtime, JobListener listener, Settings settings) {
        return Behaviors.setup(ctx -> {
            Events events = new Events(jobId, listener);
            CheckpointStore store = new CheckpointStore(Path.of(spec.getOutputDir()));
            Checkpoint resumeFrom = null;
            try {
                store.removeStaleTemps();
                if (spec.getResume()) {
                    resumeFrom = store.read();
                    checkCompatible(spec, resumeFrom);
                } else if (store.exists()) {
                    throw new IllegalArgumentException("output_dir " + spec.getOutputDir()
                            + " already holds a checkpoint: resume the job (train --resume / ResumeJob) or choose another output_dir");
                }
            } catch (Exception e) {
                events.state(JobState.FAILED, DataLoader.message(e));
                closeQuietly(runtime);
                return Behaviors.stopped();
            }
            return new JobSupervisor(ctx, spec, runtime, events, settings, store, resumeFrom);
        });
    }

    private final JobSpec spec;
    private final JobRuntime runtime;
    private final Events events;
    private final Settings settings;
    private final CheckpointStore store;
    private final MetricsLog metrics;
    private final SparseSchedule schedule;
    private final int workers;
    private final int total;
    private final ExecutorService checkpointIo;
    private final ActorRef<DataLoader.Command> dataLoader;
    private final ActorRef<DataLoader.Event> dataAdapter;
    private final ActorRef<Command> self;

    private Phase phase = Phase.STARTING;
    private final ActorRef<Stepper.Command>[] steppers;
    private final boolean[] ready;
    private long generation;
    private int step;
    private DataPosition position;
    private long seekGeneration;
    private DataLoader.Loaded nextBatch;
    private boolean dataRequested;
    private PredictorFactors factors;
    private ActorRef<GradientAggregator.Command> round;
    private StepApplied[] applied;
    private long stepStartNanos;
    private Checkpoint lastCheckpoint;
    private TrainerState lastState;
    private int failures;
    private int nonFiniteStreak;
    private String cancelReason;
    private JobState finalState;
    private String finalReason;
    private JobState published = JobState.STARTING;
    private TrainerState[] replicas;   // at a clean stop with N > 1: every worker's final state

    @SuppressWarnings("unchecked")
    private JobSupervisor(ActorContext<Command> ctx, JobSpec spec, JobRuntime runtime, Events events, Settings settings,
                          CheckpointStore store, Checkpoint resumeFrom) throws IOException {
        super(ctx);
        this.spec = spec;
        this.runtime = runtime;
        this.events = events;
        this.settings = settings;
        this.store = store;
        this.self = ctx.getSelf();
        this.workers = spec.getWorkers();
        this.total = spec.getSteps();
        this.schedule = SparseSchedule.of(spec.getSparsity(), total);
        this.metrics = new MetricsLog(Path.of(spec.getOutputDir()));
        this.checkpointIo = Executors.newSingleThreadExecutor(Thread.ofPlatform().name("checkpoint-io").daemon().factory());
        this.steppers = new ActorRef[workers];
        this.ready = new boolean[workers];
        if (resumeFrom != null) {
            lastCheckpoint = resumeFrom;
            lastState = CheckpointStore.toTrainerState(resumeFrom);
            step = resumeFrom.getStep();
            position = CheckpointStore.toPosition(resumeFrom.getData());
        } else {
            position = DataPosition.START;
        }
        metrics.openAt(step);
        events.state(JobState.STARTING, resumeFrom != null ? "resuming from step " + step : "starting");

        dataAdapter = ctx.messageAdapter(DataLoader.Event.class, DataEvent::new);
        dataLoader = ctx.spawn(DataLoader.create(runtime.data(), Math.max(1, spec.getPrefetch()), position, dataAdapter), "data-loader");
        if (schedule.anySparse() && step < schedule.endExclusive()) {
            if (runtime.predictor() == null)
                throw new IllegalArgumentException("sparsity: the job has sparse steps but the engine provided no predictor builder");
            ctx.spawn(Predictor.create(runtime.predictor(), settings.predictorCache(),
                    ctx.messageAdapter(Predictor.Event.class, PredictorEvent::new)), "predictor");
        }
        for (int w = 0; w < workers; w++) spawnStepper(w, lastState, step);
    }

    @Override
    public Receive<Command> createReceive() {
        return newReceiveBuilder()
                .onMessage(StepperReady.class, this::onStepperReady)
                .onMessage(StepApplied.class, this::onStepApplied)
                .onMessage(RoundTimedOut.class, this::onRoundTimedOut)
                .onMessage(StateSnapshot.class, this::onSnapshot)
                .onMessage(Cancel.class, this::onCancel)
                .onMessage(DataEvent.class, this::onData)
                .onMessage(PredictorEvent.class, this::onPredictor)
                .onMessage(CheckpointDone.class, this::onCheckpointDone)
                .onMessage(ExportDone.class, this::onExportDone)
                .onSignal(ChildFailed.class, s -> s.getCause() instanceof LinkageError
                        // a missing native library or class: restarting cannot help
                        ? fail("a worker cannot run: " + DataLoader.firstLine(s.getCause()))
                        : onChildGone(s.getRef(), "crashed: " + DataLoader.firstLine(s.getCause()), true))
                .onSignal(Terminated.class, s -> onChildGone(s.getRef(), "stopped unexpectedly", false))
                .onSignal(PostStop.class, s -> onPostStop())
                .build();
    }

    // ---- workers -------------------------------------------------------------------------------

    private void spawnStepper(int w, TrainerState state, int atStep) {
        ActorRef<Stepper.Command> ref = getContext().spawn(
                Stepper.create(w, workers, generation, runtime.workers(), state, atStep, factors, schedule, exchange() != null, self),
                "stepper-" + w + "-g" + generation, Stepper.dispatcher());
        getContext().watch(ref);
        steppers[w] = ref;
        ready[w] = false;
    }

    /**
     * The device-side gradient exchange when there is something to exchange and the engine offers
     * one (every worker's backend in this JVM); null: the host path ({@code float[][]} shards).
     */
    private org.sparselora.engine.train.GradientExchange exchange() {
        return workers > 1 ? runtime.exchange() : null;
    }

    private Behavior<Command> onStepperReady(StepperReady m) {
        if (m.generation() != generation || !m.stepper().equals(steppers[m.worker()])) return this;
        ready[m.worker()] = true;
        for (boolean r : ready) if (!r) return this;
        if (phase != Phase.STARTING) return this;
        if (lastCheckpoint == null) {
            // align every replica with worker 0's initial adapter, and make that checkpoint 0
            phase = Phase.ALIGNING;
            steppers[0].tell(new Stepper.Snapshot(generation, self));
            return this;
        }
        phase = Phase.IDLE;
        return maybeStartStep();
    }

    private Behavior<Command> onChildGone(ActorRef<Void> ref, String cause, boolean failed) {
        for (int w = 0; w < workers; w++)
            if (steppers[w] != null && steppers[w].equals(ref)) {
                steppers[w] = null;
                return restart(new int[]{w}, "worker " + w + " " + cause);
            }
        // a round that crashed (inconsistent gradient shards) is a bug, not a worker fault
        if (failed && round != null && round.equals(ref)) return fail("gradient round of step " + (step + 1) + " " + cause);
        return this; // a replaced stepper, a finished round
    }

    private Behavior<Command> onRoundTimedOut(RoundTimedOut m) {
        if (m.generation() != generation || m.step() != step) return this;
        int[] missing = m.missingWorkers().stream().mapToInt(Integer::intValue).toArray();
        return restart(missing, "gradient round of step " + (step + 1) + " timed out after " + settings.roundTimeout()
                + " waiting for workers " + m.missingWorkers());
    }

    /** Replace the failed workers, reset everyone to the last checkpoint, continue from there. */
    private Behavior<Command> restart(int[] failed, String cause) {
        failures++;
        getContext().getLog().warn("job {}: {} (failure {} of at most {})", events.jobId, cause, failures, settings.maxRestarts());
        if (failures > settings.maxRestarts())
            return fail("gave up after " + failures + " worker failures; last: " + cause);
        generation++;
        if (round != null) getContext().stop(round);
        round = null;
        applied = null;
        finalState = null;
        for (int w : failed) {
            if (steppers[w] != null) {
                getContext().unwatch(steppers[w]);
                getContext().stop(steppers[w]);
            }
            steppers[w] = null;
        }
        int from = lastCheckpoint == null ? 0 : lastCheckpoint.getStep();
        for (int w = 0; w < workers; w++) {
            if (steppers[w] == null) spawnStepper(w, lastState, from);
            else {
                ready[w] = false;
                if (lastState != null) steppers[w].tell(new Stepper.Restore(generation, from, lastState, self));
                else { // failed before checkpoint 0 existed: start every worker afresh
                    getContext().unwatch(steppers[w]);
                    getContext().stop(steppers[w]);
                    spawnStepper(w, null, 0);
                }
            }
        }
        step = from;
        position = lastCheckpoint == null ? DataPosition.START : CheckpointStore.toPosition(lastCheckpoint.getData());
        nextBatch = null;
        dataRequested = false;
        seekGeneration++;
        dataLoader.tell(new DataLoader.Seek(position, seekGeneration));
        nonFiniteStreak = 0;
        try {
            metrics.openAt(step);
        } catch (IOException e) {
            return fail("metrics file: " + DataLoader.message(e));
        }
        events.emit(JobEvent.newBuilder().setRestarted(Restarted.newBuilder().setFromStep(step).setCause(cause).setAttempt(failures)));
        phase = Phase.STARTING;
        return this;
    }

    // ---- the step loop -------------------------------------------------------------------------

    private Behavior<Command> maybeStartStep() {
        if (phase != Phase.IDLE && phase != Phase.WAITING_DATA && phase != Phase.WAITING_PREDICTOR) return this;
        if (cancelReason != null) return stopWith(JobState.CANCELLED, cancelReason);
        if (step >= total) return stopWith(JobState.FINISHED, "finished " + total + " steps");
        if (schedule.isSparse(step) && factors == null) {
            if (phase != Phase.WAITING_PREDICTOR) publishState(JobState.BUILDING_PREDICTOR, "waiting for the SVD predictor before sparse step " + (step + 1));
            phase = Phase.WAITING_PREDICTOR;
            return this;
        }
        if (nextBatch == null) {
            phase = Phase.WAITING_DATA;
            if (!dataRequested) {
                dataRequested = true;
                dataLoader.tell(new DataLoader.Next(dataAdapter));
            }
            return this;
        }
        return runStep();
    }

    private Behavior<Command> runStep() {
        publishState(JobState.RUNNING, "running");
        Batch[] shards = split(nextBatch.batch(), workers);
        round = getContext().spawn(GradientAggregator.round(generation, step, workers, exchange(), settings.roundTimeout(), self),
                "round-g" + generation + "-s" + step);
        getContext().watch(round);
        applied = new StepApplied[workers];
        stepStartNanos = System.nanoTime();
        phase = Phase.STEPPING;
        for (int w = 0; w < workers; w++) steppers[w].tell(new Stepper.RunStep(generation, step, shards[w], round, self));
        return this;
    }

    private Behavior<Command> onStepApplied(StepApplied m) {
        if (m.generation() != generation || m.step() != step || phase != Phase.STEPPING || applied[m.worker()] != null) return this;
        applied[m.worker()] = m;
        for (StepApplied a : applied) if (a == null) return this;
        round = null;
        double lossSum = 0;
        long out = 0, tokens = 0, flops = 0, dense = 0, pred = 0;
        boolean sparse = false, skipped = false;
        for (StepApplied a : applied) {
            StepResult r = a.stats();
            lossSum += r.lossSum();
            out += r.outputTokens();
            tokens += r.tokens();
            flops += r.flops();
            dense += r.denseFlops();
            pred += r.predictorFlops();
            sparse |= r.sparse();
            skipped |= a.skipped();
        }
        double ms = (System.nanoTime() - stepStartNanos) / 1e6;
        AggFigures agg = aggregation(applied);
        StepMetrics row = StepMetrics.newBuilder().setStep(step + 1).setTotalSteps(total).setAggMs(agg.ms()).setAggOverlap(agg.overlap())
                .setLoss(out == 0 ? 0 : lossSum / out).setLr(applied[0].lr()).setSparse(sparse)
                .setFlops(flops).setDenseFlops(dense).setPredictorFlops(pred).setMs(ms).setTokens(tokens).setOutputTokens(out).build();
        try {
            metrics.append(row);
        } catch (IOException e) {
            return fail("metrics file " + metrics.file() + ": " + DataLoader.message(e));
        }
        events.emit(JobEvent.newBuilder().setStep(row));
        position = nextBatch.after();
        nextBatch = null;
        step++;
        nonFiniteStreak = skipped ? nonFiniteStreak + 1 : 0;
        if (nonFiniteStreak >= settings.maxNonFiniteSteps())
            return fail("loss is NaN/inf for " + nonFiniteStreak + " consecutive steps (steps " + (step - nonFiniteStreak + 1)
                    + "–" + step + "); those updates were skipped");
        int every = spec.getCheckpointEvery();
        if (every > 0 && step % every == 0 && step < total) {
            phase = Phase.CHECKPOINTING;
            steppers[0].tell(new Stepper.Snapshot(generation, self));
            return this;
        }
        phase = Phase.IDLE;
        return maybeStartStep();
    }

    /** One step's aggregation figures for metrics.jsonl. */
    record AggFigures(double ms, double overlap) {}

    /**
     * {@code agg_ms}: from the last worker's backward end to the last worker holding the sum.
     * {@code agg_overlap}: of all aggregation wall time — the part before the last backward end in
     * which some worker already copied its shard to the host (union of the intervals [backward end,
     * shard sent] clipped there), plus {@code agg_ms} — the fraction that ran while another worker
     * was still in its backward pass. The device exchange starts only when every shard is in, so its
     * overlap is 0 by design; the host path overlaps the early workers' device-to-host copies.
     */
    static AggFigures aggregation(StepApplied[] applied) {
        if (applied.length < 2) return new AggFigures(0, 0);
        long lastBackward = Long.MIN_VALUE, lastReady = Long.MIN_VALUE;
        for (StepApplied a : applied) {
            if (a.times() == null || a.times().backwardEnd() == 0) return new AggFigures(0, 0);
            lastBackward = Math.max(lastBackward, a.times().backwardEnd());
            lastReady = Math.max(lastReady, a.times().sumReady());
        }
        long after = Math.max(0, lastReady - lastBackward);
        long[][] iv = new long[applied.length][];
        for (int w = 0; w < applied.length; w++)
            iv[w] = new long[]{applied[w].times().backwardEnd(), Math.min(applied[w].times().contributed(), lastBackward)};
        Arrays.sort(iv, (x, y) -> Long.compare(x[0], y[0]));
        long before = 0, curFrom = Long.MIN_VALUE, curTo = Long.MIN_VALUE;
        for (long[] i : iv) {
            if (i[1] <= i[0]) continue;
            if (i[0] > curTo) {
                if (curTo > curFrom) before += curTo - curFrom;
                curFrom = i[0];
                curTo = i[1];
            } else curTo = Math.max(curTo, i[1]);
        }
        if (curTo > curFrom) before += curTo - curFrom;
        long all = before + after;
        return new AggFigures(after / 1e6, all == 0 ? 0 : (double) before / all);
    }

    private static Batch[] split(Batch b, int n) {
        if (b.batch() % n != 0) throw new IllegalStateException("batch of " + b.batch() + " rows does not split over " + n + " workers");
        int rows = b.batch() / n, t = b.seqLen();
        Batch[] out = new Batch[n];
        for (int w = 0; w < n; w++) {
            int from = w * rows * t, to = from + rows * t;
            out[w] = new Batch(rows, t, Arrays.copyOfRange(b.tokens(), from, to), Arrays.copyOfRange(b.targets(), from, to),
                    Arrays.copyOfRange(b.positions(), from, to), Arrays.copyOfRange(b.keyStart(), w * rows, (w + 1) * rows));
        }
        return out;
    }

    // ---- checkpoints -------------------------------------------------------------------------

    private Behavior<Command> onSnapshot(StateSnapshot m) {
        if (m.generation() != generation) return this;
        switch (phase) {
            case ALIGNING -> {
                takeCheckpoint(m.state(), false);
                phase = Phase.STARTING;
                if (workers == 1) {
                    phase = Phase.IDLE;
                    return maybeStartStep();
                }
                for (int w = 1; w < workers; w++) {
                    ready[w] = false;
                    steppers[w].tell(new Stepper.Restore(generation, step, lastState, self));
                }
                return this;
            }
            case CHECKPOINTING -> {
                takeCheckpoint(m.state(), false);
                phase = Phase.IDLE;
                return maybeStartStep();
            }
            case STOPPING -> {
                if (replicas == null) {
                    takeCheckpoint(m.state(), true);
                    return this;
                }
                if (m.worker() < 0 || m.worker() >= workers || replicas[m.worker()] != null) return this;
                replicas[m.worker()] = m.state();
                for (TrainerState r : replicas) if (r == null) return this;
                writeReplicaReport(replicas);
                if (lastCheckpoint != null && lastCheckpoint.getStep() == step) writeCheckpoint(null, true);
                else takeCheckpoint(replicas[0], true);
                return this;
            }
            default -> {
                return this;
            }
        }
    }

    private void takeCheckpoint(TrainerState state, boolean last) {
        Checkpoint c = CheckpointStore.fromTrainerState(state)
                .setJobName(spec.getName()).setStep(step).setData(CheckpointStore.toProto(position)).setSeed(spec.getSeed())
                .setCreatedUnixMs(System.currentTimeMillis()).setJobSpec(spec.toByteString()).setMetricsRows(step).build();
        lastCheckpoint = c;
        lastState = state;
        writeCheckpoint(c, last);
    }

    private void writeCheckpoint(Checkpoint c, boolean last) {
        int s = c == null ? step : c.getStep();
        long gen = generation;
        getContext().pipeToSelf(CompletableFuture.runAsync(() -> {
            try {
                if (c != null) store.write(c);
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        }, checkpointIo), (ok, err) -> new CheckpointDone(gen, s, last, err == null ? null : DataLoader.unwrap(err)));
    }

    private Behavior<Command> onCheckpointDone(CheckpointDone m) {
        if (m.error() != null) return fail("checkpoint " + store.file() + ": " + DataLoader.message(m.error()));
        events.emit(JobEvent.newBuilder().setCheckpoint(CheckpointSaved.newBuilder().setStep(m.step()).setPath(store.file().toString())));
        // a final checkpoint requested before a restart does not end the restarted run
        if (m.last() && phase == Phase.STOPPING && m.generation() == generation) return export();
        return this;
    }

    // ---- stopping ------------------------------------------------------------------------------

    private Behavior<Command> onCancel(Cancel m) {
        if (cancelReason == null) cancelReason = m.reason().isEmpty() ? "cancelled" : m.reason();
        return maybeStartStep();
    }

    private Behavior<Command> stopWith(JobState state, String reason) {
        phase = Phase.STOPPING;
        finalState = state;
        finalReason = reason;
        if (workers > 1) {
            // data parallelism must leave identical replicas: every worker's final state is compared
            replicas = new TrainerState[workers];
            for (ActorRef<Stepper.Command> s : steppers) s.tell(new Stepper.Snapshot(generation, self));
            return this;
        }
        if (lastCheckpoint != null && lastCheckpoint.getStep() == step) {
            writeCheckpoint(null, true); // waits for earlier writes on the IO thread, writes nothing new
        } else {
            steppers[0].tell(new Stepper.Snapshot(generation, self));
        }
        return this;
    }

    /**
     * {@value #REPLICAS_FILE}: the largest |difference| between worker w's tensors and worker 0's,
     * over the LoRA parameters and over the AdamW moments, per worker and overall (0 = bit-identical
     * replicas). A file that cannot be written costs a warning only.
     */
    private void writeReplicaReport(TrainerState[] states) {
        StringBuilder per = new StringBuilder();
        double maxParams = 0, maxMoments = 0;
        for (int w = 1; w < states.length; w++) {
            double[] d = replicaDiff(states[0], states[w]);
            maxParams = Math.max(maxParams, d[0]);
            maxMoments = Math.max(maxMoments, d[1]);
            per.append(w > 1 ? "," : "").append(String.format(java.util.Locale.ROOT,
                    "{\"worker\":%d,\"max_abs_diff\":%s,\"max_abs_diff_moments\":%s}", w, num(d[0]), num(d[1])));
        }
        String json = String.format(java.util.Locale.ROOT,
                "{\"step\":%d,\"workers\":%d,\"max_abs_diff\":%s,\"max_abs_diff_moments\":%s,\"per_worker\":[%s]}%n",
                step, states.length, num(maxParams), num(maxMoments), per);
        Path file = Path.of(spec.getOutputDir(), REPLICAS_FILE);
        try {
            Path tmp = file.resolveSibling(REPLICAS_FILE + ".tmp");
            java.nio.file.Files.writeString(tmp, json);
            java.nio.file.Files.move(tmp, file, java.nio.file.StandardCopyOption.REPLACE_EXISTING, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            getContext().getLog().warn("{}: replica report not written: {}", file, e.toString());
        }
    }

    /** {max |a−b| over LoRA parameters, over AdamW moments}; a missing tensor or size mismatch is +inf. */
    static double[] replicaDiff(TrainerState a, TrainerState b) {
        double params = 0, moments = 0;
        for (var e : a.tensors().entrySet()) {
            float[] x = e.getValue(), y = b.tensors().get(e.getKey());
            double d = 0;
            if (y == null || y.length != x.length) d = Double.POSITIVE_INFINITY;
            else for (int i = 0; i < x.length; i++) {
                double v = Math.abs((double) x[i] - y[i]);
                if (!(v <= d)) d = Double.isNaN(v) ? Double.POSITIVE_INFINITY : v;
            }
            if (e.getKey().endsWith(".exp_avg") || e.getKey().endsWith(".exp_avg_sq")) moments = Math.max(moments, d);
            else params = Math.max(params, d);
        }
        if (a.tensors().size() != b.tensors().size()) params = Double.POSITIVE_INFINITY;
        return new double[]{params, moments};
    }

    private static String num(double v) { return Double.isFinite(v) ? Double.toString(v) : "\"inf\""; }

    private Behavior<Command> export() {
        AdapterExporter exporter = runtime.exporter();
        if (exporter == null || lastState == null) return finish();
        TrainerState st = lastState;
        Path dir = Path.of(spec.getOutputDir(), "adapter");
        getContext().pipeToSelf(CompletableFuture.runAsync(() -> {
            try {
                exporter.export(st, dir);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }, checkpointIo), (ok, err) -> new ExportDone(err == null ? null : DataLoader.unwrap(err)));
        return this;
    }

    private Behavior<Command> onExportDone(ExportDone m) {
        if (m.error() != null) return fail("adapter export to " + Path.of(spec.getOutputDir(), "adapter") + ": " + DataLoader.message(m.error()));
        return finish();
    }

    private Behavior<Command> finish() {
        plotLoss();
        events.state(finalState, finalReason);
        return Behaviors.stopped();
    }

    private Behavior<Command> fail(String reason) {
        plotLoss();
        events.state(JobState.FAILED, reason);
        return Behaviors.stopped();
    }

    /** loss.svg next to metrics.jsonl, whenever the job ends; a plot that cannot be written only costs a warning. */
    private void plotLoss() {
        try {
            LossPlot.write(Path.of(spec.getOutputDir()), spec.getName());
        } catch (IOException | RuntimeException e) {
            getContext().getLog().warn("{}: loss plot not written: {}", spec.getOutputDir(), e.toString());
        }
    }

    // ---- data and predictor --------------------------------------------------------------------

    private Behavior<Command> onData(DataEvent m) {
        switch (m.event()) {
            case DataLoader.Summary s -> {
                events.emit(JobEvent.newBuilder().setData(DataReport.newBuilder().setRecords(s.summary().records())
                        .setMalformed(s.summary().malformed()).addAllMalformedLines(s.summary().malformedLines())));
                return this;
            }
            case DataLoader.Failed f -> {
                return fail(f.reason());
            }
            case DataLoader.Loaded l -> {
                if (l.seekGeneration() != seekGeneration) return this;
                dataRequested = false;
                nextBatch = l;
                return phase == Phase.WAITING_DATA ? maybeStartStep() : this;
            }
            default -> {
                return this;
            }
        }
    }

    private Behavior<Command> onPredictor(PredictorEvent m) {
        switch (m.event()) {
            case Predictor.Progress p -> {
                events.emit(JobEvent.newBuilder().setProgress(Progress.newBuilder().setStage(p.stage()).setFraction(p.fraction()).setMessage(p.message())));
                return this;
            }
            case Predictor.Ready r -> {
                factors = r.factors();
                events.emit(JobEvent.newBuilder().setProgress(Progress.newBuilder().setStage("predictor").setFraction(1).setMessage("predictor ready")));
                for (ActorRef<Stepper.Command> s : steppers) if (s != null) s.tell(new Stepper.AttachPredictor(factors));
                if (phase == Phase.WAITING_PREDICTOR) {
                    phase = Phase.IDLE;
                    return maybeStartStep();
                }
                return this;
            }
            case Predictor.Failed f -> {
                return fail(f.reason());
            }
            default -> {
                return this;
            }
        }
    }

    private void publishState(JobState s, String reason) {
        if (published == s) return;
        published = s;
        events.state(s, reason);
    }

    private Behavior<Command> onPostStop() {
        if (!events.terminal) events.state(JobState.FAILED, "job supervisor stopped unexpectedly (see the log)");
        checkpointIo.shutdown(); // queued checkpoint writes still complete
        try {
            metrics.close();
        } catch (IOException ignored) {
        }
        closeQuietly(runtime);
        return this;
    }

    private static void closeQuietly(JobRuntime r) {
        try {
            r.close();
        } catch (Exception ignored) {
        }
    }

    /** A resumed job must train the same run: the fields that define it must not change. */
    private static void checkCompatible(JobSpec now, Checkpoint c) throws IOException {
        JobSpec then = JobSpec.parseFrom(c.getJobSpec());
        if (!then.getModel().equals(now.getModel())) throw new IllegalArgumentException("model: checkpoint was trained on '" + then.getModel() + "', job says '" + now.getModel() + "'");
        if (!then.getData().getPath().equals(now.getData().getPath())) throw new IllegalArgumentException("data.path: checkpoint was trained on '" + then.getData().getPath() + "', job says '" + now.getData().getPath() + "'");
        if (!then.getData().getSynthetic().equals(now.getData().getSynthetic()))
            throw new IllegalArgumentException("data.synthetic: checkpoint was trained on " + then.getData().getSynthetic().toString().replace('\n', ' ').strip()
                    + ", job says " + now.getData().getSynthetic().toString().replace('\n', ' ').strip());
        if (then.getSteps() != now.getSteps()) throw new IllegalArgumentException("steps: checkpoint job has " + then.getSteps() + ", job says " + now.getSteps());
        if (then.getBatchSize() != now.getBatchSize()) throw new IllegalArgumentException("batch_size: checkpoint job has " + then.getBatchSize() + ", job says " + now.getBatchSize());
        if (then.getSeed() != now.getSeed()) throw new IllegalArgumentException("seed: checkpoint job has " + then.getSeed() + ", job says " + now.getSeed());
        if (c.getStep() > now.getSteps()) throw new IllegalArgumentException("steps: checkpoint is at step " + c.getStep() + ", beyond the job's " + now.getSteps());
    }

    /** Stamps and publishes events; remembers whether a terminal state went out. */
    private static final class Events {
        final String jobId;
        final JobListener listener;
        boolean terminal;

        Events(String jobId, JobListener listener) {
            this.jobId = jobId;
            this.listener = listener;
        }

        void state(JobState s, String reason) {
            if (terminal) return;
            terminal = s == JobState.FINISHED || s == JobState.FAILED || s == JobState.CANCELLED;
            emit(JobEvent.newBuilder().setState(StateChange.newBuilder().setState(s).setReason(reason == null ? "" : reason)));
        }

        void emit(JobEvent.Builder e) {
            listener.onEvent(e.setJobId(jobId).setUnixMs(System.currentTimeMillis()).build());
        }
    }
}
