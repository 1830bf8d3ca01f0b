package org.sparselora.actors.pipeline;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.actor.typed.ActorRef;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.sparselora.actors.testengine.BigramWorker;
import org.sparselora.actors.testengine.MarkovSource;
import org.sparselora.actors.testengine.ToyEngine;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.sparse.DenseWarmup;
import org.sparselora.engine.train.StepResult;
import org.sparselora.engine.train.TrainingWorker;

/** Each stage's message protocol on its own, driven by test probes (serialize-messages on). */
class StageProtocolTest {

    static ActorTestKit kit;

    @BeforeAll
    static void start() { kit = ActorTestKit.create("stages", Jobs.serializeAll()); }

    @AfterAll
    static void stop() { kit.shutdownTestKit(); }

    // ---- Stepper -----------------------------------------------------------------------------

    static final class RecordingFactory implements WorkerFactory {
        final List<BigramWorker> made = new ArrayList<>();

        @Override
        public synchronized TrainingWorker create(int worker, int workers) {
            BigramWorker w = new BigramWorker(8, 1, worker, 0.01, "constant", 0, 10, new BigramWorker.Faults());
            made.add(w);
            return w;
        }

        @Override
        public void attachPredictor(TrainingWorker w, PredictorFactors f) { ((BigramWorker) w).predictor = f; }
    }

    static Batch batch() { return new MarkovSource(8, 6, 2, 10, 0, 3).next0(); }

    @Test
    void stepperSwitchesFromDenseWarmupToSparseAtExactlyTheConfiguredStep() {
        RecordingFactory f = new RecordingFactory();
        TestProbe<JobSupervisor.Command> sup = kit.createTestProbe();
        TestProbe<GradientAggregator.Command> agg = kit.createTestProbe();
        DenseWarmup sched = new DenseWarmup(10, 3, 10);
        ActorRef<Stepper.Command> st = kit.spawn(Stepper.create(new Stepper.Settings(0, 1, 1, f, sched, false, sup.getRef()), 0, null, 0, null),
                Stepper.dispatcher());
        sup.expectMessageClass(JobSupervisor.StepperReady.class);
        st.tell(new Stepper.AttachPredictor(new ToyEngine.Factors("k")));
        List<Boolean> sparse = new ArrayList<>();
        for (int s = 0; s < 6; s++) {
            st.tell(new Stepper.RunStep(0, s, batch(), agg.getRef(), sup.getRef()));
            GradientAggregator.Contribute c = agg.expectMessageClass(GradientAggregator.Contribute.class);
            assertNull(c.grads(), "one worker: no host round trip");
            sparse.add(c.stats().sparse());
            st.tell(new Stepper.Reduced(0, s, null, c.stats().outputTokens(), false));
            JobSupervisor.StepApplied a = sup.expectMessageClass(JobSupervisor.StepApplied.class);
            assertEquals(s, a.step());
            assertEquals(0.01, a.lr(), 1e-9);
        }
        assertEquals(List.of(false, false, false, true, true, true), sparse);
        assertEquals(List.of("0d", "1d", "2d", "3s", "4s", "5s"), f.made.get(0).log);
    }

    @Test
    void aSparseStepWithoutThePredictorFailsTheStepper() {
        TestProbe<JobSupervisor.Command> sup = kit.createTestProbe();
        TestProbe<GradientAggregator.Command> agg = kit.createTestProbe();
        ActorRef<Stepper.Command> st = kit.spawn(Stepper.create(new Stepper.Settings(0, 1, 1, new RecordingFactory(),
                new DenseWarmup(10, 0, 10), false, sup.getRef()), 0, null, 0, null), Stepper.dispatcher());
        sup.expectMessageClass(JobSupervisor.StepperReady.class);
        st.tell(new Stepper.RunStep(0, 0, batch(), agg.getRef(), sup.getRef()));
        sup.expectTerminated(st, Duration.ofSeconds(5));
    }

    @Test
    void withSeveralWorkersTheStepperShipsGradientsAndIgnoresStaleGenerations() {
        RecordingFactory f = new RecordingFactory();
        TestProbe<JobSupervisor.Command> sup = kit.createTestProbe();
        TestProbe<GradientAggregator.Command> agg = kit.createTestProbe();
        ActorRef<Stepper.Command> st = kit.spawn(Stepper.create(new Stepper.Settings(1, 2, 1, f, DenseWarmup.dense(10), false, sup.getRef()),
                5, null, 0, null), Stepper.dispatcher());
        assertEquals(1, sup.expectMessageClass(JobSupervisor.StepperReady.class).worker());
        st.tell(new Stepper.RunStep(4, 0, batch(), agg.getRef(), sup.getRef())); // old generation
        agg.expectNoMessage(Duration.ofMillis(200));
        st.tell(new Stepper.RunStep(5, 0, batch(), agg.getRef(), sup.getRef()));
        GradientAggregator.Contribute c = agg.expectMessageClass(GradientAggregator.Contribute.class);
        assertNotNull(c.grads());
        assertEquals(64, c.grads()[0].length);
        // restore: new generation, and the snapshot reflects the restored state
        var state = f.made.get(0).state();
        st.tell(new Stepper.Restore(6, 0, state, sup.getRef()));
        assertEquals(6, sup.expectMessageClass(JobSupervisor.StepperReady.class).generation());
        st.tell(new Stepper.Reduced(5, 0, c.grads(), 10, false)); // stale: ignored
        sup.expectNoMessage(Duration.ofMillis(200));
        st.tell(new Stepper.Snapshot(6, sup.getRef()));
        JobSupervisor.StateSnapshot snap = sup.expectMessageClass(JobSupervisor.StateSnapshot.class);
        assertArrayEquals(state.tensors().get(BigramWorker.WEIGHT), snap.state().tensors().get(BigramWorker.WEIGHT));
    }

