package org.sparselora.actors.pipeline;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.typed.ActorRef;
import org.sparselora.actors.job.JobSpecs;
import org.sparselora.actors.testengine.BigramWorker;
import org.sparselora.actors.testengine.MarkovSource;
import org.sparselora.actors.testengine.ToyEngine;
import org.sparselora.proto.control.DataSpec;
import org.sparselora.proto.control.JobEvent;
import org.sparselora.proto.control.JobSpec;
import org.sparselora.proto.control.JobState;
import org.sparselora.proto.control.OptimizerSpec;
import org.sparselora.proto.control.ScheduleSpec;
import org.sparselora.proto.control.SparsityConfig;

/** Shared fixtures of the pipeline tests: a toy job spec, running a job to its end, its weights. */
final class Jobs {

    static final int VOCAB = 12;

    /** Every message that may cross machines is serialized, and must be serializable. */
    static Config serializeAll() {
        return ConfigFactory.parseString("pekko.actor.serialize-messages = on").withFallback(ConfigFactory.load());
    }

    static JobSpec spec(Path out, int workers, int batch, int steps, int checkpointEvery) {
        return JobSpecs.prepare(JobSpec.newBuilder().setName("t").setModel("toy:bigram?vocab=" + VOCAB)
                .setData(DataSpec.newBuilder().setPath("toy:markov?records=40")).setSteps(steps).setBatchSize(batch).setSeqLen(10)
                .setWorkers(workers).setOutputDir(out.toString()).setCheckpointEvery(checkpointEvery).setSeed(7)
                .setOptimizer(OptimizerSpec.newBuilder().setLr(0.05))
                .setSchedule(ScheduleSpec.newBuilder().setType("cosine").setWarmupSteps(2))
                .setSparsity(SparsityConfig.newBuilder().setStartStep(0.3).putSparsity("layers.1.mlp", 0.9)).build());
    }

    static MarkovSource source(JobSpec s) {
        return new MarkovSource(VOCAB, s.getSeqLen(), s.getBatchSize(), 40, 0, s.getSeed());
    }

    record Outcome(List<JobEvent> events, JobState state, String reason) {
        long count(JobEvent.KindCase k) { return events.stream().filter(e -> e.getKindCase() == k).count(); }
    }

    static final class Watch implements JobListener {
        final List<JobEvent> events = new CopyOnWriteArrayList<>();
        final CompletableFuture<Outcome> done = new CompletableFuture<>();

        @Override
        public void onEvent(JobEvent e) {
            events.add(e);
            if (e.hasState()) {
                JobState s = e.getState().getState();
                if (s == JobState.FINISHED || s == JobState.FAILED || s == JobState.CANCELLED)
                    done.complete(new Outcome(events, s, e.getState().getReason()));
            }
        }

        Outcome await() throws Exception { return done.get(60, TimeUnit.SECONDS); }
    }

    static ActorRef<JobSupervisor.Command> start(ActorTestKit kit, JobSpec spec, JobRuntime rt, JobSupervisor.Settings settings, Watch w) {
        return kit.spawn(JobSupervisor.create("job-" + System.nanoTime(), spec, rt, w, settings));
    }

    static Outcome run(ActorTestKit kit, JobSpec spec, BigramWorker.Faults faults, JobSupervisor.Settings settings) throws Exception {
        Watch w = new Watch();
        start(kit, spec, ToyEngine.runtime(spec, VOCAB, faults, source(spec), 0), settings, w);
        return w.await();
    }

    static JobSupervisor.Settings settings() {
        return new JobSupervisor.Settings(Duration.ofSeconds(20), 3, 3, new PredictorCache());
    }

    static float[] weights(Path out) throws Exception {
        return CheckpointStore.toTrainerState(new CheckpointStore(out).read()).tensors().get(BigramWorker.WEIGHT);
    }
}
