package org.sparselora.actors.pipeline;

import org.sparselora.proto.control.JobEvent;

/** Receives a job's events (state changes, step metrics, checkpoints, progress) in order, from the
 *  JobSupervisor's thread; implementations must be thread-safe and must not block. */
@FunctionalInterface
public interface JobListener {
    void onEvent(JobEvent event);
}