    // ---- GradientAggregator ------------------------------------------------------------------

    static StepResult stats(double loss, int out) { return new StepResult(loss, out, 20, false, 100, 100, 0, 1); }

    @Test
    void aRoundSumsTheShardsAndSendsEveryWorkerTheTotal() {
        TestProbe<JobSupervisor.Command> sup = kit.createTestProbe();
        TestProbe<Stepper.Command> w0 = kit.createTestProbe(), w1 = kit.createTestProbe(), w2 = kit.createTestProbe();
        ActorRef<GradientAggregator.Command> round = kit.spawn(GradientAggregator.round(3, 7, 3, Duration.ofSeconds(10), sup.getRef()));
        round.tell(new GradientAggregator.Contribute(3, 7, 2, new float[][]{{1, 2}, {3}}, stats(1.5, 4), w2.getRef()));
        round.tell(new GradientAggregator.Contribute(3, 7, 0, new float[][]{{10, 20}, {30}}, stats(2.5, 5), w0.getRef()));
        round.tell(new GradientAggregator.Contribute(3, 8, 1, new float[][]{{9, 9}, {9}}, stats(1, 1), w1.getRef())); // wrong step
        w0.expectNoMessage(Duration.ofMillis(100));
        round.tell(new GradientAggregator.Contribute(3, 7, 1, new float[][]{{100, 200}, {300}}, stats(3, 6), w1.getRef()));
        for (TestProbe<Stepper.Command> w : List.of(w0, w1, w2)) {
            Stepper.Reduced r = w.expectMessageClass(Stepper.Reduced.class);
            assertEquals(7, r.step());
            assertEquals(15, r.totalOutputTokens());
            assertFalse(r.skip());
            assertArrayEquals(new float[]{111, 222}, r.grads()[0]);
            assertArrayEquals(new float[]{333}, r.grads()[1]);
        }
        w0.expectTerminated(round, Duration.ofSeconds(3));
    }

    @Test
    void aRoundThatMissesAShardTimesOutNamingTheMissingWorker() {
        TestProbe<JobSupervisor.Command> sup = kit.createTestProbe();
        TestProbe<Stepper.Command> w0 = kit.createTestProbe();
        ActorRef<GradientAggregator.Command> round = kit.spawn(GradientAggregator.round(1, 4, 2, Duration.ofMillis(300), sup.getRef()));
        round.tell(new GradientAggregator.Contribute(1, 4, 0, new float[][]{{1}}, stats(1, 1), w0.getRef()));
        JobSupervisor.RoundTimedOut t = sup.expectMessageClass(JobSupervisor.RoundTimedOut.class, Duration.ofSeconds(3));
        assertEquals(List.of(1), t.missingWorkers());
        assertEquals(4, t.step());
        w0.expectNoMessage(Duration.ofMillis(100));
        sup.expectTerminated(round);
    }

    @Test
    void aSingleWorkerRoundRelaysTheTokenCountAndANanLossSkipsTheUpdate() {
        TestProbe<JobSupervisor.Command> sup = kit.createTestProbe();
        TestProbe<Stepper.Command> w0 = kit.createTestProbe();
        ActorRef<GradientAggregator.Command> round = kit.spawn(GradientAggregator.round(0, 0, 1, Duration.ofSeconds(5), sup.getRef()));
        round.tell(new GradientAggregator.Contribute(0, 0, 0, null, stats(Double.NaN, 9), w0.getRef()));
        Stepper.Reduced r = w0.expectMessageClass(Stepper.Reduced.class);
        assertNull(r.grads());
        assertEquals(9, r.totalOutputTokens());
        assertTrue(r.skip());
    }

    // ---- DataLoader --------------------------------------------------------------------------

