package org.sparselora.actors.cli;

import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.sparselora.actors.job.JobFiles;
import org.sparselora.proto.control.JobId;
import org.sparselora.proto.control.JobSpec;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code sparselora submit job.yaml [--server host:port]}: queue a job on a server, print its id. */
@Command(name = "submit", mixinStandardHelpOptions = true, description = "Submit a job file to a server; prints the job id.")
public final class SubmitCommand implements Callable<Integer> {

    @Parameters(index = "0", paramLabel = "JOB.yaml", description = "the job file (relative paths in it are resolved here)")
    Path job;

    @Option(names = "--resume", description = "continue from the checkpoint in output_dir")
    boolean resume;

    @Option(names = "--watch", description = "then watch it to the end")
    boolean watch;

    @Mixin
    ClientOptions client;

    @Override
    public Integer call() throws Exception {
        JobSpec spec = JobFiles.load(job).toBuilder().setResume(resume).build();
        try (ClientOptions.Client c = client.connect()) {
            JobId id = c.stub().submitJob(spec);
            System.out.println(id.getId());
            System.out.flush();
            if (!watch) return 0;
            return WatchCommand.watch(c, id.getId());
        }
    }
}
