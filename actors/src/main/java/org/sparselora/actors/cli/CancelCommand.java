package org.sparselora.actors.cli;

import org.sparselora.proto.control.JobId;
import org.sparselora.proto.control.JobStatus;
import picocli.CommandLine.Command;

/** {@code sparselora cancel JOB}. */
@Command(name = "cancel", mixinStandardHelpOptions = true,
        description = "Cancel a job: a queued job is dropped, a running one stops after its current step with a checkpoint.")
public final class CancelCommand extends JobCommand {

    @Override
    int call(ClientOptions.Client c, String id) {
        JobStatus s = c.stub().cancelJob(JobId.newBuilder().setId(id).build());
        System.out.println(s.getId() + " " + s.getState().name().toLowerCase() + (s.getReason().isEmpty() ? "" : ": " + s.getReason()));
        return 0;
    }
}
