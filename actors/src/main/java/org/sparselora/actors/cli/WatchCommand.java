package org.sparselora.actors.cli;

import java.util.Iterator;
import org.sparselora.proto.control.JobEvent;
import org.sparselora.proto.control.JobState;
import org.sparselora.proto.control.WatchRequest;
import picocli.CommandLine.Command;

/** {@code sparselora watch JOB}: live progress of a job on a server until it stops. */
@Command(name = "watch", mixinStandardHelpOptions = true,
        description = "Follow a job: step, loss, tokens/s, sparse/dense, ETA. Exits 0 when it finishes, 1 when it fails or is cancelled.")
public final class WatchCommand extends JobCommand {

    @Override
    int call(ClientOptions.Client c, String id) {
        return watch(c, id);
    }

    static int watch(ClientOptions.Client c, String id) {
        try (ProgressView view = new ProgressView(System.err, id)) {
            Iterator<JobEvent> it = c.stub().watchJob(WatchRequest.newBuilder().setId(id).build());
            while (it.hasNext()) view.on(it.next());
            view.close();
            System.out.println(id + " " + view.summary());
            return view.finalState() == JobState.FINISHED ? 0 : 1;
        }
    }
}
