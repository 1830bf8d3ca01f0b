package org.sparselora.actors.pipeline;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.serialization.Serialization;
import org.apache.pekko.serialization.SerializationExtension;
import org.apache.pekko.actor.typed.javadsl.Adapter;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.StepResult;
import org.sparselora.engine.train.TrainerState;
import org.sparselora.proto.cluster.Checkpoint;
import org.sparselora.proto.control.StepMetrics;

/** The checkpoint file, the metrics file and the cluster-message serializer, byte for byte. */
class DurabilityTest {

    @TempDir
    Path dir;

    static TrainerState state() {
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        t.put("a", new float[]{1, -2.5f, Float.MIN_VALUE});
        t.put("a.exp_avg", new float[]{0, 3});
        return new TrainerState(5, t);
    }

    @Test
    void aCheckpointRoundTripsAndDamageIsReportedNamingTheFile() throws Exception {
        CheckpointStore store = new CheckpointStore(dir);
        Checkpoint c = CheckpointStore.fromTrainerState(state()).setStep(6)
                .setData(CheckpointStore.toProto(new DataPosition(2, 17, 99, 40))).build();
        store.write(c);
        Checkpoint back = store.read();
        assertEquals(c, back);
        TrainerState s = CheckpointStore.toTrainerState(back);
        assertEquals(5, s.step());
        assertArrayEquals(state().tensors().get("a"), s.tensors().get("a"));
        assertEquals(new DataPosition(2, 17, 99, 40), CheckpointStore.toPosition(back.getData()));
        try (var ds = Files.list(store.file().getParent())) {
            assertEquals(List.of(CheckpointStore.FILE), ds.map(p -> p.getFileName().toString()).toList(), "no temp file is left");
        }
        byte[] bytes = Files.readAllBytes(store.file());
        Files.write(store.file(), java.util.Arrays.copyOf(bytes, bytes.length - 3));
        assertTrue(assertThrows(IOException.class, store::read).getMessage().matches(".*checkpoint.pb: truncated checkpoint.*"));
        bytes[bytes.length - 1] ^= 1;
        Files.write(store.file(), bytes);
        assertTrue(assertThrows(IOException.class, store::read).getMessage().endsWith("checkpoint CRC mismatch (file damaged)"));
        Files.writeString(store.file(), "hello, this is not a checkpoint at all");
        assertTrue(assertThrows(IOException.class, store::read).getMessage().endsWith("not a SparseLoRA checkpoint (bad magic)"));
        Files.writeString(store.file().resolveSibling(CheckpointStore.FILE + ".123.tmp"), "half");
        store.removeStaleTemps();
        assertEquals(1, Files.list(store.file().getParent()).count());
    }

    @Test
    void theMetricsFileIsCutBackToTheCheckpointIncludingATornLastLine() throws Exception {
        MetricsLog log = new MetricsLog(dir);
        log.openAt(0);
        for (int i = 1; i <= 5; i++) log.append(StepMetrics.newBuilder().setStep(i).setLoss(1.0 / i).build());
        log.close();
        Files.writeString(log.file(), "{\"step\":6,\"lo", java.nio.file.StandardOpenOption.APPEND);
        log.openAt(5);
        log.append(StepMetrics.newBuilder().setStep(6).setLoss(0.1).build());
        log.close();
        List<String> lines = Files.readAllLines(log.file());
        assertEquals(6, lines.size());
        assertTrue(lines.get(5).startsWith("{\"step\":6,\"loss\":0.1,"), lines.get(5));
        log.openAt(3);
        log.close();
        assertEquals(3, Files.readAllLines(log.file()).size());
    }

    @Test
    void everyClusterMessageRoundTripsThroughTheRegisteredProtobufSerializer() {
        ActorTestKit kit = ActorTestKit.create("serde");
        try {
            Serialization ser = SerializationExtension.get(Adapter.toClassic(kit.system()));
            var sup = kit.<JobSupervisor.Command>createTestProbe().getRef();
            var agg = kit.<GradientAggregator.Command>createTestProbe().getRef();
            var stp = kit.<Stepper.Command>createTestProbe().getRef();
            Batch b = new Batch(2, 3, new int[]{1, 2, 3, 4, 5, 6}, new int[]{-100, 2, 3, -100, 5, -100}, new int[]{0, 1, 2, 0, 1, 2}, new int[]{0, 1});
            StepResult r = new StepResult(12.5, 3, 6, true, 1000, 2000, 10, 4.5);
            List<Object> msgs = List.of(
                    new Stepper.RunStep(3, 7, b, agg, sup),
                    new GradientAggregator.Contribute(3, 7, 1, new float[][]{{1, 2}, {3}}, r, stp),
                    new GradientAggregator.Contribute(3, 7, 0, null, r, stp),
                    new Stepper.Reduced(3, 7, new float[][]{{1.5f}}, 9, false),
                    new Stepper.Reduced(3, 7, null, 9, true),
                    new JobSupervisor.StepApplied(3, 7, 1, 2e-4, r, false, new JobSupervisor.AggTimes(11, 12, 13)),
                    new JobSupervisor.RoundTimedOut(3, 7, List.of(0, 2)),
                    // remote Steppers: placement, lifecycle, predictor check, channel scores
                    new JobSupervisor.StepperReady(3, 1, stp),
                    new JobSupervisor.WorkerFailed(3, 1, "no such file"),
                    new Stepper.Snapshot(3, sup),
                    new Stepper.AttachRemotePredictor("ab12"),
                    new WorkerHost.HostStepper("job-1", org.sparselora.proto.control.JobSpec.newBuilder().setName("n").setWorkers(2).build(),
                            1, 2, 0, 3, null, 4, "ab12", sup, kit.<ScoreHub.Command>createTestProbe().getRef()),
                    new WorkerHost.ReleaseJob("job-1"),
                    new WorkerHost.DescribeNode(kit.<WorkerHost.NodeInfo>createTestProbe().getRef()),
                    new ScoreHub.Contribution(3, 7, 2, "", 1, true, null, null));
            for (Object m : msgs) {
                var s = ser.findSerializerFor(m);
                assertEquals(ClusterProtobufSerializer.class, s.getClass(), m.getClass().getName());
                Object back = ser.deserialize(ser.serialize(m).get(), s.identifier(),
                        ((org.apache.pekko.serialization.SerializerWithStringManifest) s).manifest(m)).get();
                assertEquals(describe(m), describe(back));
            }
        } finally {
            kit.shutdownTestKit();
        }
    }

    /** Records with arrays compare by identity; compare their contents. */
    static String describe(Object o) {
        return switch (o) {
            case Stepper.RunStep m -> m.generation() + "/" + m.step() + "/" + java.util.Arrays.toString(m.batch().tokens())
                    + java.util.Arrays.toString(m.batch().targets()) + java.util.Arrays.toString(m.batch().positions())
                    + java.util.Arrays.toString(m.batch().keyStart()) + m.aggregator() + m.replyTo();
            case GradientAggregator.Contribute m -> m.generation() + "/" + m.step() + "/" + m.worker() + java.util.Arrays.deepToString(m.grads()) + m.stats() + m.stepper();
            case Stepper.Reduced m -> m.generation() + "/" + m.step() + java.util.Arrays.deepToString(m.grads()) + m.totalOutputTokens() + m.skip();
            default -> o.toString();
        };
    }
}
