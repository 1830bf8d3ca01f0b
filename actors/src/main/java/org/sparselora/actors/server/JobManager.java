package org.sparselora.actors.server;

import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.Props;
import org.apache.pekko.actor.typed.SpawnProtocol;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.sparselora.actors.job.JobSpecException;
import org.sparselora.actors.job.JobPaths;
import org.sparselora.actors.job.JobSpecs;
import org.sparselora.actors.job.OutputDirs;
import org.sparselora.actors.job.ResumeCheck;
import org.sparselora.actors.pipeline.CheckpointStore;
import org.sparselora.actors.pipeline.EngineProvider;
import org.sparselora.actors.pipeline.JobRuntime;
import org.sparselora.actors.pipeline.JobSupervisor;
import org.sparselora.proto.control.JobEvent;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;
import org.sparselora.proto.control.JobStatus;
import org.sparselora.proto.control.StateChange;

/**
 * The jobs of one process (the server, or {@code train} in-process): validates and queues
 * submissions, runs at most {@code maxConcurrent} at a time (each under its own JobSupervisor,
 * spawned through the actor system's SpawnProtocol guardian), keeps every job's event history for
 * watchers that join late, and cancels/resumes. Thread-safe: gRPC threads call in, supervisors
 * publish events from actor threads.
 */
public final class JobManager implements AutoCloseable {

    /** Opens the engine side of a job; by default the installed {@link EngineProvider}s. */
    @FunctionalInterface
    public interface RuntimeOpener {
        JobRuntime open(JobSpec spec) throws Exception;

        /** Cheap checks at submit time (a {@link JobSpecException} becomes INVALID_ARGUMENT); the default checks nothing. */
        default void check(JobSpec spec) {}
    }

    private final ActorSystem<SpawnProtocol.Command> system;
    private final int maxConcurrent;
    private final RuntimeOpener opener;
    private final JobSupervisor.Settings settings;
    private final Map<String, Job> jobs = new LinkedHashMap<>();
    private final ArrayDeque<Job> queue = new ArrayDeque<>();
    private final ExecutorService starter = Executors.newSingleThreadExecutor(Thread.ofPlatform().name("job-starter").daemon().factory());
    private final AtomicLong ids = new AtomicLong();
    private int running;
    private Counter steps, tokens, finished, failed;

    public JobManager(ActorSystem<SpawnProtocol.Command> system, int maxConcurrent, RuntimeOpener opener, JobSupervisor.Settings settings) {
        if (maxConcurrent < 1) throw new IllegalArgumentException("max concurrent jobs must be >= 1, got " + maxConcurrent);
        this.system = system;
        this.maxConcurrent = maxConcurrent;
        this.opener = opener;
        this.settings = settings;
    }

    /** The installed {@link EngineProvider}s; a model none of them runs is refused at submit. */
    public static RuntimeOpener engines() {
        return new RuntimeOpener() {
            @Override
            public JobRuntime open(JobSpec spec) throws Exception { return EngineProvider.openFor(spec); }

            @Override
            public void check(JobSpec spec) { EngineProvider.providerFor(spec); }
        };
    }

    /** Job counts by state and step/token counters, for Prometheus scraping. */
    public void bindMetrics(MeterRegistry registry) {
        for (JobState s : List.of(JobState.QUEUED, JobState.RUNNING, JobState.BUILDING_PREDICTOR, JobState.STARTING))
            Gauge.builder("sparselora_jobs", this, m -> m.count(s)).tag("state", s.name().toLowerCase()).description("jobs by state").register(registry);
        steps = Counter.builder("sparselora_steps").description("training steps completed").register(registry);
        tokens = Counter.builder("sparselora_tokens").description("tokens trained on").register(registry);
        finished = Counter.builder("sparselora_jobs_finished").description("jobs that finished").register(registry);
        failed = Counter.builder("sparselora_jobs_failed").description("jobs that failed").register(registry);
    }

    private synchronized double count(JobState s) {
        return jobs.values().stream().filter(j -> j.state == s).count();
    }

