package org.sparselora.arcagi;

import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.Set;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.io.HfCheckpointWriter;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.lora.LoraConfig;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.model.LlamaWeights;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.train.LoraTrainer;
import org.sparselora.engine.train.LrSchedule;
import org.sparselora.engine.train.OptimizerConfig;
import org.sparselora.engine.train.StepResult;

/**
 * Base training through the LoRA trainer, the ReLoRA way: an adapter on all seven projections of
 * every layer trains for {@code cycle} steps, is merged into the frozen weights (W += s·B·A), and a
 * fresh adapter (new optimizer state) starts the next cycle. Each cycle's learning rate is the run's
 * warm-up + cosine schedule at the cycle's start, re-warmed briefly. Embeddings, head and norms never change: this is the stand-in
 * until the engine trains all parameters ({@link BaseTrainer}).
 */
final class ReloraTrainer implements BaseTrainer {
    private final LlamaModel model;
    private final LlamaWeights weights;
    private final BaseTrainer.PretrainSettings s;
    private final Backend be;
    private LoraAdapter lora;
    private LoraTrainer trainer;
    private int cycleStart;

    ReloraTrainer(LlamaModel model, LlamaWeights weights, BaseTrainer.PretrainSettings settings) {
        this.model = model;
        this.weights = weights;
        this.s = settings;
        this.be = model.backend();
    }

    @Override
    public String describe() { return "ReLoRA (rank " + s.rank() + ", merged every " + s.cycle() + " steps; embeddings and norms frozen)"; }

    /** The learning rate of the step just taken (call after {@link #step}). */
    @Override
    public double lr(int step) { return LrSchedule.lr(cycleConfig(cycleStart), step - cycleStart); }

    /**
     * A cycle's optimizer: a fresh AdamW whose peak is the run's warm-up + cosine schedule at the cycle's
     * start, re-warmed over a tenth of the cycle (ReLoRA's jagged schedule: new moments need a gentle start).
     */
    private OptimizerConfig cycleConfig(int start) {
        OptimizerConfig run = new OptimizerConfig((float) s.lr(), 0.9f, 0.95f, 1e-8f, 0f, 1f, OptimizerConfig.Schedule.COSINE,
                s.warmupSteps(), Math.max(1, s.totalSteps()));
        float peak = LrSchedule.lr(run, Math.max(start, Math.min(s.warmupSteps(), run.totalSteps() - 1)));
        return new OptimizerConfig(Math.max(peak, (float) s.lr() * 0.01f), 0.9f, 0.95f, 1e-8f, 0f, 1f, OptimizerConfig.Schedule.CONSTANT,
                s.cycle() / 10, s.cycle());
    }

    @Override
    public double step(Batch batch, int step) {
        if (trainer == null || step - cycleStart >= s.cycle()) startCycle(step);
        StepResult r = trainer.computeGradients(batch, step - cycleStart, false);
        trainer.applyUpdate(step - cycleStart, r.outputTokens());
        return r.meanLoss();
    }

    /** Merges the finished cycle's adapter and starts a fresh one whose schedule is the run's, shifted to this step. */
    private void startCycle(int step) {
        mergeAndClose();
        cycleStart = step;
        lora = new LoraAdapter(be, model.config(), new LoraConfig(s.rank(), s.rank(), 0f, EnumSet.allOf(Projection.class), false, s.seed() + step));
        trainer = new LoraTrainer(model, lora, cycleConfig(step));
        if (!be.graphCapture().isPresent()) trainer.setShapeBucket(0);
    }

    private void mergeAndClose() {
        if (trainer == null) return;
        for (int l = 0; l < weights.layers.length; l++)
            for (Projection p : lora.config().orderedTargets()) {
                LoraAdapter.Lora a = lora.get(l, p);
                be.matmul(weights.layers[l].weight(p), a.b(), false, a.a(), false, lora.scaling(), 1f);
            }
        trainer.close();
        lora.close();
        trainer = null;
        lora = null;
    }

    @Override
    public void save(Path dir) {
        mergeAndClose();   // the next step (if any) starts a fresh cycle
        saveWeights(be, weights, dir);
    }

    /** The weights on {@code be} as a F32 HF checkpoint. */
    static void saveWeights(Backend be, LlamaWeights w, Path dir) {
        LlamaConfig cfg = w.config;
        LinkedHashMap<String, Tensor> byName = new LinkedHashMap<>();
        byName.put("model.embed_tokens.weight", w.embed);
        for (int l = 0; l < cfg.numLayers(); l++) {
            LlamaWeights.Layer lw = w.layers[l];
            byName.put("model.layers." + l + ".input_layernorm.weight", lw.attnNorm());
            byName.put("model.layers." + l + ".post_attention_layernorm.weight", lw.ffnNorm());
            for (Projection p : Projection.values()) byName.put("model." + p.path(l) + ".weight", lw.weight(p));
        }
        byName.put("model.norm.weight", w.finalNorm);
        if (!cfg.tieWordEmbeddings()) byName.put("lm_head.weight", w.head);
        WeightSource src = new WeightSource() {
            @Override public LlamaConfig config() { return cfg; }
            @Override public Set<String> names() { return byName.keySet(); }
            @Override public HostTensor get(String name) {
                Tensor t = byName.get(name);
                if (t == null) throw new IllegalArgumentException("ARC base: no tensor " + name);
                return new HostTensor(name, DType.F32, t.shape(), MemorySegment.ofArray(be.toFloats(t)));
            }
        };
        HfCheckpointWriter.write(src, null, dir, DType.F32, 0, null);
    }

    @Override
    public void close() {
        if (trainer != null) trainer.close();
        if (lora != null) lora.close();
        trainer = null;
        lora = null;
    }
}