    @Test
    void theDataLoaderPrefetchesABoundedNumberOfBatchesAndReportsTheDataOnce() throws Exception {
        MarkovSource src = new MarkovSource(8, 6, 2, 10, 3, 1);
        TestProbe<DataLoader.Event> probe = kit.createTestProbe();
        ActorRef<DataLoader.Command> dl = kit.spawn(DataLoader.create(src, 3, DataPosition.START, probe.getRef()));
        DataLoader.Summary s = probe.expectMessageClass(DataLoader.Summary.class);
        assertEquals(3, s.summary().malformed());
        assertEquals("line 3: missing 'output'", s.summary().malformedLines().get(0));
        Thread.sleep(300);
        assertEquals(3, src.nextCalls.get(), "reads ahead exactly `prefetch` batches, then waits for demand");
        MarkovSource ref = new MarkovSource(8, 6, 2, 10, 3, 1);
        for (int i = 0; i < 5; i++) {
            dl.tell(new DataLoader.Next(probe.getRef()));
            DataLoader.Loaded l = probe.expectMessageClass(DataLoader.Loaded.class);
            assertArrayEquals(ref.next0().tokens(), l.batch().tokens());
            assertEquals(ref.position(), l.after());
        }
        Thread.sleep(300);
        assertEquals(8, src.nextCalls.get());
        probe.expectNoMessage(Duration.ofMillis(100)); // the summary came once
        // seek back to after batch 2: the next batch is batch 3 again
        MarkovSource again = new MarkovSource(8, 6, 2, 10, 3, 1);
        again.next0();
        again.next0();
        DataPosition after2 = again.position();
        Batch third = again.next0();
        dl.tell(new DataLoader.Seek(after2, 1));
        dl.tell(new DataLoader.Next(probe.getRef()));
        DataLoader.Loaded l = probe.expectMessageClass(DataLoader.Loaded.class);
        assertEquals(1, l.seekGeneration());
        assertArrayEquals(third.tokens(), l.batch().tokens());
    }

    @Test
    void aFailingSourceIsReportedNotCrashed() {
        BatchSource broken = new BatchSource() {
            @Override public DataSummary open() { return new DataSummary(1, 0, List.of()); }
            @Override public Batch next() throws Exception { throw new java.io.IOException("data.jsonl: line 9: unreadable"); }
            @Override public DataPosition position() { return DataPosition.START; }
            @Override public void seek(DataPosition p) {}
        };
        TestProbe<DataLoader.Event> probe = kit.createTestProbe();
        kit.spawn(DataLoader.create(broken, 1, DataPosition.START, probe.getRef()));
        probe.expectMessageClass(DataLoader.Summary.class);
        assertEquals("data: data.jsonl: line 9: unreadable", probe.expectMessageClass(DataLoader.Failed.class).reason());
    }

    // ---- Predictor ---------------------------------------------------------------------------

    @Test
    void thePredictorIsBuiltOncePerBaseModelAndReportsProgress() {
        PredictorCache cache = new PredictorCache();
        int[] builds = new int[1];
        PredictorBuilder b = new PredictorBuilder() {
            @Override public String cacheKey() { return "llama#r8"; }

            @Override
            public PredictorFactors build(ProgressListener p) throws Exception {
                synchronized (builds) { builds[0]++; }
                for (int i = 1; i <= 4; i++) {
                    Thread.sleep(50);
                    p.progress("svd", i / 4.0, "layer " + i + "/4");
                }
                return new ToyEngine.Factors("llama#r8");
            }
        };
        TestProbe<Predictor.Event> first = kit.createTestProbe(), second = kit.createTestProbe();
        kit.spawn(Predictor.create(b, cache, first.getRef()));
        kit.spawn(Predictor.create(b, cache, second.getRef()));
        // whichever actor starts first builds and forwards progress; the other waits for the same future
        List<Double> a = new ArrayList<>(), c = new ArrayList<>();
        Predictor.Ready ra = drain(first, a), rc = drain(second, c);
        List<List<Double>> both = List.of(a, c);
        assertTrue(both.contains(List.of(0.25, 0.5, 0.75, 1.0)) && both.contains(List.of(0.0)), both.toString());
        assertTrue(ra.factors() == rc.factors(), "both jobs share one set of factors");
        assertEquals(1, builds[0]);
    }

    static Predictor.Ready drain(TestProbe<Predictor.Event> p, List<Double> fractions) {
        while (true) {
            Predictor.Event e = p.receiveMessage(Duration.ofSeconds(5));
            if (e instanceof Predictor.Ready r) return r;
            fractions.add(((Predictor.Progress) e).fraction());
        }
    }

    @Test
    void aFailedPredictorBuildIsReportedAndRetriedByTheNextJob() {
        PredictorCache cache = new PredictorCache();
        int[] calls = new int[1];
        PredictorBuilder b = new PredictorBuilder() {
            @Override public String cacheKey() { return "m"; }

            @Override
            public PredictorFactors build(ProgressListener p) throws Exception {
                if (calls[0]++ == 0) throw new java.io.IOException("model.safetensors: truncated header");
                return new ToyEngine.Factors("m");
            }
        };
        TestProbe<Predictor.Event> probe = kit.createTestProbe();
        kit.spawn(Predictor.create(b, cache, probe.getRef()));
        assertEquals("predictor: model.safetensors: truncated header", probe.expectMessageClass(Predictor.Failed.class).reason());
        kit.spawn(Predictor.create(b, cache, probe.getRef()));
        probe.expectMessageClass(Predictor.Ready.class);
    }
}
