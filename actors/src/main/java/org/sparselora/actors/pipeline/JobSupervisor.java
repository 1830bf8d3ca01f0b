package org.sparselora.actors.pipeline;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.ChildFailed;
import org.apache.pekko.actor.typed.PostStop;
import org.apache.pekko.actor.typed.Terminated;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.BehaviorBuilder;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.javadsl.Receive;
import org.sparselora.actors.job.SparsityProtos;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.sparse.DenseWarmup;
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

/**
 * Owns one training job: its DataLoader, Predictor, N Steppers and the per-step GradientAggregator
 * rounds. Orchestration only, as behaviours switched per phase of the job's life:
 * <ul>
 *   <li>{@code starting}: the Steppers come up (after a restart too); a fresh job then aligns every
 *       replica with worker 0's initial adapter, which becomes checkpoint 0;</li>
 *   <li>{@code idle}: between steps, waiting for the next batch and, before the first sparse step,
 *       for the predictor;</li>
 *   <li>{@code stepping}: one step's round in flight (batch split over the workers, gradients
 *       summed, every worker's acknowledgement → a metrics row);</li>
 *   <li>{@code checkpointing}: every {@code checkpoint_every} steps, worker 0's state is taken and
 *       written ({@link CheckpointStore}: adapter + AdamW state, step, data position, RNG state;
 *       written in order on one IO thread);</li>
 *   <li>{@code stopping}: the final checkpoint (and with N > 1 the {@link ReplicaReport}), the
 *       adapter export, the terminal state.</li>
 * </ul>
 * Faults: a failed or timed-out Stepper is replaced, every other Stepper and the DataLoader are reset
 * to the last checkpoint, and the metrics file is cut back to it, so the finished job equals an
 * uninterrupted one. It gives up with a clear reason after more than {@code maxRestarts} failures,
 * or when the loss stays NaN/inf for {@code maxNonFiniteSteps} consecutive steps (such updates are
 * skipped meanwhile). Anything that goes wrong while the job starts (an output_dir that cannot be
 * made, a checkpoint that cannot be read) fails the job with that reason; a cancel ends the job in
 * every phase (while starting or waiting at once, otherwise after the current step with a final
 * checkpoint). Everything observable is published as a {@link JobEvent}.
 */
public final class JobSupervisor {

    /** What a JobSupervisor is told; the records are the messages. */
    public sealed interface Command permits StepperReady, WorkerFailed, StepApplied, RoundTimedOut, StateSnapshot, Cancel,
            DataEvent, PredictorEvent, CheckpointDone, ExportDone {}

    public record StepperReady(long generation, int worker, ActorRef<Stepper.Command> stepper) implements Command, ClusterMessage {}

    /** A worker node could not start worker {@code worker} (cluster placement): a failure like a crash. */
    public record WorkerFailed(long generation, int worker, String reason) implements Command, ClusterMessage {}

    /** A worker applied (or skipped) the update of {@code step}. */
    public record StepApplied(long generation, int step, int worker, double lr, org.sparselora.engine.train.StepResult stats,
                              boolean skipped, AggTimes times) implements Command, ClusterMessage {}

    /**
     * A worker's {@code System.nanoTime()} stamps of one step's gradient aggregation: its backward
     * pass ended, its shard was sent (after the host copy on the host path), the summed gradients were
     * in place. Comparable across workers of one JVM (the only place the figures are computed).
     */
    public record AggTimes(long backwardEnd, long contributed, long sumReady) {}

    public record RoundTimedOut(long generation, int step, List<Integer> missingWorkers) implements Command, ClusterMessage {}

    public record StateSnapshot(long generation, TrainerState state, int worker) implements Command, ClusterMessage {}

    /** Stop: at once while starting or waiting, else after the current step, with a final checkpoint. */
    public record Cancel(String reason) implements Command, LocalMessage {}

    private record DataEvent(DataLoader.Event event) implements Command, LocalMessage {}

    private record PredictorEvent(Predictor.Event event) implements Command, LocalMessage {}

    private record CheckpointDone(long generation, int step, boolean last, Throwable error) implements Command, LocalMessage {}

    private record ExportDone(Throwable error) implements Command, LocalMessage {}