    /**
     * How a job is submitted: who owns it, whether a non-empty output_dir may be overwritten, and
     * which settings may differ from the checkpoint a resumed job continues ({@link ResumeCheck#CHANGEABLE}).
     */
    public record SubmitOptions(Caller owner, boolean overwrite, Set<String> allowChanges) {
        public static final SubmitOptions LOCAL = new SubmitOptions(Caller.LOCAL, false, Set.of());

        public SubmitOptions {
            allowChanges = Set.copyOf(allowChanges);
        }
    }

    /** {@link #submit(JobSpec, SubmitOptions)} by the local user, no overwrite, no changes on resume. */
    public String submit(JobSpec raw) { return submit(raw, SubmitOptions.LOCAL); }

    /**
     * Validates (a {@link JobSpecException} names the bad field), runs the pre-flight — every path
     * made canonical, input files present, output_dir usable, not in use and locked, a resume
     * compatible with its checkpoint — and queues; returns the new job's id. Nothing is started
     * for a job that fails here, so a bad job cannot hold up the queue.
     */
    public String submit(JobSpec raw, SubmitOptions how) {
        JobSpec spec = JobSpecs.prepare(JobPaths.canonical(raw, Path.of("").toAbsolutePath()));
        opener.check(spec);
        checkInputs(spec);
        synchronized (this) {
            for (Job j : jobs.values())
                if (!j.terminal() && j.spec.getOutputDir().equals(spec.getOutputDir()))
                    throw new JobSpecException("output_dir", "'" + spec.getOutputDir() + "' is in use by job " + j.id);
            OutputDirs.Claim claim = OutputDirs.claim(Path.of(spec.getOutputDir()), spec.getResume(), how.overwrite());
            try {
                if (spec.getResume()) ResumeCheck.check(checkpointedSpec(spec), spec, how.allowChanges());
            } catch (RuntimeException e) {
                claim.close();
                throw e;
            }
            String id = "job-" + ids.incrementAndGet();
            Job j = new Job(id, spec, how.owner().name());
            j.claim = claim;
            jobs.put(id, j);
            j.publishLocal(JobState.QUEUED, "queued");
            queue.add(j);
            startQueued();
            return id;
        }
    }

    /** Input files named by path must exist now: a job that cannot open them fails here, not after it starts. */
    private static void checkInputs(JobSpec spec) {
        for (Map.Entry<String, String> e : JobPaths.of(spec).entrySet()) {
            if (e.getKey().equals("output_dir")) continue;
            Path p = Path.of(e.getValue());
            if (!Files.exists(p)) throw new JobSpecException(e.getKey(), "'" + p + "': no such file or directory");
            if (!Files.isReadable(p)) throw new JobSpecException(e.getKey(), "'" + p + "': not readable");
        }
    }

    /** The spec recorded in the checkpoint a resumed job continues. */
    private static JobSpec checkpointedSpec(JobSpec spec) {
        try {
            return JobSpec.parseFrom(new CheckpointStore(Path.of(spec.getOutputDir())).read().getJobSpec());
        } catch (java.io.IOException e) {
            throw new JobSpecException("resume", e.getMessage());
        }
    }

    public synchronized JobStatus get(String id) {
        Job j = jobs.get(id);
        return j == null ? null : j.status();
    }

    /** The job's status if {@code caller} may see it, else null (as for an unknown id: others' jobs are not revealed). */
    public synchronized JobStatus get(String id, Caller caller) {
        return visible(id, caller) ? get(id) : null;
    }

    /** Whether the job exists and {@code caller} owns it or is an admin. */
    public synchronized boolean visible(String id, Caller caller) {
        Job j = jobs.get(id);
        return j != null && caller.mayAccess(j.owner);
    }

    public synchronized List<JobStatus> list() { return list(Caller.LOCAL); }

    /** The jobs {@code caller} may see. */
    public synchronized List<JobStatus> list(Caller caller) {
        List<JobStatus> out = new ArrayList<>();
        for (Job j : jobs.values()) if (caller.mayAccess(j.owner)) out.add(j.status());
        return out;
    }

    /** Queued: cancelled at once. Running: stops after the current step, with a checkpoint. */
    public synchronized JobStatus cancel(String id, String reason) {
        Job j = jobs.get(id);
        if (j == null) return null;
        if (j.state == JobState.QUEUED) {
            queue.remove(j);
            j.publishLocal(JobState.CANCELLED, reason);
        } else if (!j.terminal()) {
            j.cancelReason = reason;
            if (j.supervisor != null) j.supervisor.tell(new JobSupervisor.Cancel(reason));
        }
        return j.status();
    }

