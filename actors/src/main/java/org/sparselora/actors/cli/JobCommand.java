package org.sparselora.actors.cli;

import java.util.concurrent.Callable;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Parameters;

/**
 * A client command about one job on a server ({@code cancel JOB}, {@code watch JOB}): the job id
 * argument, the connection options, and a connection held open while {@link #call(ClientOptions.Client, String)} runs.
 */
abstract class JobCommand implements Callable<Integer> {

    @Parameters(index = "0", paramLabel = "JOB", description = "job id (job-<n>)")
    String id;

    @Mixin
    ClientOptions client;

    @Override
    public final Integer call() throws Exception {
        try (ClientOptions.Client c = client.connect()) {
            return call(c, id);
        }
    }

    /** What the command does with the job on the connected server; the exit status. */
    abstract int call(ClientOptions.Client c, String id);
}
