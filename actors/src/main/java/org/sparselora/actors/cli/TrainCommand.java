package org.sparselora.actors.cli;

import com.typesafe.config.Config;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.SpawnProtocol;
import org.sparselora.actors.job.JobFiles;
import org.sparselora.actors.server.JobManager;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;
import org.sparselora.proto.control.JobStatus;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code sparselora train --config job.yaml [--resume] [--stop-after N]}: the whole pipeline in this
 * process, no server. {@code --stop-after} ends a run early with a checkpoint (a job trained in
 * parts, e.g. on a machine lent for a limited time), which {@code --resume} continues.
 */
@Command(name = "train", mixinStandardHelpOptions = true,
        description = {"Train a LoRA adapter (mode: lora) or every parameter (mode: full) as job.yaml says, in this process",
                "(the same actor pipeline the server runs). Writes <output_dir>/metrics.jsonl, loss.svg,",
                "checkpoint/checkpoint.pb and adapter/ (mode: full: model/, a HF model directory with the tokenizer).",
                "Ctrl-C stops after the current step with a checkpoint; --resume continues from it."})
public final class TrainCommand implements Callable<Integer> {

    @Option(names = {"-c", "--config"}, required = true, paramLabel = "JOB.yaml", description = "the job file")
    Path config;

    @Option(names = "--resume", description = "continue from the checkpoint in output_dir")
    boolean resume;

    @Option(names = "--overwrite", description = {"start over in an output_dir that holds an earlier run: its checkpoint, adapter, metrics and plot",
            "are removed first (without this, a non-empty output_dir is refused)"})
    boolean overwrite;

    @Option(names = "--allow-changes", split = ",", paramLabel = "KEY", description = {"with --resume: settings that may differ from the checkpoint's job",
            "(steps, device); any other difference is refused, naming the keys"})
    java.util.Set<String> allowChanges = new java.util.LinkedHashSet<>();

    @Option(names = "--stop-after", paramLabel = "N", description = {"stop once N steps are done (counting those before a --resume), with a checkpoint,",
            "as Ctrl-C does; exit 0. The run may go one step past N (the step already started). --resume continues it."})
    Integer stopAfter;

    @Option(names = "--random-init", paramLabel = "PRESET|config.json", description = {"train on base weights drawn at random (on the device, never through the host) instead of",
            "the job's model: llama3-8b, llama3.2-1b (timing shapes), tiny-1m, small-8m, base-30m (small shapes for",
            "pretraining from scratch in mode: full, vocabulary from the job's tokenizer) or an HF config.json",
            "(the job's model: random:… does the same)"})
    String randomInit;

    @Override
    public Integer call() throws Exception {
        Config conf = Launch.config();
        return run(conf, system -> Launch.settings(conf));
    }

    /**
     * Runs the job on an actor system made from {@code conf}, its supervisor set up by
     * {@code settings} (where the Steppers run: this JVM for {@code train}, the worker nodes of a
     * cluster for {@code launch} and {@code node --role coordinator}).
     */
    int run(Config conf, java.util.function.Function<ActorSystem<SpawnProtocol.Command>, org.sparselora.actors.pipeline.JobSupervisor.Settings> settings)
            throws Exception {
        JobSpec spec = JobFiles.load(config).toBuilder().setResume(resume).build();
        if (randomInit != null) {
            String m = randomInit.endsWith(".json") ? Path.of(randomInit).toAbsolutePath().normalize().toString() : randomInit;
            spec = spec.toBuilder().setModel(org.sparselora.actors.engine.RandomModel.PREFIX + m).build();
            try {
                org.sparselora.actors.job.JobSpecs.validate(spec);
            } catch (RuntimeException e) {
                throw new IllegalArgumentException("--random-init " + randomInit + ": " + e.getMessage(), e);
            }
        }
        if (stopAfter != null && (stopAfter < 1 || stopAfter >= spec.getSteps()))
            throw new IllegalArgumentException("--stop-after must be in [1, " + (spec.getSteps() - 1) + "] (the job has " + spec.getSteps() + " steps), got " + stopAfter);
        String stopReason = "stopped after step " + stopAfter + " (--stop-after)";
        ActorSystem<SpawnProtocol.Command> system = Launch.actorSystem(conf);
        JobManager jobs;
        try {
            jobs = new JobManager(system, 1, JobManager.engines(), settings.apply(system));
        } catch (RuntimeException e) {
            system.terminate();
            throw e;
        }
        try (ProgressView view = new ProgressView(System.err, spec.getName())) {
            if (!allowChanges.isEmpty() && !resume) throw new IllegalArgumentException("--allow-changes goes with --resume");
            if (overwrite && resume) throw new IllegalArgumentException("--overwrite and --resume exclude each other: one starts over, the other continues");
            String id = jobs.submit(spec, new JobManager.SubmitOptions(org.sparselora.actors.server.Caller.LOCAL, overwrite, allowChanges));
            Thread hook = new Thread(() -> {
                jobs.cancel(id, "interrupted (Ctrl-C)");
                jobs.completion(id).join();
            });
            Runtime.getRuntime().addShutdownHook(hook);
            java.util.concurrent.atomic.AtomicBoolean stopping = new java.util.concurrent.atomic.AtomicBoolean();
            jobs.watch(id, false, e -> {
                view.on(e);
                // off the event thread: cancelling re-enters the job manager
                if (stopAfter != null && e.hasStep() && e.getStep().getStep() >= stopAfter && stopping.compareAndSet(false, true))
                    Thread.ofVirtual().start(() -> jobs.cancel(id, stopReason));
            }, () -> {});
            JobStatus end = jobs.completion(id).get();
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException shuttingDown) {
                // the hook is already running
            }
            view.close();
            System.out.println(view.summary());
            if (end.getState() == JobState.FINISHED || end.getState() == JobState.CANCELLED)
                System.out.println("output: " + Path.of(end.getOutputDir()).toAbsolutePath());
            boolean stoppedAsAsked = stopping.get() && end.getState() == JobState.CANCELLED && end.getReason().equals(stopReason);
            return end.getState() == JobState.FINISHED || stoppedAsAsked ? 0 : 1;
        } finally {
            system.terminate();
            system.getWhenTerminated().toCompletableFuture().join();
        }
    }
}
