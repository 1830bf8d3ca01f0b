package org.sparselora.actors.pipeline;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.typed.ActorRef;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.testengine.BigramWorker;
import org.sparselora.actors.testengine.BigramWorker.Faults;
import org.sparselora.actors.testengine.ToyEngine;
import org.sparselora.proto.control.JobEvent;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;

/**
 * Whole jobs through the JobSupervisor, with every cross-machine message serialized
 * ({@code serialize-messages = on}): data-parallel equivalence, the dense → sparse switch, restart
 * of a crashed or hung worker from the last checkpoint, giving up, NaN loss, cancel.
 */
class JobPipelineTest {

    static ActorTestKit kit;

    @BeforeAll
    static void start() { kit = ActorTestKit.create("pipeline", Jobs.serializeAll()); }

    @AfterAll
    static void stop() { kit.shutdownTestKit(); }

    @TempDir
    Path tmp;

    @Test
    void twoWorkersWithHalfBatchesTrainTheSameModelAsOneWorker() throws Exception {
        JobSpec one = Jobs.spec(tmp.resolve("one"), 1, 8, 10, 4);
        JobSpec two = Jobs.spec(tmp.resolve("two"), 2, 8, 10, 4);
        Jobs.Outcome a = Jobs.run(kit, one, new Faults(), Jobs.settings());
        Jobs.Outcome b = Jobs.run(kit, two, new Faults(), Jobs.settings());
        assertEquals(JobState.FINISHED, a.state(), a.reason());
        assertEquals(JobState.FINISHED, b.state(), b.reason());
        float[] wa = Jobs.weights(tmp.resolve("one")), wb = Jobs.weights(tmp.resolve("two"));
        float[] init = new BigramWorker(Jobs.VOCAB, 7, 0, 0.05, "cosine", 2, 10, new Faults()).weights();
        double moved = 0;
        for (int i = 0; i < wa.length; i++) {
            assertEquals(wa[i], wb[i], 2e-5, "weight " + i);
            moved = Math.max(moved, Math.abs(wa[i] - init[i]));
        }
        assertTrue(moved > 0.1, "training must move the weights, moved " + moved);
        // and the loss went down
        List<JsonNode> rows = metrics(tmp.resolve("one"));
        assertTrue(rows.get(9).get("loss").asDouble() < rows.get(0).get("loss").asDouble() - 0.2, "loss " + rows);
        List<JsonNode> rows2 = metrics(tmp.resolve("two"));
        for (int i = 0; i < 10; i++) assertEquals(rows.get(i).get("loss").asDouble(), rows2.get(i).get("loss").asDouble(), 1e-5);
    }

    @Test
    void metricsHaveOneRowPerStepAndSparsityStartsAtTheConfiguredStep() throws Exception {
        JobSpec s = Jobs.spec(tmp.resolve("m"), 2, 4, 10, 3);
        Jobs.Outcome o = Jobs.run(kit, s, new Faults(), Jobs.settings());
        assertEquals(JobState.FINISHED, o.state(), o.reason());
        List<JsonNode> rows = metrics(tmp.resolve("m"));
        assertEquals(10, rows.size());
        for (int i = 0; i < 10; i++) {
            JsonNode r = rows.get(i);
            assertEquals(i + 1, r.get("step").asInt());
            assertEquals(i >= 3, r.get("sparse").asBoolean(), "row " + r); // start_step 0.3 of 10 steps
            for (String k : List.of("loss", "lr", "flops", "dense_flops", "predictor_flops", "ms", "tokens")) assertTrue(r.has(k), k);
            assertEquals(r.get("sparse").asBoolean() ? r.get("dense_flops").asLong() / 2 : r.get("dense_flops").asLong(), r.get("flops").asLong());
        }
        assertTrue(o.count(JobEvent.KindCase.CHECKPOINT) >= 4, "checkpoints at 0, 3, 6, 9 and the final one");
        assertEquals(1, o.count(JobEvent.KindCase.DATA));
        assertTrue(Files.exists(tmp.resolve("m/adapter/bigram.f32")));
    }

