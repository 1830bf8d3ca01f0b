package org.sparselora.actors.pipeline;

import java.io.IOException;
import org.sparselora.proto.cluster.Checkpoint;
import org.sparselora.proto.control.JobSpec;

/**
 * The supervisor's own guard on a resume: the fields without which the checkpoint means nothing
 * (model, data, batch size, seed) must not change, and the checkpoint must not lie beyond the
 * job's steps. The full comparison, naming every differing key and honouring {@code
 * --allow-changes steps,device}, is the pre-flight {@link org.sparselora.actors.job.ResumeCheck}
 * run when the job is submitted; this one holds for any caller that starts a supervisor directly.
 */
final class ResumeCheck {

    private ResumeCheck() {}

    /** Throws naming the first field of {@code now} that differs from the checkpoint's job. */
    static void compatible(JobSpec now, int totalSteps, Checkpoint c) throws IOException {
        JobSpec then = JobSpec.parseFrom(c.getJobSpec());
        if (!then.getModel().equals(now.getModel())) throw new IllegalArgumentException("model: checkpoint was trained on '" + then.getModel() + "', job says '" + now.getModel() + "'");
        if (!then.getData().getPath().equals(now.getData().getPath())) throw new IllegalArgumentException("data.path: checkpoint was trained on '" + then.getData().getPath() + "', job says '" + now.getData().getPath() + "'");
        if (!then.getData().getSynthetic().equals(now.getData().getSynthetic()))
            throw new IllegalArgumentException("data.synthetic: checkpoint was trained on " + then.getData().getSynthetic().toString().replace('\n', ' ').strip()
                    + ", job says " + now.getData().getSynthetic().toString().replace('\n', ' ').strip());
        if (then.getBatchSize() != now.getBatchSize()) throw new IllegalArgumentException("batch_size: checkpoint job has " + then.getBatchSize() + ", job says " + now.getBatchSize());
        if (then.getSeed() != now.getSeed()) throw new IllegalArgumentException("seed: checkpoint job has " + then.getSeed() + ", job says " + now.getSeed());
        if (then.getGradAccumSteps() != now.getGradAccumSteps())
            throw new IllegalArgumentException("grad_accum_steps: checkpoint job has " + then.getGradAccumSteps() + ", job says " + now.getGradAccumSteps());
        if (c.getStep() > totalSteps) throw new IllegalArgumentException("steps: checkpoint is at step " + c.getStep() + ", beyond the job's " + totalSteps);
    }
}
