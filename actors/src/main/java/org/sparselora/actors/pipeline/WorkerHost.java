package org.sparselora.actors.pipeline;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.PostStop;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.receptionist.Receptionist;
import org.apache.pekko.actor.typed.receptionist.ServiceKey;
import org.sparselora.engine.sparse.DenseWarmup;
import org.sparselora.engine.train.TrainerState;
import org.sparselora.engine.train.TrainingWorker;
import org.sparselora.actors.job.SparsityProtos;
import org.sparselora.proto.control.JobSpec;

/**
 * The worker side of a cluster (role {@code worker}): one per node, registered with the
 * Receptionist under {@link #KEY}, offering one Stepper slot per local device. A coordinator's
 * JobSupervisor asks it to host worker w of a job ({@link HostStepper}); it opens the job's engine
 * side on this node once ({@link EngineProvider#openOnNode}: the model from the path every node
 * sees, no data — the coordinator sends each step's rows), spawns the Stepper on a pinned thread,
 * and the Stepper reports to the supervisor directly. The supervisor watches the Stepper (Pekko's
 * remote death watch), so a node that dies or is downed shows up there as a stopped worker.
 *
 * <p>Why the Receptionist and not Cluster Sharding: a job needs a fixed set of N workers placed
 * by the coordinator on the devices it chooses, each with a well-defined index (shard of every
 * batch, place in the gradient sum order), restarted from the job's own checkpoint rather than
 * re-created on demand; Sharding's entity-by-id placement, rebalancing and passivation would move
 * a worker (and its GPU state) behind the supervisor's back. The Receptionist only says which
 * nodes offer slots; the supervisor stays the one owner of placement.
 */
public final class WorkerHost {

    public static final ServiceKey<Command> KEY = ServiceKey.create(Command.class, "sparselora-worker");

    public sealed interface Command permits HostStepper, ReleaseJob, DescribeNode {}

    /** Host worker {@code worker} of {@code workers} of a job in this node's slot {@code slot}. */
    public record HostStepper(String jobId, JobSpec spec, int worker, int workers, int slot, long generation, TrainerState state,
                              int startStep, String predictorFingerprint, ActorRef<JobSupervisor.Command> supervisor,
                              ActorRef<ScoreHub.Command> scoreHub) implements Command, ClusterMessage {}

    /** The job ended (or moved its workers): stop its Steppers here and close what it opened. */
    public record ReleaseJob(String jobId) implements Command, ClusterMessage {}

    public record DescribeNode(ActorRef<NodeInfo> replyTo) implements Command, ClusterMessage {}

    /** One node of the cluster, as {@code cluster.json} lists it. */
    public record NodeInfo(String address, String role, long pid, List<String> devices) implements ClusterMessage {}

    /**
     * @param devices      one Stepper slot per entry ({@code cpu}, {@code cuda:0}, …)
     * @param scoreTimeout how long a Stepper waits for the channel-score sum of a sparse layer
     */
    public record Settings(List<String> devices, Duration scoreTimeout) {
        public Settings {
            if (devices.isEmpty()) throw new IllegalArgumentException("a worker node needs at least one device");
            for (String d : devices)
                if (!d.matches("cpu|cuda(:\\d+)?"))
                    throw new IllegalArgumentException("--devices: '" + d + "': expected cpu, cuda or cuda:<n>");
        }
    }

    public static Behavior<Command> create(Settings settings) {
        return Behaviors.setup(ctx -> {
            ctx.getSystem().receptionist().tell(Receptionist.register(KEY, ctx.getSelf()));
            return new WorkerHost(ctx, settings).behaviour();
        });
    }

    /** A job opened on this node: its engine side and the Steppers it hosts here. */
    private static final class NodeJob {
        final JobSpec spec;
        final JobRuntime runtime;
        final ClusterScoreExchange[] scores;
        final Map<Integer, ActorRef<Stepper.Command>> steppers = new HashMap<>();
        PredictorFactors local;   // built on first use

        NodeJob(JobSpec spec, JobRuntime runtime, ClusterScoreExchange[] scores) {
            this.spec = spec;
            this.runtime = runtime;
            this.scores = scores;
        }
    }

    private final ActorContext<Command> ctx;
    private final Settings settings;
    private final Map<String, NodeJob> jobs = new HashMap<>();
    private int spawned;

    private WorkerHost(ActorContext<Command> ctx, Settings settings) {
        this.ctx = ctx;
        this.settings = settings;
    }

    private Behavior<Command> behaviour() {
        return Behaviors.receive(Command.class)
                .onMessage(HostStepper.class, this::onHost)
                .onMessage(ReleaseJob.class, m -> {
                    release(m.jobId());
                    return Behaviors.same();
                })
                .onMessage(DescribeNode.class, m -> {
                    m.replyTo().tell(new NodeInfo(ctx.getSystem().address().toString(), "worker", ProcessHandle.current().pid(),
                            settings.devices()));
                    return Behaviors.same();
                })
                .onSignal(PostStop.class, s -> {
                    for (String id : List.copyOf(jobs.keySet())) release(id);
                    return Behaviors.same();
                })
                .build();
    }

