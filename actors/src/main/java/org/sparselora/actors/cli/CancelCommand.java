package org.sparselora.actors.cli;

import java.util.concurrent.Callable;
import org.sparselora.proto.control.JobId;
import org.sparselora.proto.control.JobStatus;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Parameters;

/** {@code sparselora cancel JOB}. */
@Command(name = "cancel", mixinStandardHelpOptions = true,
        description = "Cancel a job: a queued job is dropped, a running one stops after its current step with a checkpoint.")
public final class CancelCommand implements Callable<Integer> {

    @Parameters(index = "0", paramLabel = "JOB", description = "job id (job-<n>)")
    String id;

    @Mixin
    ClientOptions client;

    @Override
    public Integer call() throws Exception {
        try (ClientOptions.Client c = client.connect()) {
            JobStatus s = c.stub().cancelJob(JobId.newBuilder().setId(id).build());
            System.out.println(s.getId() + " " + s.getState().name().toLowerCase() + (s.getReason().isEmpty() ? "" : ": " + s.getReason()));
            return 0;
        }
    }
}