    /** Runs a stopped job again from its last checkpoint (same id; events continue). */
    public synchronized JobStatus resume(String id) {
        Job j = jobs.get(id);
        if (j == null) return null;
        if (!j.terminal()) throw new IllegalStateException("job " + id + " is " + j.state.name().toLowerCase() + ", not stopped");
        if (j.state == JobState.FINISHED) throw new IllegalStateException("job " + id + " already finished");
        JobSpec again = j.spec.toBuilder().setResume(true).build();
        for (Job o : jobs.values())
            if (o != j && !o.terminal() && o.spec.getOutputDir().equals(again.getOutputDir()))
                throw new IllegalStateException("output_dir '" + again.getOutputDir() + "' is in use by job " + o.id);
        try {
            j.claim = OutputDirs.claim(Path.of(again.getOutputDir()), true, false);
        } catch (JobSpecException e) {
            throw new IllegalStateException(e.getMessage());
        }
        j.spec = again;
        j.done = new CompletableFuture<>();
        j.cancelReason = null;
        j.supervisor = null;
        j.publishLocal(JobState.QUEUED, "resume queued");
        queue.add(j);
        startQueued();
        return j.status();
    }

    /** Completes with the final status when the (current run of the) job stops. */
    public synchronized CompletableFuture<JobStatus> completion(String id) {
        Job j = jobs.get(id);
        if (j == null) throw new IllegalArgumentException("no job " + id);
        return j.done;
    }

    /**
     * Replays the job's events (unless {@code onlyNew}), then delivers new ones; {@code onEnd} runs
     * after the terminal event. Returns the handle to stop watching, or null if there is no such job.
     */
    public synchronized Runnable watch(String id, boolean onlyNew, Consumer<JobEvent> sink, Runnable onEnd) {
        Job j = jobs.get(id);
        if (j == null) return null;
        synchronized (j) {
            if (!onlyNew) for (JobEvent e : j.events) sink.accept(e);
            if (j.terminal()) {
                onEnd.run();
                return () -> {};
            }
            Watcher w = new Watcher(sink, onEnd);
            j.watchers.add(w);
            return () -> j.watchers.remove(w);
        }
    }

    private synchronized void startQueued() {
        while (running < maxConcurrent && !queue.isEmpty()) {
            Job j = queue.poll();
            running++;
            j.launched = true;
            j.publishLocal(JobState.STARTING, j.spec.getResume() ? "opening the engine (resume)" : "opening the engine");
            starter.execute(() -> launch(j));
        }
    }

    private void launch(Job j) {
        JobRuntime rt;
        try {
            rt = opener.open(j.spec);
        } catch (Exception e) {
            j.onEvent(j.stateEvent(JobState.FAILED, e.getMessage() != null ? e.getMessage() : e.toString()));
            return;
        }
        String name = j.id + "-" + System.nanoTime();
        AskPattern.<SpawnProtocol.Command, ActorRef<JobSupervisor.Command>>ask(system,
                        r -> new SpawnProtocol.Spawn<>(JobSupervisor.create(j.id, j.spec, rt, j, settings), name, Props.empty(), r),
                        Duration.ofSeconds(30), system.scheduler())
                .whenComplete((ref, err) -> {
                    if (err != null) {
                        j.onEvent(j.stateEvent(JobState.FAILED, "could not start the job supervisor: " + err));
                        return;
                    }
                    synchronized (JobManager.this) {
                        j.supervisor = ref;
                        if (j.cancelReason != null) ref.tell(new JobSupervisor.Cancel(j.cancelReason));
                    }
                });
    }

    private void onTerminal(Job j) {
        synchronized (this) {
            running--;
            startQueued();
        }
    }

    @Override
    public void close() {
        List<Job> live;
        synchronized (this) {
            live = jobs.values().stream().filter(j -> !j.terminal()).toList();
        }
        for (Job j : live) cancel(j.id, "server shutting down");
        for (Job j : live) {
            try {
                j.done.get(60, java.util.concurrent.TimeUnit.SECONDS);
            } catch (Exception ignored) {
            }
        }
        starter.shutdownNow();
    }

