package org.sparselora.actors.server;

import io.grpc.Status;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.util.regex.Pattern;
import org.sparselora.actors.job.JobSpecException;
import org.sparselora.proto.control.JobEvent;
import org.sparselora.proto.control.JobId;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobStatus;
import org.sparselora.proto.control.ListJobsRequest;
import org.sparselora.proto.control.ListJobsResponse;
import org.sparselora.proto.control.SparseLoraControlGrpc;
import org.sparselora.proto.control.WatchRequest;

/**
 * The SparseLoraControl gRPC service over a {@link JobManager}: every request field is checked
 * (INVALID_ARGUMENT naming the field), unknown jobs are NOT_FOUND, state conflicts
 * FAILED_PRECONDITION, paths outside the server's roots PERMISSION_DENIED. Each client sees, watches,
 * cancels and resumes its own jobs only (another client's job is NOT_FOUND, as an unknown one);
 * an admin client sees all. WatchJob replays the job's history then streams until the job stops.
 */
public final class ControlService extends SparseLoraControlGrpc.SparseLoraControlImplBase {

    private static final Pattern JOB_ID = Pattern.compile("job-[0-9]{1,18}");
    private final JobManager jobs;
    private final PathPolicy paths;

    public ControlService(JobManager jobs, PathPolicy paths) {
        this.jobs = jobs;
        this.paths = paths;
    }

    private static Caller caller() { return BearerTokenInterceptor.CALLER.get(); }

    @Override
    public void submitJob(JobSpec spec, StreamObserver<JobId> out) {
        String id;
        try {
            // confined first: nothing of the job (not even its sparsity file) is opened outside the roots
            JobSpec confined = paths.confine(spec);
            id = jobs.submit(confined, new JobManager.SubmitOptions(caller(), false, java.util.Set.of()));
        } catch (io.grpc.StatusRuntimeException e) {
            out.onError(e);
            return;
        } catch (JobSpecException e) {
            out.onError(Status.INVALID_ARGUMENT.withDescription(e.getMessage()).asRuntimeException());
            return;
        }
        out.onNext(JobId.newBuilder().setId(id).build());
        out.onCompleted();
    }

    @Override
    public void getJob(JobId req, StreamObserver<JobStatus> out) {
        if (!validId(req.getId(), out)) return;
        reply(jobs.get(req.getId(), caller()), req.getId(), out);
    }

    @Override
    public void cancelJob(JobId req, StreamObserver<JobStatus> out) {
        if (!validId(req.getId(), out)) return;
        if (!jobs.visible(req.getId(), caller())) {
            reply(null, req.getId(), out);
            return;
        }
        reply(jobs.cancel(req.getId(), "cancelled by request (" + caller().name() + ")"), req.getId(), out);
    }

    @Override
    public void resumeJob(JobId req, StreamObserver<JobStatus> out) {
        if (!validId(req.getId(), out)) return;
        if (!jobs.visible(req.getId(), caller())) {
            reply(null, req.getId(), out);
            return;
        }
        try {
            reply(jobs.resume(req.getId()), req.getId(), out);
        } catch (IllegalStateException e) {
            out.onError(Status.FAILED_PRECONDITION.withDescription(e.getMessage()).asRuntimeException());
        }
    }

    @Override
    public void listJobs(ListJobsRequest req, StreamObserver<ListJobsResponse> out) {
        out.onNext(ListJobsResponse.newBuilder().addAllJobs(jobs.list(caller())).build());
        out.onCompleted();
    }

    @Override
    public void watchJob(WatchRequest req, StreamObserver<JobEvent> out) {
        if (!validId(req.getId(), out)) return;
        if (!jobs.visible(req.getId(), caller())) {
            out.onError(Status.NOT_FOUND.withDescription("id: no job '" + req.getId() + "'").asRuntimeException());
            return;
        }
        ServerCallStreamObserver<JobEvent> call = (ServerCallStreamObserver<JobEvent>) out;
        Object lock = new Object();
        boolean[] closed = new boolean[1];
        java.util.concurrent.atomic.AtomicReference<Runnable> stop = new java.util.concurrent.atomic.AtomicReference<>();
        // set before any event goes out: grpc allows it only while this handler runs
        call.setOnCancelHandler(() -> {
            synchronized (lock) {
                closed[0] = true;
            }
            Runnable s = stop.get();
            if (s != null) s.run();
        });
        Runnable handle = jobs.watch(req.getId(), req.getOnlyNew(), e -> {
            synchronized (lock) {
                if (!closed[0]) call.onNext(e);
            }
        }, () -> {
            synchronized (lock) {
                if (!closed[0]) call.onCompleted();
                closed[0] = true;
            }
        });
        if (handle == null) {
            out.onError(Status.NOT_FOUND.withDescription("id: no job '" + req.getId() + "'").asRuntimeException());
            return;
        }
        stop.set(handle);
        if (call.isCancelled()) handle.run();
    }

    private static boolean validId(String id, StreamObserver<?> out) {
        if (JOB_ID.matcher(id).matches()) return true;
        out.onError(Status.INVALID_ARGUMENT.withDescription("id: '" + (id.length() > 40 ? id.substring(0, 40) + "…" : id)
                + "' is not a job id (job-<n>)").asRuntimeException());
        return false;
    }

    private static <T> void reply(T value, String id, StreamObserver<T> out) {
        if (value == null) {
            out.onError(Status.NOT_FOUND.withDescription("id: no job '" + id + "'").asRuntimeException());
            return;
        }
        out.onNext(value);
        out.onCompleted();
    }
}
