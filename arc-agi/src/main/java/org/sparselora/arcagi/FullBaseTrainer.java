package org.sparselora.arcagi;

import java.nio.file.Path;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.io.HfCheckpointWriter;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.train.FullTrainer;
import org.sparselora.engine.train.LlamaFullModel;
import org.sparselora.engine.train.LrSchedule;
import org.sparselora.engine.train.OptimizerConfig;
import org.sparselora.engine.train.StepResult;

/**
 * {@code arc pretrain}'s trainer: every parameter of the model (embedding, norms, projections, head)
 * trained by the engine's {@link FullTrainer} — AdamW (β 0.9/0.95, weight decay 0.1 on the matrices
 * only), global-norm clipping at 1, cosine schedule with warm-up over the planned steps — and saved
 * from the fp32 masters.
 */
final class FullBaseTrainer implements BaseTrainer {
    private final OptimizerConfig opt;
    private final FullTrainer trainer;

    FullBaseTrainer(LlamaModel model, PretrainSettings s) {
        this.opt = new OptimizerConfig((float) s.lr(), 0.9f, 0.95f, 1e-8f, 0.1f, 1f, OptimizerConfig.Schedule.COSINE, s.warmupSteps(), s.totalSteps());
        // the model's weights are the initial values (F32 on the CPU; on the GPU the masters start from the bf16 copies)
        this.trainer = new FullTrainer(new LlamaFullModel(model), null, opt, false);
    }

    @Override
    public double step(Batch batch, int step) {
        StepResult r = trainer.computeGradients(batch, step, false);
        trainer.applyUpdate(step, r.outputTokens());
        return r.meanLoss();
    }

    @Override
    public double lr(int step) { return LrSchedule.lr(opt, step); }

    @Override
    public void save(Path dir) { HfCheckpointWriter.writeTrained(trainer.weights(), dir, DType.F32, HfCheckpointWriter.DEFAULT_MAX_SHARD_BYTES, null); }

    @Override
    public String describe() { return "full-parameter AdamW (lr " + opt.lr() + ", cosine, warm-up " + opt.warmupSteps() + ")"; }

    @Override
    public void close() { trainer.close(); }
}
