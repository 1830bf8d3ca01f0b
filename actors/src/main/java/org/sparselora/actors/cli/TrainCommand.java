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

/** {@code sparselora train --config job.yaml [--resume]}: the whole pipeline in this process, no server. */
@Command(name = "train", mixinStandardHelpOptions = true,
        description = {"Train a LoRA adapter as job.yaml says, in this process (the same actor pipeline the server runs).",
                "Writes <output_dir>/metrics.jsonl, <output_dir>/checkpoint/checkpoint.pb and <output_dir>/adapter/.",
                "Ctrl-C stops after the current step with a checkpoint; --resume continues from it."})
public final class TrainCommand implements Callable<Integer> {

    @Option(names = {"-c", "--config"}, required = true, paramLabel = "JOB.yaml", description = "the job file")
    Path config;

    @Option(names = "--resume", description = "continue from the checkpoint in output_dir")
    boolean resume;

    @Override
    public Integer call() throws Exception {
        JobSpec spec = JobFiles.load(config).toBuilder().setResume(resume).build();
        Config conf = Launch.config();
        ActorSystem<SpawnProtocol.Command> system = Launch.actorSystem(conf);
        JobManager jobs = new JobManager(system, 1, JobManager.engines(), Launch.settings(conf));
        try (ProgressView view = new ProgressView(System.err, spec.getName())) {
            String id = jobs.submit(spec);
            Thread hook = new Thread(() -> {
                jobs.cancel(id, "interrupted (Ctrl-C)");
                jobs.completion(id).join();
            });
            Runtime.getRuntime().addShutdownHook(hook);
            jobs.watch(id, false, view::on, () -> {});
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
            return end.getState() == JobState.FINISHED ? 0 : 1;
        } finally {
            system.terminate();
            system.getWhenTerminated().toCompletableFuture().join();
        }
    }
}