    /** {@code output_dir/replicas.json}: written at a clean stop with N > 1 workers. */
    public static final String REPLICAS_FILE = ReplicaReport.FILE;

    /** Fault-handling knobs; the defaults suit real jobs, tests shorten the timeout. */
    public record Settings(Duration roundTimeout, int maxRestarts, int maxNonFiniteSteps, PredictorCache predictorCache,
                           StepperPlacement placement) {
        /** Steppers in this JVM. */
        public Settings(Duration roundTimeout, int maxRestarts, int maxNonFiniteSteps, PredictorCache predictorCache) {
            this(roundTimeout, maxRestarts, maxNonFiniteSteps, predictorCache, StepperPlacement.LOCAL);
        }

        public static Settings defaults() { return new Settings(Duration.ofMinutes(30), 3, 3, PredictorCache.shared()); }

        public Settings withRoundTimeout(Duration d) { return new Settings(d, maxRestarts, maxNonFiniteSteps, predictorCache, placement); }

        public Settings withPlacement(StepperPlacement p) { return new Settings(roundTimeout, maxRestarts, maxNonFiniteSteps, predictorCache, p); }
    }

    /**
     * @param spec a validated spec whose sparsity is inline (see JobSpecs.prepare)
     */
    public static Behavior<Command> create(String jobId, JobSpec spec, JobRuntime runtime, JobListener listener, Settings settings) {
        return Behaviors.setup(ctx -> {
            JobEvents events = new JobEvents(jobId, listener);
            JobSupervisor job;
            try {
                job = new JobSupervisor(ctx, spec, runtime, events, settings);
            } catch (Exception | LinkageError e) {
                // nothing may leave the job "starting" for ever: whatever failed is the job's failure,
                // published once the engine side is released
                closeQuietly(runtime);
                events.state(JobState.FAILED, DataLoader.firstLine(DataLoader.unwrap(e)));
                return Behaviors.stopped();
            }
            return job.starting(new boolean[job.workers]);
        });
    }

    // ---- the job: what outlives a phase --------------------------------------------------------

    private final ActorContext<Command> ctx;
    private final JobSpec spec;
    private final JobRuntime runtime;
    private final JobEvents events;
    private final Settings settings;
    private final CheckpointStore store;
    private final MetricsLog metrics;
    private final DenseWarmup schedule;
    private final int workers;
    private final int total;
    private final ExecutorService checkpointIo;
    private final ActorRef<DataLoader.Command> dataLoader;
    private final ActorRef<DataLoader.Event> dataAdapter;
    private final ActorRef<Stepper.Command>[] steppers;
    private final StepperPlacement.Cluster cluster;                 // null: Steppers are children in this JVM
    private final ActorRef<WorkerHost.Command>[] hostOf;            // cluster: the node each worker was placed on
    private final ActorRef<ScoreHub.Command> scoreHub;              // cluster: the channel-score all-reduce

    private long generation;              // bumped by every restart: older replies are ignored
    private int step;                     // completed steps
    private DataPosition position;        // data cursor after `step` steps
    private long seekGeneration;
    private DataLoader.Loaded nextBatch;
    private boolean dataRequested;
    private PredictorFactors factors;
    private Checkpoint lastCheckpoint;
    private TrainerState lastState;
    private int failures;
    private int nonFiniteStreak;
    private String cancelReason;          // a stop was asked for; honoured at the next step boundary
    private JobState published = JobState.STARTING;
    private ActorRef<GradientAggregator.Command> round; // the round in flight (stepping only), watched

