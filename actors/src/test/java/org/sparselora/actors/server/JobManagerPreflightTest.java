package org.sparselora.actors.server;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.SpawnProtocol;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.cli.CliRunner;
import org.sparselora.actors.job.JobFiles;
import org.sparselora.actors.job.JobSpecException;
import org.sparselora.actors.pipeline.JobSupervisor;
import org.sparselora.actors.pipeline.PredictorCache;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;

/**
 * The JobManager's pre-flight, in-process: one directory spelled two ways is in use once, a job
 * refused at submit leaves the queue free for the next, and each caller sees only its own jobs.
 */
class JobManagerPreflightTest {

    static ActorSystem<SpawnProtocol.Command> system;
    static JobManager jobs;
    @TempDir
    static Path dir;

    @BeforeAll
    static void start() {
        system = ActorSystem.create(SpawnProtocol.create(), "preflight-test");
        jobs = new JobManager(system, 1, JobManager.engines(), new JobSupervisor.Settings(Duration.ofSeconds(20), 3, 3, new PredictorCache()));
    }

    @AfterAll
    static void stop() {
        jobs.close();
        system.terminate();
    }

    @Test
    void oneDirectorySpelledTwoWaysIsInUseOnce() throws Exception {
        JobSpec slow = JobFiles.load(CliRunner.jobFile(dir, "dup", 10_000, 1, 0, 20));
        String id = jobs.submit(slow);
        JobSpec same = slow.toBuilder().setOutputDir(dir.resolve("./out-dup/.").toString()).build();
        Files.createSymbolicLink(dir.resolve("dup-link"), dir.resolve("out-dup"));
        JobSpec viaLink = slow.toBuilder().setOutputDir(dir.resolve("dup-link").toString()).build();
        for (JobSpec s : new JobSpec[] {same, viaLink}) {
            JobSpecException e = assertThrows(JobSpecException.class, () -> jobs.submit(s));
            assertTrue(e.getMessage().contains("is in use by job " + id), e.getMessage());
        }
        jobs.cancel(id, "test done");
        assertEquals(JobState.CANCELLED, jobs.completion(id).get(60, TimeUnit.SECONDS).getState());
    }

    @Test
    void aRefusedJobLeavesTheQueueFreeAndCallersSeeOnlyTheirJobs() throws Exception {
        Files.writeString(dir.resolve("plain-file"), "x");
        JobSpec good = JobFiles.load(CliRunner.jobFile(dir, "good", 4, 1, 0, 0));
        Caller alice = new Caller("alice", false), bob = new Caller("bob", false);
        assertThrows(JobSpecException.class, () -> jobs.submit(good.toBuilder().setOutputDir(dir.resolve("plain-file").toString()).build(),
                new JobManager.SubmitOptions(alice, false, java.util.Set.of())));
        String id = jobs.submit(good, new JobManager.SubmitOptions(alice, false, java.util.Set.of()));
        assertEquals(JobState.FINISHED, jobs.completion(id).get(60, TimeUnit.SECONDS).getState());
        assertTrue(jobs.visible(id, alice) && !jobs.visible(id, bob) && jobs.visible(id, Caller.LOCAL));
        assertTrue(jobs.list(bob).stream().noneMatch(j -> j.getId().equals(id)));
        assertEquals(null, jobs.get(id, bob));
    }
}
