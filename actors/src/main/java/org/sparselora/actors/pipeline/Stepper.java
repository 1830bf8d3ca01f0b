package org.sparselora.actors.pipeline;

import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.DispatcherSelector;
import org.apache.pekko.actor.typed.PostStop;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.sparse.DenseWarmup;
import org.sparselora.engine.train.StepResult;
import org.sparselora.engine.train.TrainerState;
import org.sparselora.engine.train.TrainingWorker;

/**
 * One data-parallel worker: owns a {@link TrainingWorker} and runs whole training steps on it. It
 * lives on a pinned dispatcher ({@link #DISPATCHER}: one thread for its whole life), so a GPU
 * context created by the worker factory stays on the thread that uses it. Behaviours follow
 * SparseLoRA's schedule: {@code denseWarmup} until the first sparse step, then {@code sparse}
 * (which runs steps past end_step dense again). A step is: compute gradients (with gradient
 * accumulation, on each of the shard's {@code microBatches} row blocks in turn, the worker summing
 * them: one update per step, whatever the accumulation), contribute them to
 * the step's GradientAggregator round (with one worker only the statistics, no host round trip;
 * with an in-process device exchange only a "ready" notice: the round sums the buffers in place),
 * apply the reduced update when it comes back, acknowledge to the supervisor with the step's
 * aggregation timestamps (backward end, shard sent, sum in place). Any exception fails
 * the actor; the JobSupervisor watches it and restarts from the last checkpoint. Messages carry
 * the supervisor's generation so replies from before a restart are ignored.
 */
public final class Stepper {

    public static final String DISPATCHER = "sparselora.stepper-dispatcher";

    public static DispatcherSelector dispatcher() { return DispatcherSelector.fromConfig(DISPATCHER); }

    /** What a Stepper is told; the records are the messages. */
    public sealed interface Command permits RunStep, Reduced, Restore, Snapshot, AttachPredictor, AttachRemotePredictor {}

    /** Step barrier: run 0-based step {@code step} on this shard and contribute to {@code aggregator}. */
    public record RunStep(long generation, int step, Batch batch, ActorRef<GradientAggregator.Command> aggregator,
                          ActorRef<JobSupervisor.Command> replyTo) implements Command, ClusterMessage {}

    /** The round's result: summed gradients (null with one worker) and the global output-token count. */
    public record Reduced(long generation, int step, float[][] grads, long totalOutputTokens, boolean skip)
            implements Command, ClusterMessage {}

    /** Reset to a checkpoint; {@code step} = completed steps in it. Answered with StepperReady. */
    public record Restore(long generation, int step, TrainerState state, ActorRef<JobSupervisor.Command> replyTo)
            implements Command, ClusterMessage {}

    /** Answered with a deep copy of the worker's state (StateSnapshot). */
    public record Snapshot(long generation, ActorRef<JobSupervisor.Command> replyTo) implements Command, ClusterMessage {}

    public record AttachPredictor(PredictorFactors factors) implements Command, LocalMessage {}

    /**
     * To a Stepper in another JVM: the predictor is ready. Its node builds (or loads from its cache)
     * the factors from the same base weights and checks they hash to {@code fingerprint}
     * ({@link RemoteFactors}); the factors themselves never cross the network.
     */
    public record AttachRemotePredictor(String fingerprint) implements Command, ClusterMessage {}

    /**
     * What stays fixed for a worker's whole life (a restart makes a new Stepper with the same settings).
     *
     * @param worker         this worker's index, 0-based
     * @param workers        data-parallel workers of the job
     * @param microBatches   row blocks of each shard whose gradients are accumulated before the update (grad_accum_steps)
     * @param factory        makes the worker's {@link TrainingWorker} (on the Stepper's own thread)
     * @param schedule       which steps are sparse
     * @param deviceExchange the rounds sum the workers' gradients in place (a GradientExchange): send no arrays
     * @param supervisor     receives StepperReady, StepApplied and StateSnapshot
     */
    public record Settings(int worker, int workers, int microBatches, WorkerFactory factory, DenseWarmup schedule, boolean deviceExchange,
                           ActorRef<JobSupervisor.Command> supervisor) {}

    /**
     * @param generation the supervisor's generation this Stepper answers to
     * @param initial    state to restore (null: the factory's fresh worker)
     * @param startStep  completed steps at {@code initial} (picks the starting behaviour)
     * @param factors    the predictor if already built (else an {@link AttachPredictor} follows)
     */
    public static Behavior<Command> create(Settings settings, long generation, TrainerState initial, int startStep,
                                           PredictorFactors factors) {
        return Behaviors.setup(ctx -> {
            TrainingWorker w = settings.factory().create(settings.worker(), settings.workers());
            Stepper s = new Stepper(ctx, settings, generation, w);
            try {
                if (initial != null) w.restore(initial);
                if (factors != null) s.attach(factors);
            } catch (RuntimeException e) {
                w.close();
                throw e;
            }
            settings.supervisor().tell(new JobSupervisor.StepperReady(generation, settings.worker(), ctx.getSelf()));
            return s.behaviourFor(startStep);
        });
    }

    private final ActorContext<Command> ctx;
    private final int worker;
    private final int workers;
    private final int microBatches;
    private final WorkerFactory factory;
    private final TrainingWorker trainer;
    private final DenseWarmup schedule;
    private final boolean deviceExchange;
    private long generation;
    private boolean predictorAttached;
    private int pendingStep = -1;
    private StepResult pendingResult;
    private ActorRef<JobSupervisor.Command> pendingReplyTo;
    private long backwardEndNanos, contributedNanos;

