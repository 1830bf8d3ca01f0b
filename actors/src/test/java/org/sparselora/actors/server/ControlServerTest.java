package org.sparselora.actors.server;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.ConfigFactory;
import io.grpc.CallOptions;
import io.grpc.ClientCall;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.MetadataUtils;
import java.io.ByteArrayInputStream;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.SpawnProtocol;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.cli.CliRunner;
import org.sparselora.actors.pipeline.JobSupervisor;
import org.sparselora.actors.pipeline.MetricsLog;
import org.sparselora.actors.pipeline.PredictorCache;
import org.sparselora.proto.control.DataSpec;
import org.sparselora.proto.control.JobId;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;
import org.sparselora.proto.control.LoraSpec;
import org.sparselora.proto.control.ListJobsRequest;
import org.sparselora.proto.control.SparseLoraControlGrpc;

/**
 * The control API over real loopback TCP: the CLI submits and watches a job to the end; calls
 * without or with a wrong token, with invalid fields, undecodable bytes or an oversized body are
 * rejected with the right status and change nothing.
 */
class ControlServerTest {

    static final String TOKEN = "s3cret-token-for-tests";
    static ActorSystem<SpawnProtocol.Command> system;
    static JobManager jobs;
    static ControlServer server;
    static ManagedChannel channel;
    @TempDir
    static Path dir;
    static Path tokenFile;

    @BeforeAll
    static void start() throws Exception {
        system = ActorSystem.create(SpawnProtocol.create(), "server-test",
                ConfigFactory.parseString("pekko.actor.serialize-messages = on").withFallback(ConfigFactory.load()));
        jobs = new JobManager(system, 1, JobManager.engines(), new JobSupervisor.Settings(Duration.ofSeconds(20), 3, 3, new PredictorCache()));
        tokenFile = dir.resolve("token");
        Files.writeString(tokenFile, TOKEN + "\n");
        server = ControlServer.start(new ControlServer.Options("127.0.0.1", 0, tokenFile, null, null, 64 << 10, 0, List.of(dir), false), jobs);
        channel = Grpc.newChannelBuilderForAddress("127.0.0.1", server.port(), InsecureChannelCredentials.create()).build();
    }

    @AfterAll
    static void stop() throws Exception {
        channel.shutdownNow();
        server.close();
        jobs.close();
        system.terminate();
    }