    /** Everything that can fail while the job starts happens here, before the first behaviour. */
    @SuppressWarnings("unchecked")
    private JobSupervisor(ActorContext<Command> ctx, JobSpec spec, JobRuntime runtime, JobEvents events, Settings settings) throws IOException {
        this.ctx = ctx;
        this.spec = spec;
        this.runtime = runtime;
        this.events = events;
        this.settings = settings;
        this.workers = spec.getWorkers();
        this.total = org.sparselora.actors.job.JobSpecs.totalSteps(spec, runtime.data().updatesPerEpoch());
        Path out = Path.of(spec.getOutputDir());
        outputDirectory(out);
        this.store = new CheckpointStore(out);
        store.removeStaleTemps();
        Checkpoint resumeFrom = null;
        if (spec.getResume()) {
            resumeFrom = store.read();
            ResumeCheck.compatible(spec, total, resumeFrom);
        } else if (store.exists()) {
            throw new IllegalArgumentException("output_dir " + spec.getOutputDir()
                    + " already holds a checkpoint: resume the job (train --resume / ResumeJob) or choose another output_dir");
        }
        this.schedule = DenseWarmup.of(SparsityProtos.forJob(spec), total);
        if (resumeFrom != null) {
            lastCheckpoint = resumeFrom;
            lastState = CheckpointStore.toTrainerState(resumeFrom);
            step = resumeFrom.getStep();
            position = CheckpointStore.toPosition(resumeFrom.getData());
        } else {
            position = DataPosition.START;
        }
        boolean needsPredictor = schedule.anySparse() && step < schedule.endSparseStep();
        if (needsPredictor && runtime.predictor() == null)
            throw new IllegalArgumentException("sparsity: the job has sparse steps but the engine provided no predictor builder");
        this.metrics = new MetricsLog(out);
        metrics.openAt(step);
        this.checkpointIo = Executors.newSingleThreadExecutor(Thread.ofPlatform().name("checkpoint-io").daemon().factory());
        this.steppers = new ActorRef[workers];
        this.cluster = settings.placement() instanceof StepperPlacement.Cluster c ? c : null;
        this.hostOf = new ActorRef[workers];
        this.scoreHub = cluster == null ? null : ctx.spawn(ScoreHub.create(workers, generation), "score-hub");
        events.state(JobState.STARTING, resumeFrom != null ? "resuming from step " + step : "starting");

        dataAdapter = ctx.messageAdapter(DataLoader.Event.class, DataEvent::new);
        dataLoader = ctx.spawn(DataLoader.create(runtime.data(), Math.max(1, spec.getPrefetch()), position, dataAdapter), "data-loader");
        if (needsPredictor)
            ctx.spawn(Predictor.create(runtime.predictor(), settings.predictorCache(),
                    ctx.messageAdapter(Predictor.Event.class, PredictorEvent::new)), "predictor");
        for (int w = 0; w < workers; w++) spawnStepper(w, lastState, step);
    }

    /** The output directory exists (made if needed) and is a directory: said plainly when it cannot be. */
    private static void outputDirectory(Path dir) {
        // the directory itself or one above it may be a file: name the one that is
        for (Path p = dir.toAbsolutePath().normalize(); p != null; p = p.getParent())
            if (Files.exists(p) && !Files.isDirectory(p))
                throw new IllegalArgumentException("output_dir " + dir + ": " + p + " exists and is not a directory");
        try {
            Files.createDirectories(dir);
        } catch (IOException | SecurityException e) {
            throw new IllegalArgumentException("output_dir " + dir + ": cannot create the directory ("
                    + DataLoader.firstLine(e) + ")");
        }
    }

    // ---- behaviours ----------------------------------------------------------------------------

    /**
     * The Steppers come up; {@code ready[w]}: worker w answered for this generation. A fresh job (no
     * checkpoint yet) aligns the replicas first; otherwise all ready → idle.
     */
    private Behavior<Command> starting(boolean[] ready) {
        return common(Behaviors.receive(Command.class)
                .onMessage(StepperReady.class, m -> {
                    if (m.generation() != generation || m.worker() < 0 || m.worker() >= workers) return Behaviors.same();
                    if (cluster != null && steppers[m.worker()] == null) {
                        // a Stepper placed on a worker node: known from its first word (watched from now on)
                        steppers[m.worker()] = m.stepper();
                        ctx.watch(m.stepper());
                        // the predictor may have come while it was being placed
                        if (factors != null) m.stepper().tell(new Stepper.AttachRemotePredictor(factors.fingerprint()));
                    }
                    if (!m.stepper().equals(steppers[m.worker()])) return Behaviors.same();
                    ready[m.worker()] = true;
                    for (boolean r : ready) if (!r) return Behaviors.same();
                    if (lastCheckpoint == null) {
                        steppers[0].tell(new Stepper.Snapshot(generation, ctx.getSelf()));
                        return aligning();
                    }
                    return nextStep();
                })
                // nothing was trained since the last checkpoint (or at all): end without another
                .onMessage(Cancel.class, m -> finish(JobState.CANCELLED, reasonOf(m))), this::same);
    }

