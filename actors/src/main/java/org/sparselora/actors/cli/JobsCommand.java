package org.sparselora.actors.cli;

import java.util.Locale;
import java.util.concurrent.Callable;
import org.sparselora.proto.control.JobStatus;
import org.sparselora.proto.control.ListJobsRequest;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;

/** {@code sparselora jobs}: the server's jobs as a table. */
@Command(name = "jobs", mixinStandardHelpOptions = true, description = "List the server's jobs.")
public final class JobsCommand implements Callable<Integer> {

    @Mixin
    ClientOptions client;

    @Override
    public Integer call() throws Exception {
        try (ClientOptions.Client c = client.connect()) {
            var jobs = c.stub().listJobs(ListJobsRequest.getDefaultInstance()).getJobsList();
            System.out.printf(Locale.ROOT, "%-10s %-20s %-18s %13s %9s  %s%n", "ID", "NAME", "STATE", "STEP", "LOSS", "OUTPUT / REASON");
            for (JobStatus j : jobs)
                System.out.printf(Locale.ROOT, "%-10s %-20s %-18s %6d/%-6d %9.4f  %s%n", j.getId(), trim(j.getName(), 20),
                        j.getState().name().toLowerCase(Locale.ROOT), j.getStep(), j.getTotalSteps(), j.getLastLoss(),
                        j.getOutputDir() + (j.getReason().isEmpty() ? "" : "  (" + j.getReason() + ")"));
            return 0;
        }
    }

    private static String trim(String s, int n) { return s.length() <= n ? s : s.substring(0, n - 1) + "…"; }
}