    private Stepper(ActorContext<Command> ctx, Settings settings, long generation, TrainingWorker trainer) {
        this.ctx = ctx;
        this.worker = settings.worker();
        this.workers = settings.workers();
        this.microBatches = settings.microBatches();
        this.factory = settings.factory();
        this.schedule = settings.schedule();
        this.deviceExchange = settings.deviceExchange();
        this.generation = generation;
        this.trainer = trainer;
    }

    private Behavior<Command> behaviourFor(int step) {
        return step < schedule.firstSparseStep() ? denseWarmup() : sparse();
    }

    /** Before the first sparse step: every step dense; the first sparse step switches behaviour. */
    private Behavior<Command> denseWarmup() {
        return common(Behaviors.receive(Command.class)
                .onMessage(RunStep.class, m -> {
                    if (m.generation() != generation) return Behaviors.same();
                    if (schedule.sparseAt(m.step())) {
                        ctx.getLog().debug("worker {} switches to sparse at step {}", worker, m.step());
                        run(m, true);
                        return sparse();
                    }
                    run(m, false);
                    return Behaviors.same();
                }));
    }

    /** From start_step·T on: sparse inside [start_step·T, end_step·T), dense after it. */
    private Behavior<Command> sparse() {
        return common(Behaviors.receive(Command.class)
                .onMessage(RunStep.class, m -> {
                    if (m.generation() != generation) return Behaviors.same();
                    run(m, schedule.sparseAt(m.step()));
                    return Behaviors.same();
                }));
    }

    private Behavior<Command> common(org.apache.pekko.actor.typed.javadsl.BehaviorBuilder<Command> b) {
        return b.onMessage(Reduced.class, this::onReduced)
                .onMessage(Restore.class, this::onRestore)
                .onMessage(Snapshot.class, this::onSnapshot)
                .onMessage(AttachPredictor.class, m -> {
                    attach(m.factors());
                    return Behaviors.same();
                })
                .onMessage(AttachRemotePredictor.class, m -> {
                    attach(new RemoteFactors(m.fingerprint()));
                    return Behaviors.same();
                })
                .onSignal(PostStop.class, s -> {
                    trainer.close();
                    return Behaviors.same();
                })
                .build();
    }

    private void attach(PredictorFactors f) {
        factory.attachPredictor(trainer, f);
        predictorAttached = true;
    }

    private void run(RunStep m, boolean sparse) {
        if (sparse && !predictorAttached)
            throw new IllegalStateException("step " + m.step() + " is sparse but worker " + worker + " has no predictor");
        factory.beginStep(trainer, generation, m.step());
        StepResult r = null;
        for (Batch micro : BatchShards.split(m.batch(), microBatches))   // the trainer sums their gradients
            r = sum(r, trainer.computeGradients(micro, m.step(), sparse));   // returns with the device work done
        backwardEndNanos = System.nanoTime();
        // one worker, or a device exchange: the gradients stay on the device, only the statistics go to the round
        float[][] grads = workers > 1 && !deviceExchange ? trainer.gradientsToHost() : null;
        contributedNanos = grads == null ? backwardEndNanos : System.nanoTime();   // no host copy: no aggregation work yet
        pendingStep = m.step();
        pendingResult = r;
        pendingReplyTo = m.replyTo();
        m.aggregator().tell(new GradientAggregator.Contribute(generation, m.step(), worker, grads, r, ctx.getSelf()));
    }

    /** One step's statistics over its micro-batches: sums (losses, tokens, FLOPs, time) — what one batch of all their rows reports. */
    static StepResult sum(StepResult a, StepResult b) {
        if (a == null) return b;
        return new StepResult(a.lossSum() + b.lossSum(), a.outputTokens() + b.outputTokens(), a.tokens() + b.tokens(),
                a.sparse() || b.sparse(), a.flops() + b.flops(), a.denseFlops() + b.denseFlops(),
                a.predictorFlops() + b.predictorFlops(), a.millis() + b.millis());
    }

    private Behavior<Command> onReduced(Reduced m) {
        if (m.generation() != generation || m.step() != pendingStep) return Behaviors.same();
        double lr = 0;
        long ready;
        if (!m.skip()) {
            if (m.grads() != null) trainer.gradientsFromHost(m.grads());
            ready = System.nanoTime();   // device path: the round's exchange finished before replying
            lr = trainer.applyUpdate(m.step(), m.totalOutputTokens());
        } else {
            ready = System.nanoTime();
        }
        pendingReplyTo.tell(new JobSupervisor.StepApplied(generation, m.step(), worker, lr, pendingResult, m.skip(),
                new JobSupervisor.AggTimes(backwardEndNanos, contributedNanos, ready)));
        pendingStep = -1;
        pendingResult = null;
        return Behaviors.same();
    }

    private Behavior<Command> onRestore(Restore m) {
        trainer.restore(m.state());
        generation = m.generation();
        pendingStep = -1;
        pendingResult = null;
        m.replyTo().tell(new JobSupervisor.StepperReady(generation, worker, ctx.getSelf()));
        return behaviourFor(m.step());
    }

    private Behavior<Command> onSnapshot(Snapshot m) {
        TrainerState s = trainer.state();
        // a copy taken on this thread: the checkpoint is written elsewhere while training goes on
        LinkedHashMap<String, float[]> copy = new LinkedHashMap<>();
        for (Map.Entry<String, float[]> e : s.tensors().entrySet()) copy.put(e.getKey(), e.getValue().clone());
        m.replyTo().tell(new JobSupervisor.StateSnapshot(m.generation(), new TrainerState(s.step(), copy), worker));
        return Behaviors.same();
    }
}
