package org.sparselora.actors.pipeline;

import org.sparselora.proto.control.JobEvent;
import org.sparselora.proto.control.JobState;
import org.sparselora.proto.control.StateChange;

/** A job's event stream: stamps events with the job id and time; at most one terminal state goes out. */
final class JobEvents {

    private final String jobId;
    private final JobListener listener;
    private boolean terminal;

    JobEvents(String jobId, JobListener listener) {
        this.jobId = jobId;
        this.listener = listener;
    }

    String jobId() { return jobId; }

    /** Whether the job's terminal state was published. */
    boolean terminal() { return terminal; }

    void state(JobState s, String reason) {
        if (terminal) return;
        terminal = s == JobState.FINISHED || s == JobState.FAILED || s == JobState.CANCELLED;
        emit(JobEvent.newBuilder().setState(StateChange.newBuilder().setState(s).setReason(reason == null ? "" : reason)));
    }

    void emit(JobEvent.Builder e) {
        listener.onEvent(e.setJobId(jobId).setUnixMs(System.currentTimeMillis()).build());
    }
}