    @Test
    void aWorkerThatThrowsIsRestartedFromTheLastCheckpointAndTheResultEqualsAnUninterruptedRun() throws Exception {
        Jobs.Outcome clean = Jobs.run(kit, Jobs.spec(tmp.resolve("clean"), 2, 4, 10, 3), new Faults(), Jobs.settings());
        assertEquals(JobState.FINISHED, clean.state(), clean.reason());
        Faults f = new Faults();
        f.throwAtStep = 5;
        f.throwOnWorker = 1;
        Jobs.Outcome faulty = Jobs.run(kit, Jobs.spec(tmp.resolve("faulty"), 2, 4, 10, 3), f, Jobs.settings());
        assertEquals(JobState.FINISHED, faulty.state(), faulty.reason());
        JobEvent restarted = faulty.events().stream().filter(JobEvent::hasRestarted).findFirst().orElseThrow();
        assertEquals(3, restarted.getRestarted().getFromStep());
        assertTrue(restarted.getRestarted().getCause().contains("injected fault at step 5"), restarted.toString());
        assertArrayEquals(Jobs.weights(tmp.resolve("clean")), Jobs.weights(tmp.resolve("faulty")));
        List<JsonNode> rows = metrics(tmp.resolve("faulty"));
        assertEquals(10, rows.size());
        for (int i = 0; i < 10; i++) assertEquals(i + 1, rows.get(i).get("step").asInt());
        for (int i = 0; i < 10; i++)
            assertEquals(metrics(tmp.resolve("clean")).get(i).get("loss").asDouble(), rows.get(i).get("loss").asDouble(), 0.0);
    }

    @Test
    void aHungWorkerTimesOutTheRoundAndIsReplaced() throws Exception {
        Faults f = new Faults();
        f.hangAtStep = 4;
        f.hangAtStepMs = 3000;
        JobSupervisor.Settings st = Jobs.settings().withRoundTimeout(Duration.ofMillis(700));
        Jobs.Outcome o = Jobs.run(kit, Jobs.spec(tmp.resolve("hung"), 2, 4, 8, 2), f, st);
        assertEquals(JobState.FINISHED, o.state(), o.reason());
        JobEvent r = o.events().stream().filter(JobEvent::hasRestarted).findFirst().orElseThrow();
        assertTrue(r.getRestarted().getCause().contains("timed out"), r.toString());
        assertEquals(4, r.getRestarted().getFromStep());
        Jobs.Outcome clean = Jobs.run(kit, Jobs.spec(tmp.resolve("hung-clean"), 2, 4, 8, 2), new Faults(), st);
        assertArrayEquals(Jobs.weights(tmp.resolve("hung-clean")), Jobs.weights(tmp.resolve("hung")));
    }

    @Test
    void repeatedFailuresStopTheJobWithAClearReason() throws Exception {
        Faults f = new Faults();
        f.throwAtStep = 2;
        f.throwTimes = 100;
        Jobs.Outcome o = Jobs.run(kit, Jobs.spec(tmp.resolve("rep"), 1, 4, 6, 1), f, Jobs.settings());
        assertEquals(JobState.FAILED, o.state());
        assertTrue(o.reason().contains("gave up after 4 worker failures") && o.reason().contains("injected fault at step 2"), o.reason());
        assertEquals(3, o.count(JobEvent.KindCase.RESTARTED));
    }

    @Test
    void aPersistentNanLossStopsTheJob() throws Exception {
        Faults f = new Faults();
        f.nanFromStep = 3;
        Jobs.Outcome o = Jobs.run(kit, Jobs.spec(tmp.resolve("nan"), 2, 4, 10, 5), f, Jobs.settings());
        assertEquals(JobState.FAILED, o.state());
        assertTrue(o.reason().contains("NaN/inf for 3 consecutive steps (steps 4–6)"), o.reason());
    }

