package org.sparselora.actors.pipeline;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.time.Duration;
import java.util.LinkedHashMap;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.actor.typed.ActorRef;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.sparselora.engine.train.TrainerState;

/**
 * The cross-JVM channel-score all-reduce and the wire forms of the cluster messages (the test kit
 * runs with serialize-messages on, so every message here goes through ClusterProtobufSerializer).
 */
class ScoreHubTest {

    static final ActorTestKit kit = ActorTestKit.create(Jobs.serializeAll());

    @AfterAll
    static void stop() { kit.shutdownTestKit(); }

    @Test
    void sumsInWorkerOrderWhateverTheArrivalOrder() {
        ActorRef<ScoreHub.Command> hub = kit.spawn(ScoreHub.create(3, 0));
        TestProbe<ScoreHub.Sum> p0 = kit.createTestProbe(), p1 = kit.createTestProbe(), p2 = kit.createTestProbe();
        // values whose float sum depends on the order: (1e8 + 1) - 1e8 = 0 in float, 1e8 - 1e8 + 1 = 1
        hub.tell(new ScoreHub.Contribution(0, 4, 2, "mlp", 2, false, new float[]{1f, 3f}, p2.getRef()));
        hub.tell(new ScoreHub.Contribution(0, 4, 2, "mlp", 0, false, new float[]{1e8f, 1f}, p0.getRef()));
        p0.expectNoMessage(Duration.ofMillis(100));   // worker 1 missing
        hub.tell(new ScoreHub.Contribution(0, 4, 2, "mlp", 1, false, new float[]{-1e8f, 2f}, p1.getRef()));
        float[] expected = {(1e8f + -1e8f) + 1f, 1f + 2f + 3f};
        for (TestProbe<ScoreHub.Sum> p : java.util.List.of(p0, p1, p2)) {
            ScoreHub.Sum s = p.receiveMessage();
            assertEquals(4, s.step());
            assertArrayEquals(expected, s.sum());
        }
    }

    @Test
    void anAbstainingWorkerIsNotWaitedFor() {
        ActorRef<ScoreHub.Command> hub = kit.spawn(ScoreHub.create(2, 0));
        TestProbe<ScoreHub.Sum> p0 = kit.createTestProbe();
        hub.tell(new ScoreHub.Contribution(0, 1, 3, "attn.k", 0, false, new float[]{5f}, p0.getRef()));
        hub.tell(new ScoreHub.Contribution(0, 1, -1, "", 1, true, null, null));
        assertArrayEquals(new float[]{5f}, p0.receiveMessage().sum());
    }

    @Test
    void aNewGenerationReleasesTheWaitingAndIgnoresStaleScores() {
        ActorRef<ScoreHub.Command> hub = kit.spawn(ScoreHub.create(2, 0));
        TestProbe<ScoreHub.Sum> p0 = kit.createTestProbe(), p1 = kit.createTestProbe();
        hub.tell(new ScoreHub.Contribution(0, 7, 1, "mlp", 0, false, new float[]{2f}, p0.getRef()));
        hub.tell(new ScoreHub.NewGeneration(1));
        assertArrayEquals(new float[]{2f}, p0.receiveMessage().sum(), "released with its own scores");
        hub.tell(new ScoreHub.Contribution(0, 7, 1, "mlp", 1, false, new float[]{9f}, p1.getRef()));
        assertArrayEquals(new float[]{9f}, p1.receiveMessage().sum(), "a stale step is answered at once");
        hub.tell(new ScoreHub.Contribution(1, 7, 1, "mlp", 0, false, new float[]{2f}, p0.getRef()));
        hub.tell(new ScoreHub.Contribution(1, 7, 1, "mlp", 1, false, new float[]{3f}, p1.getRef()));
        assertArrayEquals(new float[]{5f}, p0.receiveMessage().sum());
        assertArrayEquals(new float[]{5f}, p1.receiveMessage().sum());
    }

    @Test
    void trainerStatesAndNodeMessagesSurviveTheWire() {
        TestProbe<Object> sink = kit.createTestProbe();
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        t.put("a", new float[]{1f, -2f});
        t.put("b", new float[]{3f});
        TestProbe<JobSupervisor.Command> sup = kit.createTestProbe();
        ActorRef<Object> ref = sink.getRef();
        ref.tell(new JobSupervisor.StateSnapshot(3, new TrainerState(5, t), 1));
        JobSupervisor.StateSnapshot s = (JobSupervisor.StateSnapshot) sink.receiveMessage();
        assertEquals(5, s.state().step());
        assertArrayEquals(new float[]{1f, -2f}, s.state().tensors().get("a"));
        assertEquals(java.util.List.of("a", "b"), java.util.List.copyOf(s.state().tensors().keySet()));
        ref.tell(new WorkerHost.NodeInfo("pekko://sparselora@127.0.0.1:1", "worker", 42, java.util.List.of("cuda:0", "cuda:1")));
        assertEquals(new WorkerHost.NodeInfo("pekko://sparselora@127.0.0.1:1", "worker", 42, java.util.List.of("cuda:0", "cuda:1")),
                sink.receiveMessage());
        ref.tell(new Stepper.Restore(2, 4, new TrainerState(4, t), sup.getRef()));
        Stepper.Restore r = (Stepper.Restore) sink.receiveMessage();
        assertEquals(sup.getRef(), r.replyTo());
        assertArrayEquals(new float[]{3f}, r.state().tensors().get("b"));
    }

    @Test
    void deviceStringOfANodeSlot() {
        assertEquals("cpu", WorkerHost.deviceFor("cpu", 4));
        assertEquals("cuda:1,1,1", WorkerHost.deviceFor("cuda:1", 3));
        assertEquals("cuda:0,0", WorkerHost.deviceFor("cuda", 2));
    }
}