    /** Worker 0's initial state becomes checkpoint 0 and every other replica restores it. */
    private Behavior<Command> aligning() {
        return common(Behaviors.receive(Command.class)
                .onMessage(StateSnapshot.class, m -> {
                    if (m.generation() != generation) return Behaviors.same();
                    takeCheckpoint(m.state(), false);
                    if (workers == 1) return nextStep();
                    boolean[] ready = new boolean[workers];
                    ready[0] = true;
                    for (int w = 1; w < workers; w++) steppers[w].tell(new Stepper.Restore(generation, step, lastState, ctx.getSelf()));
                    return starting(ready);
                })
                // nothing was trained since the last checkpoint (or at all): end without another
                .onMessage(Cancel.class, m -> finish(JobState.CANCELLED, reasonOf(m))), this::same);
    }

    /** Between steps: waiting for the next batch or for the predictor; either arriving moves on. */
    private Behavior<Command> idle() {
        return common(Behaviors.receive(Command.class)
                .onMessage(Cancel.class, m -> {
                    cancelReason = reasonOf(m);
                    return nextStep();
                }), this::nextStep);
    }

    /** One step's round: every worker's acknowledgement, then the metrics row. */
    private Behavior<Command> stepping(StepApplied[] applied, long startNanos) {
        return common(Behaviors.receive(Command.class)
                .onMessage(StepApplied.class, m -> {
                    if (m.generation() != generation || m.step() != step || applied[m.worker()] != null) return Behaviors.same();
                    applied[m.worker()] = m;
                    for (StepApplied a : applied) if (a == null) return Behaviors.same();
                    round = null;
                    return stepDone(StepStats.of(step, total, applied, (System.nanoTime() - startNanos) / 1e6));
                })
                .onMessage(RoundTimedOut.class, m -> {
                    if (m.generation() != generation || m.step() != step) return Behaviors.same();
                    int[] missing = m.missingWorkers().stream().mapToInt(Integer::intValue).toArray();
                    return restart(missing, "gradient round of step " + (step + 1) + " timed out after " + settings.roundTimeout()
                            + " waiting for workers " + m.missingWorkers());
                })
                .onMessage(Cancel.class, this::cancelAfterStep), this::same);
    }

    /** A periodic checkpoint: waiting for worker 0's state. */
    private Behavior<Command> checkpointing() {
        return common(Behaviors.receive(Command.class)
                .onMessage(StateSnapshot.class, m -> {
                    if (m.generation() != generation) return Behaviors.same();
                    takeCheckpoint(m.state(), false);
                    return nextStep();
                })
                .onMessage(Cancel.class, this::cancelAfterStep), this::same);
    }

    /**
     * The job ends as {@code state}: the final state is taken (every worker's with N > 1, for the
     * replica report), written, the adapter exported, then the terminal state published.
     */
    private Behavior<Command> stopping(JobState state, String reason) {
        TrainerState[] replicas = workers > 1 ? new TrainerState[workers] : null;
        if (replicas != null) {
            for (ActorRef<Stepper.Command> s : steppers) s.tell(new Stepper.Snapshot(generation, ctx.getSelf()));
        } else if (lastCheckpoint != null && lastCheckpoint.getStep() == step) {
            writeCheckpoint(null, true); // waits for earlier writes on the IO thread, writes nothing new
        } else {
            steppers[0].tell(new Stepper.Snapshot(generation, ctx.getSelf()));
        }
        return common(Behaviors.receive(Command.class)
                .onMessage(StateSnapshot.class, m -> {
                    if (m.generation() != generation) return Behaviors.same();
                    if (replicas == null) {
                        takeCheckpoint(m.state(), true);
                        return Behaviors.same();
                    }
                    if (m.worker() < 0 || m.worker() >= workers || replicas[m.worker()] != null) return Behaviors.same();
                    replicas[m.worker()] = m.state();
                    for (TrainerState r : replicas) if (r == null) return Behaviors.same();
                    writeReplicaReport(replicas);
                    if (lastCheckpoint != null && lastCheckpoint.getStep() == step) writeCheckpoint(null, true);
                    else takeCheckpoint(replicas[0], true);
                    return Behaviors.same();
                })
                .onMessage(CheckpointDone.class, m -> {
                    Behavior<Command> failed = checkpointWritten(m);
                    if (failed != null) return failed;
                    // a final checkpoint requested before a restart does not end the restarted run
                    return m.last() && m.generation() == generation ? export(state, reason) : Behaviors.same();
                })
                .onMessage(Cancel.class, m -> Behaviors.same()), this::same);
    }

