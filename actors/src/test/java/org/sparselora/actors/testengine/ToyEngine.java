package org.sparselora.actors.testengine;

import java.io.DataOutputStream;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import org.sparselora.actors.pipeline.AdapterExporter;
import org.sparselora.actors.pipeline.EngineProvider;
import org.sparselora.actors.pipeline.JobRuntime;
import org.sparselora.actors.pipeline.PredictorBuilder;
import org.sparselora.actors.pipeline.PredictorFactors;
import org.sparselora.actors.pipeline.WorkerFactory;
import org.sparselora.engine.train.TrainerState;
import org.sparselora.engine.train.TrainingWorker;
import org.sparselora.proto.control.JobSpec;

/**
 * The test engine behind {@code model: toy:bigram?vocab=16&delay_ms=20} and
 * {@code data: toy:markov?records=48}: BigramWorker + MarkovSource + a predictor builder that
 * reports progress, registered as an {@link EngineProvider} (test resources), so the CLI and
 * server run real jobs in the tests and in child JVMs.
 */
public final class ToyEngine implements EngineProvider {

    public static final AtomicInteger PREDICTOR_BUILDS = new AtomicInteger();

    public record Factors(String cacheKey) implements PredictorFactors {}

    @Override
    public String name() { return "toy"; }

    @Override
    public boolean accepts(JobSpec spec) { return spec.getModel().startsWith("toy:bigram"); }

    @Override
    public JobRuntime open(JobSpec spec) {
        Map<String, String> mq = query(spec.getModel()), dq = query(spec.getData().getPath());
        BigramWorker.Faults faults = new BigramWorker.Faults();
        faults.delayMs = Long.parseLong(mq.getOrDefault("delay_ms", "0"));
        faults.throwAtStep = Integer.parseInt(mq.getOrDefault("fail_at", "-1"));
        faults.nanFromStep = Integer.parseInt(mq.getOrDefault("nan_from", String.valueOf(Integer.MAX_VALUE)));
        int vocab = Integer.parseInt(mq.getOrDefault("vocab", "16"));
        long buildMs = Long.parseLong(mq.getOrDefault("predictor_ms", "0"));
        MarkovSource source = new MarkovSource(vocab, spec.getSeqLen(), spec.getBatchSize(),
                Integer.parseInt(dq.getOrDefault("records", "48")), Integer.parseInt(dq.getOrDefault("malformed", "0")), spec.getSeed());
        return runtime(spec, vocab, faults, source, buildMs);
    }

    public static JobRuntime runtime(JobSpec spec, int vocab, BigramWorker.Faults faults, MarkovSource source, long predictorMs) {
        WorkerFactory workers = new WorkerFactory() {
            @Override
            public TrainingWorker create(int worker, int n) {
                return new BigramWorker(vocab, spec.getSeed(), worker, spec.getOptimizer().getLr(), spec.getSchedule().getType(),
                        spec.getSchedule().getWarmupSteps(), spec.getSteps(), faults);
            }

            @Override
            public void attachPredictor(TrainingWorker w, PredictorFactors f) { ((BigramWorker) w).predictor = f; }
        };
        PredictorBuilder predictor = new PredictorBuilder() {
            @Override
            public String cacheKey() { return spec.getModel() + "#" + spec.getOutputDir(); }

            @Override
            public PredictorFactors build(ProgressListener progress) throws Exception {
                PREDICTOR_BUILDS.incrementAndGet();
                for (int i = 1; i <= 3; i++) {
                    Thread.sleep(predictorMs / 3);
                    progress.progress("svd", i / 3.0, "layer " + i + "/3");
                }
                return new Factors(cacheKey());
            }
        };
        AdapterExporter exporter = ToyEngine::export;
        return new JobRuntime(workers, source, predictor, exporter);
    }

    /** adapter/bigram.f32: the weights, big-endian floats (temp + rename). */
    static void export(TrainerState s, Path dir) throws Exception {
        Files.createDirectories(dir);
        Path tmp = dir.resolve("bigram.f32.tmp");
        try (DataOutputStream out = new DataOutputStream(Files.newOutputStream(tmp))) {
            for (float f : s.tensors().get(BigramWorker.WEIGHT)) out.writeFloat(f);
        }
        Files.move(tmp, dir.resolve("bigram.f32"), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    static Map<String, String> query(String s) {
        Map<String, String> m = new HashMap<>();
        String q = URI.create(s).getRawSchemeSpecificPart();
        int i = q.indexOf('?');
        if (i < 0) return m;
        for (String kv : q.substring(i + 1).split("&")) {
            String[] p = kv.split("=", 2);
            m.put(p[0], p.length > 1 ? p[1] : "");
        }
        return m;
    }
}