    private record Watcher(Consumer<JobEvent> sink, Runnable onEnd) {}

    private volatile int replayStepEvents = 5_000;

    /** Step events kept per job for watchers that join late (default 5000; every other event is kept). */
    public void setReplayStepEvents(int n) {
        if (n < 1) throw new IllegalArgumentException("replay step events must be >= 1, got " + n);
        replayStepEvents = n;
    }

    /** One job: its spec, state and history; the JobSupervisor's listener. */
    private final class Job implements org.sparselora.actors.pipeline.JobListener {
        final String id;
        final long submitted = System.currentTimeMillis();
        volatile JobSpec spec;
        volatile JobState state = JobState.QUEUED;
        volatile ActorRef<JobSupervisor.Command> supervisor;
        volatile String cancelReason;
        /** counted in {@code running} until its terminal event */
        volatile boolean launched;
        volatile CompletableFuture<JobStatus> done = new CompletableFuture<>();
        int step;
        double lastLoss;
        String reason = "";
        List<JobEvent> events = new ArrayList<>();
        int stepEvents;
        final List<Watcher> watchers = new CopyOnWriteArrayList<>();

        final String owner;
        /** the output_dir lock, held from submit (or resume) until the terminal event */
        volatile OutputDirs.Claim claim;

        Job(String id, JobSpec spec, String owner) {
            this.id = id;
            this.spec = spec;
            this.owner = owner;
        }

        boolean terminal() {
            return state == JobState.FINISHED || state == JobState.FAILED || state == JobState.CANCELLED;
        }

        JobEvent stateEvent(JobState s, String why) {
            return JobEvent.newBuilder().setJobId(id).setUnixMs(System.currentTimeMillis())
                    .setState(StateChange.newBuilder().setState(s).setReason(why)).build();
        }

        void publishLocal(JobState s, String why) {
            onEvent(stateEvent(s, why));
        }

        @Override
        public void onEvent(JobEvent e) {
            boolean ended;
            synchronized (this) {
                if (terminal() && !(e.hasState() && e.getState().getState() == JobState.QUEUED)) return; // one terminal event per run
                events.add(e);
                if (e.hasStep() && ++stepEvents > 2 * replayStepEvents) compactHistory();
                if (e.hasState()) {
                    state = e.getState().getState();
                    reason = e.getState().getReason();
                }
                if (e.hasStep()) {
                    step = e.getStep().getStep();
                    lastLoss = e.getStep().getLoss();
                    if (steps != null) {
                        steps.increment();
                        tokens.increment(e.getStep().getTokens());
                    }
                }
                if (e.hasRestarted()) step = e.getRestarted().getFromStep();
                ended = terminal();
                for (Watcher w : watchers) w.sink().accept(e);
                if (ended) {
                    for (Watcher w : watchers) w.onEnd().run();
                    watchers.clear();
                }
            }
            if (ended) {
                OutputDirs.Claim c = claim;
                claim = null;
                if (c != null) c.close();
                if (finished != null) (state == JobState.FINISHED ? finished : failed).increment();
                done.complete(status());
                if (launched) {
                    launched = false;
                    onTerminal(this);
                }
            }
        }

        /** Drops the oldest step events beyond the replay limit (amortised: runs once per that many steps). */
        private void compactHistory() {
            int keep = replayStepEvents, drop = stepEvents - keep;
            List<JobEvent> kept = new ArrayList<>(events.size() - drop);
            for (JobEvent x : events) {
                if (x.hasStep() && drop > 0) {
                    drop--;
                    continue;
                }
                kept.add(x);
            }
            events = kept;
            stepEvents = keep;
        }

        synchronized JobStatus status() {
            return JobStatus.newBuilder().setId(id).setName(spec.getName()).setState(state).setStep(step)
                    .setTotalSteps(spec.getSteps()).setLastLoss(lastLoss).setReason(reason).setOutputDir(spec.getOutputDir())
                    .setSubmittedUnixMs(submitted).setSpec(spec).build();
        }
    }
}