    /** The export (adapter, or the model in full mode) runs on the IO thread; its end is the job's end. */
    private Behavior<Command> exporting(JobState state, String reason) {
        return common(Behaviors.receive(Command.class)
                .onMessage(ExportDone.class, m -> m.error() != null
                        ? fail((runtime.exporter().directory().equals("adapter") ? "adapter" : "model") + " export to "
                                + Path.of(spec.getOutputDir(), runtime.exporter().directory()) + ": " + DataLoader.message(m.error()))
                        : finish(state, reason))
                .onMessage(Cancel.class, m -> Behaviors.same()), this::same);
    }

    /**
     * What every phase handles alike: replies of old generations, data and predictor events (after
     * which {@code onInput} runs: idle starts the step they were waiting for), checkpoint writes,
     * children that stop, and the actor's own stop.
     */
    private Behavior<Command> common(BehaviorBuilder<Command> b, java.util.function.Supplier<Behavior<Command>> onInput) {
        return b.onMessage(StepperReady.class, m -> Behaviors.same())
                .onMessage(WorkerFailed.class, m -> m.generation() != generation || m.worker() < 0 || m.worker() >= workers
                        ? Behaviors.same() : restart(new int[]{m.worker()}, "worker " + m.worker() + " could not start: " + m.reason()))
                .onMessage(StepApplied.class, m -> Behaviors.same())
                .onMessage(RoundTimedOut.class, m -> Behaviors.same())
                .onMessage(StateSnapshot.class, m -> Behaviors.same())
                .onMessage(ExportDone.class, m -> Behaviors.same())
                .onMessage(CheckpointDone.class, m -> {
                    Behavior<Command> failed = checkpointWritten(m);
                    return failed != null ? failed : Behaviors.same();
                })
                .onMessage(DataEvent.class, m -> onData(m.event(), onInput))
                .onMessage(PredictorEvent.class, m -> onPredictor(m.event(), onInput))
                .onSignal(ChildFailed.class, s -> s.getCause() instanceof LinkageError
                        // a missing native library or class: restarting cannot help
                        ? fail("a worker cannot run: " + DataLoader.firstLine(s.getCause()))
                        : onChildGone(s.getRef(), "crashed: " + DataLoader.firstLine(s.getCause()), true))
                .onSignal(Terminated.class, s -> onChildGone(s.getRef(), "stopped unexpectedly", false))
                .onSignal(PostStop.class, s -> onPostStop())
                .build();
    }

    private Behavior<Command> same() { return Behaviors.same(); }

    // ---- the step loop -------------------------------------------------------------------------

    /** At a step boundary: stop, wait (predictor, data) or run the next step. */
    private Behavior<Command> nextStep() {
        if (cancelReason != null) return stopping(JobState.CANCELLED, cancelReason);
        if (step >= total) return stopping(JobState.FINISHED, "finished " + total + " steps");
        if (schedule.sparseAt(step) && factors == null) {
            publishState(JobState.BUILDING_PREDICTOR, "waiting for the SVD predictor before sparse step " + (step + 1));
            return idle();
        }
        if (nextBatch == null) {
            if (!dataRequested) {
                dataRequested = true;
                dataLoader.tell(new DataLoader.Next(dataAdapter));
            }
            return idle();
        }
        publishState(JobState.RUNNING, "running");
        Batch[] shards = BatchShards.split(nextBatch.batch(), workers);
        round = ctx.spawn(GradientAggregator.round(generation, step, workers, exchange(), settings.roundTimeout(), ctx.getSelf()),
                "round-g" + generation + "-s" + step);
        ctx.watch(round);
        long start = System.nanoTime();
        for (int w = 0; w < workers; w++) steppers[w].tell(new Stepper.RunStep(generation, step, shards[w], round, ctx.getSelf()));
        return stepping(new StepApplied[workers], start);
    }

