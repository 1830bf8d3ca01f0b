package org.sparselora.actors.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.MetadataUtils;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.job.JobFiles;
import org.sparselora.actors.server.BearerTokenInterceptor;
import org.sparselora.proto.control.DataSpec;
import org.sparselora.proto.control.JobId;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;
import org.sparselora.proto.control.JobStatus;
import org.sparselora.proto.control.ListJobsRequest;
import org.sparselora.proto.control.SparseLoraControlGrpc;

/**
 * A {@code serve} process on loopback, seen by clients with different tokens: job paths outside
 * {@code --root} are PERMISSION_DENIED without quoting the file, a job with an unusable output_dir
 * is refused at once and the next good job still runs to the end, each client sees and cancels
 * only its own jobs (the admin sees all), an oversized header is UNAUTHENTICATED, and the server
 * will not start on loopback without tokens unless told {@code --insecure-local}.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class ServeHardeningProcessTest {

    static final String ALICE = "alice-token-0123456789", BOB = "bob-token-0123456789ab", ADMIN = "admin-token-0123456789";
    @TempDir
    static Path dir;
    static Path root, outside;
    static Process serve;
    static String address;

    static List<String> javaCmd(String... args) {
        String java = ProcessHandle.current().info().command().orElse("java");
        List<String> cmd = new ArrayList<>(List.of(java, "--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                "--sun-misc-unsafe-memory-access=allow", "-Xmx256m", "-cp", System.getProperty("java.class.path"), Main.class.getName()));
        cmd.addAll(List.of(args));
        return cmd;
    }

    @BeforeAll
    static void start() throws Exception {
        root = Files.createDirectories(dir.resolve("root"));
        outside = Files.createDirectories(dir.resolve("outside"));
        Path tokens = Files.writeString(dir.resolve("tokens"), """
                # name role token
                alice user  %s
                bob   user  %s
                ops   admin %s
                """.formatted(ALICE, BOB, ADMIN));
        serve = new ProcessBuilder(javaCmd("serve", "--port", "0", "--token-file", tokens.toString(), "--root", root.toString()))
                .directory(dir.toFile()).redirectError(dir.resolve("serve.err").toFile()).start();
        String first = new BufferedReader(new InputStreamReader(serve.getInputStream(), StandardCharsets.UTF_8)).readLine();
        Matcher m = Pattern.compile("listening on 127\\.0\\.0\\.1:(\\d+)").matcher(first == null ? "" : first);
        assertTrue(m.find(), "serve said: " + first + " / " + Files.readString(dir.resolve("serve.err")));
        address = "127.0.0.1:" + m.group(1);
    }

    @AfterAll
    static void stop() throws Exception {
        if (serve != null) {
            serve.destroy();
            if (!serve.waitFor(30, TimeUnit.SECONDS)) serve.destroyForcibly();
        }
    }

    /** A stub sending {@code token}; the channel closes with the test JVM's shutdown (short-lived tests). */
    static SparseLoraControlGrpc.SparseLoraControlBlockingStub as(String token) {
        ManagedChannel ch = Grpc.newChannelBuilder(address, InsecureChannelCredentials.create()).build();
        Metadata md = new Metadata();
        md.put(BearerTokenInterceptor.AUTHORIZATION, "Bearer " + token);
        return SparseLoraControlGrpc.newBlockingStub(ch).withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md))
                .withDeadlineAfter(60, TimeUnit.SECONDS);
    }

    static JobSpec job(String name, int steps, long delayMs) throws Exception {
        return JobFiles.load(CliRunner.jobFile(root, name, steps, 1, 0, delayMs));
    }

    static JobStatus awaitEnd(SparseLoraControlGrpc.SparseLoraControlBlockingStub c, String id) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
        while (System.nanoTime() < deadline) {
            JobStatus s = c.getJob(JobId.newBuilder().setId(id).build());
            if (s.getState() == JobState.FINISHED || s.getState() == JobState.FAILED || s.getState() == JobState.CANCELLED) return s;
            Thread.sleep(50);
        }
        throw new AssertionError("job " + id + " did not end");
    }

    static Status.Code code(Runnable r) {
        return assertThrows(StatusRuntimeException.class, r::run).getStatus().getCode();
    }

    @Test
    void pathsOutsideTheRootsAreRefusedWithoutQuotingTheFile() throws Exception {
        Path secret = Files.writeString(outside.resolve("shadow"), "root:$6$SECRETHASH:19000:0:99999:7:::\n");
        JobSpec good = job("confined", 4, 0);
        List<JobSpec> bad = List.of(
                good.toBuilder().setData(DataSpec.newBuilder().setPath(secret.toString())).build(),
                good.toBuilder().setData(DataSpec.newBuilder().setPath(root.resolve("../outside/shadow").toString())).build(),
                good.toBuilder().setOutputDir(outside.resolve("out").toString()).build(),
                good.toBuilder().setOutputDir(System.getProperty("user.home") + "/.sparselora-should-not-exist").build());
        Files.createSymbolicLink(root.resolve("link-out"), outside);
        List<JobSpec> viaLink = List.of(good.toBuilder().setOutputDir(root.resolve("link-out/out2").toString()).build(),
                good.toBuilder().setData(DataSpec.newBuilder().setPath(root.resolve("link-out/shadow").toString())).build());
        for (JobSpec s : concat(bad, viaLink)) {
            StatusRuntimeException e = assertThrows(StatusRuntimeException.class, () -> as(ALICE).submitJob(s));
            assertEquals(Status.Code.PERMISSION_DENIED, e.getStatus().getCode(), e.getStatus().toString());
            assertFalse(e.getStatus().getDescription().contains("SECRET"), e.getStatus().getDescription());
        }
        try (var files = Files.list(outside)) {
            assertEquals(List.of(secret), files.toList(), "nothing created outside the root");
        }
        assertFalse(Files.exists(Path.of(System.getProperty("user.home"), ".sparselora-should-not-exist")));
    }

    @Test
    void aBrokenJobIsRefusedAtOnceAndTheNextGoodJobFinishes() throws Exception {
        Files.writeString(root.resolve("a-file"), "x");
        JobSpec good = job("after-broken", 4, 0);
        for (String out : List.of(root.resolve("a-file").toString(), root.resolve("a-file/under").toString())) {
            StatusRuntimeException e = assertThrows(StatusRuntimeException.class, () -> as(ALICE).submitJob(good.toBuilder().setOutputDir(out).build()));
            assertEquals(Status.Code.INVALID_ARGUMENT, e.getStatus().getCode());
            assertTrue(e.getStatus().getDescription().startsWith("output_dir: "), e.getStatus().getDescription());
        }
        String id = as(ALICE).submitJob(good).getId();
        JobStatus end = awaitEnd(as(ALICE), id);
        assertEquals(JobState.FINISHED, end.getState(), end.getReason());
        // the same directory spelled another way is the same directory
        JobSpec again = good.toBuilder().setOutputDir(root.resolve("./out-after-broken/../out-after-broken").toString()).build();
        StatusRuntimeException e = assertThrows(StatusRuntimeException.class, () -> as(ALICE).submitJob(again));
        assertTrue(e.getStatus().getDescription().contains("is not empty"), e.getStatus().getDescription());
    }

    @Test
    void eachClientSeesAndCancelsOnlyItsOwnJobs() throws Exception {
        String id = as(ALICE).submitJob(job("alice-slow", 10_000, 20)).getId();
        JobId jid = JobId.newBuilder().setId(id).build();
        assertTrue(as(ALICE).listJobs(ListJobsRequest.getDefaultInstance()).getJobsList().stream().anyMatch(j -> j.getId().equals(id)));
        assertTrue(as(BOB).listJobs(ListJobsRequest.getDefaultInstance()).getJobsList().stream().noneMatch(j -> j.getId().equals(id)));
        assertEquals(Status.Code.NOT_FOUND, code(() -> as(BOB).getJob(jid)));
        assertEquals(Status.Code.NOT_FOUND, code(() -> as(BOB).cancelJob(jid)));
        assertEquals(Status.Code.NOT_FOUND, code(() -> as(BOB).watchJob(org.sparselora.proto.control.WatchRequest.newBuilder().setId(id).build()).next()));
        assertTrue(as(ADMIN).listJobs(ListJobsRequest.getDefaultInstance()).getJobsList().stream().anyMatch(j -> j.getId().equals(id)));
        assertTrue(as(ALICE).getJob(jid).getState() != JobState.CANCELLED, "bob's cancel changed nothing");
        as(ALICE).cancelJob(jid);
        assertEquals(JobState.CANCELLED, awaitEnd(as(ALICE), id).getState());
    }

    @Test
    void unknownOrOversizedTokensAreUnauthenticated() {
        assertEquals(Status.Code.UNAUTHENTICATED, code(() -> as("x".repeat(20 << 10)).listJobs(ListJobsRequest.getDefaultInstance())));
        assertEquals(Status.Code.UNAUTHENTICATED, code(() -> as("not-a-known-token-000").listJobs(ListJobsRequest.getDefaultInstance())));
    }

    @Test
    void serveRefusesLoopbackWithoutTokensUnlessInsecureLocalAndNamesABadBind() throws Exception {
        Process p = new ProcessBuilder(javaCmd("serve", "--port", "0")).redirectErrorStream(true).start();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        String said = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.exitValue() != 0 && said.contains("--insecure-local"), said);
        Process b = new ProcessBuilder(javaCmd("serve", "--port", "0", "--insecure-local", "--bind", "0x0")).redirectErrorStream(true).start();
        assertTrue(b.waitFor(60, TimeUnit.SECONDS));
        String bs = new String(b.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(b.exitValue() != 0 && bs.contains("--bind '0x0': not an IP address"), bs);
    }

    private static <T> List<T> concat(List<T> a, List<T> b) {
        List<T> l = new ArrayList<>(a);
        l.addAll(b);
        return l;
    }
}