    @Test
    void cancelStopsAfterTheCurrentStepWithAFinalCheckpoint() throws Exception {
        JobSpec s = Jobs.spec(tmp.resolve("cancel"), 1, 4, 1000, 0);
        Faults f = new Faults();
        f.delayMs = 20;
        Jobs.Watch w = new Jobs.Watch();
        ActorRef<JobSupervisor.Command> job = Jobs.start(kit, s, ToyEngine.runtime(s, Jobs.VOCAB, f, Jobs.source(s), 0), Jobs.settings(), w);
        while (w.events.stream().noneMatch(e -> e.hasStep() && e.getStep().getStep() >= 3)) Thread.sleep(10);
        job.tell(new JobSupervisor.Cancel("user asked"));
        Jobs.Outcome o = w.await();
        assertEquals(JobState.CANCELLED, o.state());
        assertEquals("user asked", o.reason());
        int rows = metrics(tmp.resolve("cancel")).size();
        assertTrue(rows >= 3 && rows < 1000);
        assertEquals(rows, new CheckpointStore(tmp.resolve("cancel")).read().getStep());
    }

    @Test
    void theFirstSparseStepWaitsForThePredictor() throws Exception {
        JobSpec s = Jobs.spec(tmp.resolve("pred"), 1, 4, 4, 0).toBuilder()
                .setSparsity(Jobs.spec(tmp, 1, 4, 4, 0).getSparsity().toBuilder().setStartStep(0)).build();
        Jobs.Watch w = new Jobs.Watch();
        Jobs.start(kit, s, ToyEngine.runtime(s, Jobs.VOCAB, new Faults(), Jobs.source(s), 600), Jobs.settings(), w);
        Jobs.Outcome o = w.await();
        assertEquals(JobState.FINISHED, o.state(), o.reason());
        int waiting = -1, firstStep = -1, ready = -1;
        for (int i = 0; i < o.events().size(); i++) {
            JobEvent e = o.events().get(i);
            if (waiting < 0 && e.hasState() && e.getState().getState() == JobState.BUILDING_PREDICTOR) waiting = i;
            if (ready < 0 && e.hasProgress() && e.getProgress().getFraction() == 1.0 && e.getProgress().getStage().equals("predictor")) ready = i;
            if (firstStep < 0 && e.hasStep()) firstStep = i;
        }
        assertTrue(waiting >= 0 && waiting < ready && ready < firstStep, o.events().toString());
        assertTrue(o.events().stream().anyMatch(e -> e.hasProgress() && e.getProgress().getMessage().equals("layer 2/3")));
        assertTrue(o.events().stream().filter(JobEvent::hasStep).allMatch(e -> e.getStep().getSparse()));
    }

    @Test
    void anOutputDirWithACheckpointIsNotOverwrittenWithoutResume() throws Exception {
        JobSpec s = Jobs.spec(tmp.resolve("twice"), 1, 4, 2, 0);
        assertEquals(JobState.FINISHED, Jobs.run(kit, s, new Faults(), Jobs.settings()).state());
        Jobs.Outcome again = Jobs.run(kit, s, new Faults(), Jobs.settings());
        assertEquals(JobState.FAILED, again.state());
        assertTrue(again.reason().contains("already holds a checkpoint"), again.reason());
        Jobs.Outcome resumed = Jobs.run(kit, s.toBuilder().setResume(true).build(), new Faults(), Jobs.settings());
        assertEquals(JobState.FINISHED, resumed.state(), resumed.reason());
        assertEquals(2, metrics(tmp.resolve("twice")).size());
        Jobs.Outcome other = Jobs.run(kit, s.toBuilder().setResume(true).setSeed(8).build(), new Faults(), Jobs.settings());
        assertEquals(JobState.FAILED, other.state());
        assertTrue(other.reason().startsWith("seed:"), other.reason());
    }

    static List<JsonNode> metrics(Path out) throws Exception {
        ObjectMapper m = new ObjectMapper();
        return Files.readAllLines(out.resolve(MetricsLog.FILE)).stream().map(l -> {
            try {
                return m.readTree(l);
            } catch (Exception e) {
                throw new RuntimeException(l, e);
            }
        }).toList();
    }
}