    static SparseLoraControlGrpc.SparseLoraControlBlockingStub stub(String token) {
        var s = SparseLoraControlGrpc.newBlockingStub(channel).withDeadlineAfter(Duration.ofSeconds(20));
        if (token == null) return s;
        Metadata md = new Metadata();
        md.put(BearerTokenInterceptor.AUTHORIZATION, "Bearer " + token);
        return s.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md));
    }

    static int jobCount() { return stub(TOKEN).listJobs(ListJobsRequest.getDefaultInstance()).getJobsCount(); }

    @Test
    void cliSubmitsAndWatchesAJobToCompletionOverLoopback() throws Exception {
        Path job = CliRunner.jobFile(dir, "e2e", 12, 2, 4, 5);
        String server = "127.0.0.1:" + ControlServerTest.server.port();
        CliRunner.Result sub = CliRunner.run("submit", job.toString(), "--server", server, "--token-file", tokenFile.toString());
        assertEquals(0, sub.code(), sub.err());
        String id = sub.out().trim();
        assertTrue(id.matches("job-[0-9]+"), sub.out());
        CliRunner.Result watch = CliRunner.run("watch", id, "--server", server, "--token-file", tokenFile.toString());
        assertEquals(0, watch.code(), watch.out() + watch.err());
        assertTrue(watch.out().contains(id + " finished at step 12"), watch.out());
        assertTrue(watch.err().contains("40 records, 2 malformed (skipped): line 3: missing 'output'"), watch.err());
        assertTrue(watch.err().contains("svd 100% layer 3/3"), watch.err());
        Path out = dir.resolve("out-e2e");
        assertEquals(12, Files.readAllLines(out.resolve(MetricsLog.FILE)).size());
        assertTrue(Files.exists(out.resolve("adapter/bigram.f32")));
        CliRunner.Result list = CliRunner.run("jobs", "--server", server, "--token-file", tokenFile.toString());
        assertTrue(list.out().contains(id) && list.out().contains("finished"), list.out());
        // the finished job cannot be resumed, and watching it again replays its history
        StatusRuntimeException e = assertThrows(StatusRuntimeException.class, () -> stub(TOKEN).resumeJob(JobId.newBuilder().setId(id).build()));
        assertEquals(Status.Code.FAILED_PRECONDITION, e.getStatus().getCode());
        CliRunner.Result again = CliRunner.run("watch", id, "--server", server, "--token-file", tokenFile.toString());
        assertEquals(0, again.code());
    }

    @Test
    void callsWithoutOrWithAWrongTokenAreUnauthenticatedAndChangeNothing() {
        int before = jobCount();
        JobSpec valid = validSpec("auth");
        StatusRuntimeException none = assertThrows(StatusRuntimeException.class, () -> stub(null).submitJob(valid));
        assertEquals(Status.Code.UNAUTHENTICATED, none.getStatus().getCode());
        StatusRuntimeException wrong = assertThrows(StatusRuntimeException.class, () -> stub("not-the-token").submitJob(valid));
        assertEquals(Status.Code.UNAUTHENTICATED, wrong.getStatus().getCode());
        assertEquals("invalid bearer token", wrong.getStatus().getDescription());
        StatusRuntimeException list = assertThrows(StatusRuntimeException.class, () -> stub("x").listJobs(ListJobsRequest.getDefaultInstance()));
        assertEquals(Status.Code.UNAUTHENTICATED, list.getStatus().getCode());
        assertEquals(before, jobCount());
        CliRunner.Result cli = CliRunner.run("jobs", "--server", "127.0.0.1:" + server.port());
        assertEquals(2, cli.code());
        assertTrue(cli.err().contains("UNAUTHENTICATED"), cli.err());
    }

    @Test
    void invalidFieldsAreInvalidArgumentNamingTheField() {
        int before = jobCount();
        assertInvalid(validSpec("a").toBuilder().setSteps(0).build(), "steps: must be in [1, 100000000], got 0");
        assertInvalid(validSpec("b").toBuilder().setLora(LoraSpec.newBuilder().addTargets("qq")).build(), "lora.targets: unknown projection 'qq'");
        assertInvalid(validSpec("c").toBuilder().setWorkers(3).build(), "workers: 3 workers cannot split batch_size 4 evenly");
        assertInvalid(validSpec("d").toBuilder().clearModel().build(), "model: is required");
        assertInvalid(validSpec("e").toBuilder().setDevice("tpu").build(), "device:");
        assertInvalid(validSpec("g").toBuilder().setModel(dir.resolve("no-model").toString()).build(), "model: '" + dir.resolve("no-model") + "': no such file or directory");
        assertInvalid(validSpec("f").toBuilder().setSparsityPath(dir.resolve("missing.yaml").toString()).build(), "sparsity: cannot read");
        StatusRuntimeException bad = assertThrows(StatusRuntimeException.class, () -> stub(TOKEN).getJob(JobId.newBuilder().setId("../etc").build()));
        assertEquals(Status.Code.INVALID_ARGUMENT, bad.getStatus().getCode());
        assertTrue(bad.getStatus().getDescription().startsWith("id:"));
        StatusRuntimeException missing = assertThrows(StatusRuntimeException.class, () -> stub(TOKEN).cancelJob(JobId.newBuilder().setId("job-999999").build()));
        assertEquals(Status.Code.NOT_FOUND, missing.getStatus().getCode());
        assertEquals(before, jobCount());
    }

    @Test
    void undecodableAndOversizedRequestsAreRejected() {
        int before = jobCount();
        MethodDescriptor<byte[], byte[]> raw = SparseLoraControlGrpc.getSubmitJobMethod().toBuilder(new RawBytes(), new RawBytes()).build();
        Metadata md = new Metadata();
        md.put(BearerTokenInterceptor.AUTHORIZATION, "Bearer " + TOKEN);
        var ch = io.grpc.ClientInterceptors.intercept(channel, MetadataUtils.newAttachHeadersInterceptor(md));
        byte[] garbage = {(byte) 0x0a, (byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff, 0x0f, 0x01};
        ClientCall<byte[], byte[]> call = ch.newCall(raw, CallOptions.DEFAULT.withDeadlineAfter(10, java.util.concurrent.TimeUnit.SECONDS));
        StatusRuntimeException g = assertThrows(StatusRuntimeException.class, () -> ClientCalls.blockingUnaryCall(call, garbage));
        assertEquals(Status.Code.INVALID_ARGUMENT, g.getStatus().getCode(), g.getStatus().toString());
        JobSpec huge = validSpec("huge").toBuilder().setName("x".repeat(100 << 10)).build();
        StatusRuntimeException big = assertThrows(StatusRuntimeException.class, () -> stub(TOKEN).submitJob(huge));
        assertEquals(Status.Code.RESOURCE_EXHAUSTED, big.getStatus().getCode(), big.getStatus().toString());
        assertEquals(before, jobCount());
    }

    @Test
    void aNonLoopbackBindWithoutATokenIsRefusedAtStartUp() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ControlServer.start(new ControlServer.Options("0.0.0.0", 0, null, null, null, 1 << 20, null), jobs));
        assertTrue(e.getMessage().contains("not a loopback address"), e.getMessage());
        CliRunner.Result cli = CliRunner.run("serve", "--bind", "0.0.0.0", "--port", "0");
        assertEquals(2, cli.code());
        assertTrue(cli.err().contains("refusing to serve it without --token-file"), cli.err());
    }

    @Test
    void prometheusMetricsAreServedOnTheOptInPort() throws Exception {
        HttpResponse<String> r = HttpClient.newHttpClient().send(
                HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + server.metricsPort() + "/metrics")).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode());
        assertTrue(r.body().contains("sparselora_jobs{state=\"running\"}") && r.body().contains("sparselora_steps_total"), r.body());
    }

    @Test
    void aQueuedJobBeyondTheConcurrencyLimitWaitsAndCanBeCancelled() throws Exception {
        JobSpec slow = validSpec("slow").toBuilder().setModel("toy:bigram?vocab=12&delay_ms=30").setSteps(200).build();
        String a = stub(TOKEN).submitJob(slow).getId();
        String b = stub(TOKEN).submitJob(validSpec("queued")).getId();
        assertEquals(JobState.QUEUED, stub(TOKEN).getJob(JobId.newBuilder().setId(b).build()).getState(),
                stub(TOKEN).listJobs(ListJobsRequest.getDefaultInstance()).getJobsList().stream().map(j -> j.getId() + " " + j.getState() + " " + j.getReason()).toList().toString());
        assertEquals(JobState.CANCELLED, stub(TOKEN).cancelJob(JobId.newBuilder().setId(b).build()).getState());
        stub(TOKEN).cancelJob(JobId.newBuilder().setId(a).build());
        assertEquals(JobState.CANCELLED, jobs.completion(a).get(30, java.util.concurrent.TimeUnit.SECONDS).getState());
        // a cancelled job resumes from its checkpoint and finishes
        JobState resumed = stub(TOKEN).resumeJob(JobId.newBuilder().setId(a).build()).getState();
        assertTrue(resumed == JobState.QUEUED || resumed == JobState.STARTING, resumed.toString());
        stub(TOKEN).cancelJob(JobId.newBuilder().setId(a).build());
        assertEquals(JobState.CANCELLED, jobs.completion(a).get(30, java.util.concurrent.TimeUnit.SECONDS).getState());
    }

    @Test
    void aLateWatcherGetsEveryStateEventAndTheRecentSteps() throws Exception {
        jobs.setReplayStepEvents(10);
        try {
            String id = stub(TOKEN).submitJob(validSpec("history").toBuilder().setSteps(35).build()).getId();
            assertEquals(JobState.FINISHED, jobs.completion(id).get(60, java.util.concurrent.TimeUnit.SECONDS).getState());
            var events = new java.util.ArrayList<org.sparselora.proto.control.JobEvent>();
            stub(TOKEN).watchJob(org.sparselora.proto.control.WatchRequest.newBuilder().setId(id).build()).forEachRemaining(events::add);
            var steps = events.stream().filter(org.sparselora.proto.control.JobEvent::hasStep).map(e -> e.getStep().getStep()).toList();
            assertTrue(steps.size() >= 10 && steps.size() <= 20, steps.toString());
            assertEquals(35, steps.get(steps.size() - 1));
            for (int i = 1; i < steps.size(); i++) assertEquals(steps.get(i - 1) + 1, steps.get(i));
            var states = events.stream().filter(org.sparselora.proto.control.JobEvent::hasState).map(e -> e.getState().getState()).toList();
            assertEquals(List.of(JobState.QUEUED, JobState.STARTING, JobState.STARTING, JobState.RUNNING, JobState.FINISHED), states);
        } finally {
            jobs.setReplayStepEvents(5_000);
        }
    }

    static void assertInvalid(JobSpec spec, String message) {
        StatusRuntimeException e = assertThrows(StatusRuntimeException.class, () -> stub(TOKEN).submitJob(spec));
        assertEquals(Status.Code.INVALID_ARGUMENT, e.getStatus().getCode());
        assertTrue(e.getStatus().getDescription().startsWith(message), e.getStatus().getDescription());
    }

    static JobSpec validSpec(String name) {
        return JobSpec.newBuilder().setName(name).setModel("toy:bigram?vocab=12").setData(DataSpec.newBuilder().setPath("toy:markov"))
                .setSteps(4).setBatchSize(4).setSeqLen(8).setWorkers(2).setOutputDir(dir.resolve("out-" + name).toString()).build();
    }

    static final class RawBytes implements MethodDescriptor.Marshaller<byte[]> {
        @Override
        public InputStream stream(byte[] value) { return new ByteArrayInputStream(value); }

        @Override
        public byte[] parse(InputStream stream) {
            try {
                return stream.readAllBytes();
            } catch (java.io.IOException e) {
                throw new RuntimeException(e);
            }
        }
    }
}
