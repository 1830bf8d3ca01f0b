package org.sparselora.actors.pipeline;

import org.sparselora.engine.model.Batch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.SpawnProtocol;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.server.JobManager;
import org.sparselora.actors.testengine.BigramWorker.Faults;
import org.sparselora.actors.testengine.ToyEngine;
import org.sparselora.engine.train.TrainingWorker;
import org.sparselora.proto.control.JobEvent;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;

/**
 * No job can hang its host: every failure while a job starts is a job failure with a reason (and
 * the engine side is closed), and a cancel ends the job in every phase of its life.
 */
class JobStartAndCancelTest {

    static ActorTestKit kit;

    @BeforeAll
    static void start() { kit = ActorTestKit.create("start-cancel", Jobs.serializeAll()); }

    @AfterAll
    static void stop() { kit.shutdownTestKit(); }

    @TempDir
    Path tmp;

    /** A runtime that records whether it was closed. */
    static final class Closing {
        final AtomicBoolean closed = new AtomicBoolean();

        JobRuntime wrap(JobRuntime rt) {
            return new JobRuntime(rt.workers(), new BatchSource() {
                @Override
                public DataSummary open() throws Exception { return rt.data().open(); }

                @Override
                public org.sparselora.engine.model.Batch next() throws Exception { return rt.data().next(); }

                @Override
                public DataPosition position() { return rt.data().position(); }

                @Override
                public void seek(DataPosition p) throws Exception { rt.data().seek(p); }

                @Override
                public void close() throws Exception {
                    closed.set(true);
                    rt.data().close();
                }
            }, rt.predictor(), rt.exporter(), rt.exchange());
        }
    }

    Jobs.Outcome startWith(Path outputDir) throws Exception {
        JobSpec s = Jobs.spec(tmp.resolve("unused"), 1, 4, 4, 0).toBuilder().setOutputDir(outputDir.toString()).build();
        Closing c = new Closing();
        Jobs.Watch w = new Jobs.Watch();
        Jobs.start(kit, s, c.wrap(ToyEngine.runtime(s, Jobs.VOCAB, new Faults(), Jobs.source(s), 0)), Jobs.settings(), w);
        Jobs.Outcome o = w.done.get(10, TimeUnit.SECONDS);
        assertTrue(c.closed.get(), "the engine side is closed");
        return o;
    }

    @Test
    void anOutputDirThatNamesAFileFailsTheJobNamingIt() throws Exception {
        Path file = Files.writeString(tmp.resolve("a-file"), "x");
        Jobs.Outcome o = startWith(file);
        assertEquals(JobState.FAILED, o.state());
        assertTrue(o.reason().contains(file.toString()), o.reason());
        assertEquals("x", Files.readString(file), "the file is left alone");
    }

    @Test
    void anOutputDirUnderAFileFailsTheJob() throws Exception {
        Path file = Files.writeString(tmp.resolve("b-file"), "x");
        Jobs.Outcome o = startWith(file.resolve("run"));
        assertEquals(JobState.FAILED, o.state());
        assertTrue(o.reason().contains(file.toString()), o.reason());
    }

    @Test
    void anOutputDirThatCannotBeCreatedFailsTheJob() throws Exception {
        Jobs.Outcome o = startWith(Path.of("/proc/sparselora-cannot-exist/run"));
        assertEquals(JobState.FAILED, o.state());
        assertTrue(o.reason().contains("/proc/sparselora-cannot-exist"), o.reason());
    }

    /**
     * Through the job manager, as the server runs jobs: a job whose start fails past the submit-time
     * checks (its engine cannot open the model) fails (it used to stay "starting" and hold the only
     * slot), and the job queued behind it runs. (An unusable output_dir no longer gets this far: the
     * job manager refuses it at submit.)
     */
    @Test
    void aJobThatCannotStartDoesNotBlockTheJobsQueuedBehindIt() throws Exception {
        ActorSystem<SpawnProtocol.Command> system = ActorSystem.create(SpawnProtocol.create(), "manager-start");
        try (JobManager jobs = new JobManager(system, 1, JobManager.engines(), Jobs.settings())) {
            Path file = Files.writeString(tmp.resolve("c-file"), "x");
            var refused = assertThrows(org.sparselora.actors.job.JobSpecException.class,
                    () -> jobs.submit(Jobs.spec(tmp.resolve("unused"), 1, 4, 2, 0).toBuilder().setOutputDir(file.toString()).build()));
            assertTrue(refused.getMessage().contains("exists and is not a directory"), refused.getMessage());
            String bad = jobs.submit(Jobs.spec(tmp.resolve("bad-model"), 1, 4, 2, 0).toBuilder().setModel("toy:bigram?vocab=many").build());
            String good = jobs.submit(Jobs.spec(tmp.resolve("after"), 1, 4, 2, 0));
            var badEnd = jobs.completion(bad).get(10, TimeUnit.SECONDS);
            assertEquals(JobState.FAILED, badEnd.getState());
            assertTrue(badEnd.getReason().contains("many"), badEnd.getReason());
            var goodEnd = jobs.completion(good).get(30, TimeUnit.SECONDS);
            assertEquals(JobState.FINISHED, goodEnd.getState(), goodEnd.getReason());
        } finally {
            system.terminate();
        }
    }