    private Behavior<Command> stepDone(StepStats stats) {
        try {
            metrics.append(stats.row());
        } catch (IOException e) {
            return fail("metrics file " + metrics.file() + ": " + DataLoader.message(e));
        }
        events.emit(JobEvent.newBuilder().setStep(stats.row()));
        position = nextBatch.after();
        nextBatch = null;
        step++;
        nonFiniteStreak = stats.skipped() ? nonFiniteStreak + 1 : 0;
        if (nonFiniteStreak >= settings.maxNonFiniteSteps())
            return fail("loss is NaN/inf for " + nonFiniteStreak + " consecutive steps (steps " + (step - nonFiniteStreak + 1)
                    + "–" + step + "); those updates were skipped");
        int every = spec.getCheckpointEvery();
        if (every > 0 && step % every == 0 && step < total) {
            steppers[0].tell(new Stepper.Snapshot(generation, ctx.getSelf()));
            return checkpointing();
        }
        return nextStep();
    }

    private Behavior<Command> cancelAfterStep(Cancel m) {
        if (cancelReason == null) cancelReason = reasonOf(m);
        return Behaviors.same();
    }

    private String reasonOf(Cancel m) {
        if (cancelReason != null) return cancelReason;
        return m.reason().isEmpty() ? "cancelled" : m.reason();
    }

    // ---- workers -------------------------------------------------------------------------------

    private void spawnStepper(int w, TrainerState state, int atStep) {
        if (cluster != null) {
            placeStepper(w, state, atStep);
            return;
        }
        ActorRef<Stepper.Command> ref = ctx.spawn(
                Stepper.create(new Stepper.Settings(w, workers, Math.max(1, spec.getGradAccumSteps()), runtime.workers(), schedule, exchange() != null, ctx.getSelf()),
                        generation, state, atStep, factors),
                "stepper-" + w + "-g" + generation, Stepper.dispatcher());
        ctx.watch(ref);
        steppers[w] = ref;
    }

    /**
     * Worker w on a worker node: the live nodes in address order take workers round-robin (a node
     * lost to a failure simply drops out, so its workers move to the others — the job keeps its N
     * workers and its shards, and the result does not depend on where they run). The Stepper
     * answers with StepperReady; the node is watched, so a node that goes away is a failure.
     */
    private void placeStepper(int w, TrainerState state, int atStep) {
        java.util.List<ActorRef<WorkerHost.Command>> hosts = cluster.hosts();
        if (hosts.isEmpty()) throw new IllegalStateException("no worker node in the cluster to run worker " + w + " on");
        ActorRef<WorkerHost.Command> host = hosts.get(w % hosts.size());
        steppers[w] = null;
        hostOf[w] = host;
        ctx.watch(host);
        host.tell(new WorkerHost.HostStepper(events.jobId(), spec, w, workers, w / hosts.size(), generation, state, atStep,
                factors == null ? "" : factors.fingerprint(), ctx.getSelf(), scoreHub));
    }

    /** Stops worker w's Stepper: a child directly; on a worker node its host replaces it when the worker is placed again. */
    private void stopStepper(int w) {
        ctx.unwatch(steppers[w]);
        if (cluster == null) ctx.stop(steppers[w]);
        steppers[w] = null;
    }

    /**
     * The device-side gradient exchange when there is something to exchange and the engine offers
     * one (every worker's backend in this JVM); null: the host path ({@code float[][]} shards).
     */
    private org.sparselora.engine.train.GradientExchange exchange() {
        return workers > 1 && cluster == null ? runtime.exchange() : null;
    }