    private Behavior<Command> onHost(HostStepper m) {
        NodeJob job;
        try {
            job = jobs.get(m.jobId());
            if (job == null || !job.spec.equals(m.spec())) {
                if (job != null) release(m.jobId());
                job = open(m);
                jobs.put(m.jobId(), job);
            }
        } catch (Exception | LinkageError e) {
            // a failure like a crash: the supervisor restarts (and gives up after max-restarts, with this reason)
            String why = ctx.getSystem().address() + ": " + DataLoader.message(e);
            ctx.getLog().error("job {}: cannot open worker {} on this node: {}", m.jobId(), m.worker(), why);
            m.supervisor().tell(new JobSupervisor.WorkerFailed(m.generation(), m.worker(), why));
            return Behaviors.same();
        }
        ActorRef<Stepper.Command> old = job.steppers.remove(m.worker());
        if (old != null) ctx.stop(old);
        job.scores[m.worker()].generation(m.generation());
        NodeJob j = job;
        WorkerFactory factory = new WorkerFactory() {
            @Override
            public TrainingWorker create(int worker, int workers) throws Exception { return j.runtime.workers().create(worker, workers); }

            @Override
            public void attachPredictor(TrainingWorker w, PredictorFactors f) {
                j.runtime.workers().attachPredictor(w, f instanceof RemoteFactors r ? localFactors(j, r.fingerprint()) : f);
            }

            @Override
            public void beginStep(TrainingWorker w, long generation, int step) { j.scores[m.worker()].generation(generation); }
        };
        DenseWarmup schedule = DenseWarmup.of(SparsityProtos.forJob(m.spec()), m.spec().getSteps());
        PredictorFactors factors = m.predictorFingerprint().isEmpty() ? null : new RemoteFactors(m.predictorFingerprint());
        ActorRef<Stepper.Command> ref = ctx.spawn(
                Stepper.create(new Stepper.Settings(m.worker(), m.workers(), Math.max(1, m.spec().getGradAccumSteps()), factory, schedule, false, m.supervisor()),
                        m.generation(), m.state(), m.startStep(), factors),
                "job-" + m.jobId().replaceAll("[^A-Za-z0-9_-]", "_") + "-stepper-" + m.worker() + "-" + (spawned++), Stepper.dispatcher());
        job.steppers.put(m.worker(), ref);
        return Behaviors.same();
    }

    private NodeJob open(HostStepper m) throws Exception {
        JobSpec spec = m.spec().toBuilder().setDevice(deviceFor(settings.devices().get(m.slot() % settings.devices().size()), m.workers())).build();
        ClusterScoreExchange[] scores = new ClusterScoreExchange[m.workers()];
        for (int w = 0; w < scores.length; w++)
            scores[w] = new ClusterScoreExchange(ctx.getSystem(), m.scoreHub(), w, m.workers(), settings.scoreTimeout());
        JobRuntime rt = EngineProvider.providerFor(spec).openOnNode(spec, w -> scores[w]);
        return new NodeJob(m.spec(), rt, scores);
    }

    /**
     * The job's device string for this node: every worker index it may host runs on the slot's
     * device ({@code cuda:k} → {@code cuda:k,k,…}, one entry per worker of the job).
     */
    static String deviceFor(String slot, int workers) {
        if (slot.equals("cpu")) return "cpu";
        String ordinal = slot.equals("cuda") ? "0" : slot.substring("cuda:".length());
        return "cuda:" + String.join(",", java.util.Collections.nCopies(workers, ordinal));
    }

    /** This node's own factors (built once per job, on the Stepper's thread), checked against the coordinator's. */
    private static PredictorFactors localFactors(NodeJob j, String fingerprint) {
        synchronized (j) {
            if (j.local == null) {
                if (j.runtime.predictor() == null) throw new IllegalStateException("the job is sparse but this node's engine built no predictor");
                boolean[] started = new boolean[1];
                CompletableFuture<PredictorFactors> f = PredictorCache.shared().getOrBuild(j.runtime.predictor(),
                        (stage, fraction, message) -> {}, Runnable::run, started);
                j.local = f.join();
            }
            String mine = j.local.fingerprint();
            if (!mine.equals(fingerprint))
                throw new IllegalStateException("predictor factors on this node hash to " + mine + ", the coordinator's to " + fingerprint
                        + ": the nodes do not see the same base model");
            return j.local;
        }
    }

    private void release(String jobId) {
        NodeJob job = jobs.remove(jobId);
        if (job == null) return;
        for (ActorRef<Stepper.Command> s : job.steppers.values()) ctx.stop(s);
        // the Steppers close their workers on their own threads; the runtime (weights source) after them
        try {
            job.runtime.close();
        } catch (Exception e) {
            ctx.getLog().warn("job {}: closing its engine side: {}", jobId, e.toString());
        }
    }
}