    /** Workers that take their time to come up (a model loading): the job is cancelled while starting. */
    @Test
    void cancelWhileTheWorkersStartEndsTheJob() throws Exception {
        JobSpec s = Jobs.spec(tmp.resolve("slow-start"), 2, 4, 4, 0);
        JobRuntime toy = ToyEngine.runtime(s, Jobs.VOCAB, new Faults(), Jobs.source(s), 0);
        CountDownLatch creating = new CountDownLatch(1);
        WorkerFactory slow = new WorkerFactory() {
            @Override
            public TrainingWorker create(int worker, int n) throws Exception {
                creating.countDown();
                if (worker == 1) {
                    try {
                        Thread.sleep(3_000);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
                return toy.workers().create(worker, n);
            }

            @Override
            public void attachPredictor(TrainingWorker w, PredictorFactors f) { toy.workers().attachPredictor(w, f); }
        };
        Jobs.Watch w = new Jobs.Watch();
        ActorRef<JobSupervisor.Command> sup = Jobs.start(kit, s, new JobRuntime(slow, toy.data(), toy.predictor(), toy.exporter()),
                Jobs.settings(), w);
        assertTrue(creating.await(10, TimeUnit.SECONDS));
        long t0 = System.nanoTime();
        sup.tell(new JobSupervisor.Cancel("user"));
        Jobs.Outcome o = w.done.get(10, TimeUnit.SECONDS);
        assertEquals(JobState.CANCELLED, o.state(), o.reason());
        assertEquals("user", o.reason());
        assertEquals(0, o.count(JobEvent.KindCase.STEP), "no step ran");
        assertTrue(System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(8));
    }

    /** The first step is sparse and the predictor takes long: the job is cancelled while waiting for it. */
    @Test
    void cancelWhileWaitingForThePredictorEndsTheJob() throws Exception {
        JobSpec s = Jobs.spec(tmp.resolve("pred-wait"), 1, 4, 4, 0);
        s = s.toBuilder().setSparsity(s.getSparsity().toBuilder().setStartStep(0)).build();
        Jobs.Watch w = new Jobs.Watch();
        ActorRef<JobSupervisor.Command> sup = Jobs.start(kit, s, ToyEngine.runtime(s, Jobs.VOCAB, new Faults(), Jobs.source(s), 30_000),
                Jobs.settings(), w);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (w.events.stream().noneMatch(e -> e.hasState() && e.getState().getState() == JobState.BUILDING_PREDICTOR)) {
            assertTrue(System.nanoTime() < deadline, "the job waits for the predictor: " + w.events);
            Thread.sleep(20);
        }
        sup.tell(new JobSupervisor.Cancel("enough"));
        Jobs.Outcome o = w.done.get(10, TimeUnit.SECONDS);
        assertEquals(JobState.CANCELLED, o.state(), o.reason());
        assertEquals(0, o.count(JobEvent.KindCase.STEP));
    }

    /** A cancel that arrives while a periodic checkpoint is taken stops right after it. */
    @Test
    void cancelDuringACheckpointStopsAfterIt() throws Exception {
        JobSpec s = Jobs.spec(tmp.resolve("ckpt"), 2, 4, 400, 1);
        Faults f = new Faults();
        f.delayMs = 5;
        Jobs.Watch w = new Jobs.Watch();
        ActorRef<JobSupervisor.Command> sup = Jobs.start(kit, s, ToyEngine.runtime(s, Jobs.VOCAB, f, Jobs.source(s), 0), Jobs.settings(), w);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (w.events.stream().noneMatch(JobEvent::hasCheckpoint)) {
            assertTrue(System.nanoTime() < deadline);
            Thread.sleep(5);
        }
        sup.tell(new JobSupervisor.Cancel(""));
        Jobs.Outcome o = w.done.get(20, TimeUnit.SECONDS);
        assertEquals(JobState.CANCELLED, o.state(), o.reason());
        assertEquals("cancelled", o.reason());
        long steps = o.count(JobEvent.KindCase.STEP);
        assertTrue(steps < 400, "stopped early: " + steps);
        assertEquals(steps, new CheckpointStore(tmp.resolve("ckpt")).read().getStep(), "the final checkpoint is at the last step");
    }
}