    private Behavior<Command> onChildGone(ActorRef<Void> ref, String cause, boolean failed) {
        for (int w = 0; w < workers; w++)
            if (steppers[w] != null && steppers[w].equals(ref)) {
                steppers[w] = null;
                return restart(new int[]{w}, "worker " + w + " " + cause);
            }
        if (cluster != null) {
            // a worker node went away (crashed, killed, downed): every worker placed on it is lost
            java.util.List<Integer> lost = new java.util.ArrayList<>();
            for (int w = 0; w < workers; w++)
                if (hostOf[w] != null && hostOf[w].equals(ref)) {
                    lost.add(w);
                    hostOf[w] = null;
                    if (steppers[w] != null) ctx.unwatch(steppers[w]);
                    steppers[w] = null;
                }
            if (!lost.isEmpty())
                return restart(lost.stream().mapToInt(Integer::intValue).toArray(), "worker node " + ref.path().address() + " left the cluster");
        }
        // a round that crashed (inconsistent gradient shards) is a bug, not a worker fault
        if (failed && round != null && round.equals(ref)) return fail("gradient round of step " + (step + 1) + " " + cause);
        return Behaviors.same(); // a replaced stepper, a finished round
    }

    /** Replace the failed workers, reset everyone to the last checkpoint, continue from there. */
    private Behavior<Command> restart(int[] failed, String cause) {
        failures++;
        ctx.getLog().warn("job {}: {} (failure {} of at most {})", events.jobId(), cause, failures, settings.maxRestarts());
        if (failures > settings.maxRestarts())
            return fail("gave up after " + failures + " worker failures; last: " + cause);
        generation++;
        if (round != null) ctx.stop(round);
        round = null;
        if (scoreHub != null) scoreHub.tell(new ScoreHub.NewGeneration(generation));
        for (int w : failed) if (steppers[w] != null) stopStepper(w);
        if (cluster != null)   // workers on nodes that are gone (their Terminated may still be on its way) move too
            for (int w = 0; w < workers; w++)
                if (steppers[w] != null && !cluster.alive(steppers[w].path().address())) stopStepper(w);
        int from = lastCheckpoint == null ? 0 : lastCheckpoint.getStep();
        try {
            placeAll(from);
        } catch (IllegalStateException noNode) {
            return fail(noNode.getMessage());
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
        return starting(new boolean[workers]);
    }


    /** Every worker back at checkpoint {@code from}: the missing ones placed anew, the others restored. */
    private void placeAll(int from) {
        for (int w = 0; w < workers; w++) {
            if (steppers[w] == null) spawnStepper(w, lastState, from);
            else if (lastState != null) steppers[w].tell(new Stepper.Restore(generation, from, lastState, ctx.getSelf()));
            else { // failed before checkpoint 0 existed: start every worker afresh
                stopStepper(w);
                spawnStepper(w, null, 0);
            }
        }
    }

    // ---- checkpoints ---------------------------------------------------------------------------

    private void takeCheckpoint(TrainerState state, boolean last) {
        Checkpoint c = CheckpointStore.fromTrainerState(state)
                .setJobName(spec.getName()).setStep(step).setData(CheckpointStore.toProto(position)).setSeed(spec.getSeed())
                .setCreatedUnixMs(System.currentTimeMillis()).setJobSpec(spec.toByteString()).setMetricsRows(step).build();
        lastCheckpoint = c;
        lastState = state;
        writeCheckpoint(c, last);
    }

    /** Queued on the IO thread (in order); {@code c} null: only waits for the writes before it. */
    private void writeCheckpoint(Checkpoint c, boolean last) {
        int s = c == null ? step : c.getStep();
        long gen = generation;
        ctx.pipeToSelf(CompletableFuture.runAsync(() -> {
            try {
                if (c != null) store.write(c);
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        }, checkpointIo), (ok, err) -> new CheckpointDone(gen, s, last, err == null ? null : DataLoader.unwrap(err)));
    }

    /** Publishes a written checkpoint; a failed write fails the job (returned), else null. */
    private Behavior<Command> checkpointWritten(CheckpointDone m) {
        if (m.error() != null) return fail("checkpoint " + store.file() + ": " + DataLoader.message(m.error()));
        events.emit(JobEvent.newBuilder().setCheckpoint(CheckpointSaved.newBuilder().setStep(m.step()).setPath(store.file().toString())));
        return null;
    }

    /** A report that cannot be written costs a warning only. */
    private void writeReplicaReport(TrainerState[] states) {
        try {
            ReplicaReport.write(Path.of(spec.getOutputDir()), step, states);
        } catch (RuntimeException e) {
            ctx.getLog().warn("{}: replica report not written: {}", Path.of(spec.getOutputDir(), REPLICAS_FILE), e.toString());
        }
    }

    // ---- the end -------------------------------------------------------------------------------

    private Behavior<Command> export(JobState state, String reason) {
        AdapterExporter exporter = runtime.exporter();
        if (exporter == null || lastState == null) return finish(state, reason);
        TrainerState st = lastState;
        Path dir = Path.of(spec.getOutputDir(), exporter.directory());
        ctx.pipeToSelf(CompletableFuture.runAsync(() -> {
            try {
                exporter.export(st, dir);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }, checkpointIo), (ok, err) -> new ExportDone(err == null ? null : DataLoader.unwrap(err)));
        return exporting(state, reason);
    }

    private Behavior<Command> finish(JobState state, String reason) {
        plotLoss();
        events.state(state, reason);
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
            ctx.getLog().warn("{}: loss plot not written: {}", spec.getOutputDir(), e.toString());
        }
    }

    // ---- data and predictor --------------------------------------------------------------------

    private Behavior<Command> onData(DataLoader.Event event, java.util.function.Supplier<Behavior<Command>> onInput) {
        return switch (event) {
            case DataLoader.Summary s -> {
                events.emit(JobEvent.newBuilder().setData(DataReport.newBuilder().setRecords(s.summary().records())
                        .setMalformed(s.summary().malformed()).addAllMalformedLines(s.summary().malformedLines())));
                yield Behaviors.same();
            }
            case DataLoader.Failed f -> fail(f.reason());
            case DataLoader.Loaded l -> {
                if (l.seekGeneration() != seekGeneration) yield Behaviors.same();
                dataRequested = false;
                nextBatch = l;
                yield onInput.get();
            }
        };
    }

    private Behavior<Command> onPredictor(Predictor.Event event, java.util.function.Supplier<Behavior<Command>> onInput) {
        return switch (event) {
            case Predictor.Progress p -> {
                events.emit(JobEvent.newBuilder().setProgress(Progress.newBuilder().setStage(p.stage()).setFraction(p.fraction()).setMessage(p.message())));
                yield Behaviors.same();
            }
            case Predictor.Ready r -> {
                factors = r.factors();
                events.emit(JobEvent.newBuilder().setProgress(Progress.newBuilder().setStage("predictor").setFraction(1).setMessage("predictor ready")));
                for (ActorRef<Stepper.Command> s : steppers)
                    if (s != null) s.tell(cluster == null ? new Stepper.AttachPredictor(factors) : new Stepper.AttachRemotePredictor(factors.fingerprint()));
                yield onInput.get();
            }
            case Predictor.Failed f -> fail(f.reason());
        };
    }

    private void publishState(JobState s, String reason) {
        if (published == s) return;
        published = s;
        events.state(s, reason);
    }

    private Behavior<Command> onPostStop() {
        if (cluster != null) {   // the worker nodes stop this job's Steppers and close what they opened for it
            java.util.Set<ActorRef<WorkerHost.Command>> hosts = new java.util.HashSet<>(cluster.hosts());
            for (ActorRef<WorkerHost.Command> h : hostOf) if (h != null) hosts.add(h);
            for (ActorRef<WorkerHost.Command> h : hosts) h.tell(new WorkerHost.ReleaseJob(events.jobId()));
        }
        if (!events.terminal()) events.state(JobState.FAILED, "job supervisor stopped unexpectedly (see the log)");
        checkpointIo.shutdown(); // queued checkpoint writes still complete
        try {
            metrics.close();
        } catch (IOException ignored) {
        }
        closeQuietly(runtime);
        return Behaviors.same();
    }

    private static void closeQuietly(JobRuntime r) {
        try {
            r.close();
        } catch (Exception ignored) {
        }
    }
}
