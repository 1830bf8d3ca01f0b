package org.sparselora.engine.train;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import org.sparselora.engine.backend.AdamwGroup;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.sparse.FlopCount;
import org.sparselora.engine.sparse.SparsePlan;

/**
 * LoRA training on one backend: a {@link TrainingWorker}. {@link #computeGradients} runs the
 * model's forward/backward (sparse when the step is sparse and a {@link SparsePlanner} is set) and
 * leaves gradient <em>sums</em> in the adapter; several calls before one {@link #applyUpdate} are
 * gradient accumulation. The update scales by 1/totalOutputTokens, clips by global norm (PyTorch's
 * {@code clip_grad_norm_}: factor max/(norm+1e-6) when norm exceeds max), and runs AdamW with fp32
 * moments. Dropout masks are seeded by (LoRA seed, step, micro-batch index) so a run — and a run
 * restored from {@link #state()} at a step boundary — is reproducible bit for bit.
 *
 * <p>The optimizer phase goes through one {@link AdamwGroup} over the adapter's (param, grad, m, v,
 * compute copy) slots, made once here: the adapter's parameters, gradients and compute copies are
 * views of storage allocated once for its lifetime (loads copy into them), so the group's slots
 * never go stale. The step refreshes the compute copies (where they are not the params themselves)
 * and zeroes the gradients; on the GPU the phase is two launches (sum of squares, fused AdamW) and
 * one 8-byte read. The group is closed with the trainer; the trainer must be closed before its
 * adapter.
 */
public final class LoraTrainer implements TrainingWorker {
    private final Backend be;
    private final LlamaModel model;
    private final LoraAdapter lora;
    private final OptimizerConfig opt;
    private final List<Tensor> m = new ArrayList<>(), v = new ArrayList<>();
    private final AdamwGroup group;
    private SparsePlanner planner;
    private int updates;       // AdamW steps applied (1-based count for bias correction)
    private int microBatch;    // computeGradients calls since the last update
    private double lastGradNorm;

    public LoraTrainer(LlamaModel model, LoraAdapter lora, OptimizerConfig opt) {
        this.be = model.backend();
        this.model = model;
        this.lora = lora;
        this.opt = opt;
        for (Tensor p : lora.params()) {
            m.add(be.zeros(DType.F32, p.shape()));
            v.add(be.zeros(DType.F32, p.shape()));
        }
        List<Tensor[]> slots = new ArrayList<>(m.size());
        List<Tensor> params = lora.params(), grads = lora.grads(), copies = lora.computeCopies();
        for (int i = 0; i < params.size(); i++) slots.add(new Tensor[] {params.get(i), grads.get(i), m.get(i), v.get(i), copies.get(i)});
        this.group = be.adamwGroup(slots);
        lora.zeroGrads();
    }

    /** The producer of sparse steps' plans; without one, sparse steps run dense. */
    public LoraTrainer setSparsePlanner(SparsePlanner planner) {
        this.planner = planner;
        return this;
    }

    public LlamaModel model() { return model; }

    public LoraAdapter adapter() { return lora; }

    public OptimizerConfig optimizer() { return opt; }

    /** Global gradient norm (after 1/tokens scaling, before clipping) of the last update. */
    public double lastGradNorm() { return lastGradNorm; }

    @Override
    public StepResult computeGradients(Batch batch, int step, boolean sparse) {
        long t0 = System.nanoTime();
        SparsePlan plan = sparse && planner != null ? planner.plan(batch, step) : null;
        long seed = lora.config().seed() * 0x2545F4914F6CDD1DL + step * 1_000_003L + microBatch;
        microBatch++;
        double loss = model.forward(batch, lora, plan, plan != null ? planner.selector() : null, seed);
        model.backward();
        be.synchronize();
        double ms = (System.nanoTime() - t0) / 1e6;
        long predictor = plan != null ? planner.lastPredictorFlops() : 0;   // the plan is complete only now
        FlopCount.Step f = FlopCount.executed(model.config(), FlopCount.Lora.of(lora.config()), batch, plan, predictor);
        if (plan != null) planner.release();
        return new StepResult(loss, batch.outputTokenCount(), batch.tokenCount(), plan != null, f.flops(), f.denseFlops(), predictor, ms);
    }

    @Override
    public float[][] gradientsToHost() {
        List<Tensor> g = lora.grads();
        float[][] out = new float[g.size()][];
        for (int i = 0; i < out.length; i++) out[i] = be.toFloats(g.get(i));
        return out;
    }

    @Override
    public void gradientsFromHost(float[][] grads) {
        List<Tensor> g = lora.grads();
        if (grads.length != g.size()) throw new IllegalArgumentException("expected " + g.size() + " gradient tensors, got " + grads.length);
        for (int i = 0; i < grads.length; i++) be.copyFromHost(g.get(i), grads[i]);
    }

    @Override
    public float applyUpdate(int step, long totalOutputTokens) {
        float scale = totalOutputTokens > 0 ? 1f / totalOutputTokens : 0f;
        double norm = Math.sqrt(group.gradSumOfSquares()) * scale;
        lastGradNorm = norm;
        if (opt.maxGradNorm() > 0 && norm > opt.maxGradNorm()) scale *= (float) (opt.maxGradNorm() / (norm + 1e-6));
        float lr = LrSchedule.lr(opt, step);
        updates++;
        group.step(lr, opt.beta1(), opt.beta2(), opt.eps(), opt.weightDecay(), updates, scale, true);  // also refreshes the compute copies
        microBatch = 0;
        return lr;
    }

    @Override
    public TrainerState state() {
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        List<String> names = lora.names();
        for (int i = 0; i < names.size(); i++) {
            t.put(names.get(i), be.toFloats(lora.params().get(i)));
            t.put(names.get(i) + ".exp_avg", be.toFloats(m.get(i)));
            t.put(names.get(i) + ".exp_avg_sq", be.toFloats(v.get(i)));
        }
        return new TrainerState(updates, t);
    }

    @Override
    public void restore(TrainerState state) {
        List<String> names = lora.names();
        for (int i = 0; i < names.size(); i++) {
            String n = names.get(i);
            put(state, n, lora.params().get(i));
            put(state, n + ".exp_avg", m.get(i));
            put(state, n + ".exp_avg_sq", v.get(i));
        }
        lora.syncComputeCopies();
        updates = state.step();
        microBatch = 0;
        lora.zeroGrads();
    }

    private void put(TrainerState s, String name, Tensor dst) {
        float[] x = s.tensors().get(name);
        if (x == null) throw new IllegalArgumentException("trainer state lacks tensor " + name);
        if (x.length != dst.numel()) throw new IllegalArgumentException("trainer state tensor " + name + " has " + x.length + " values, expected " + dst.numel());
        be.copyFromHost(dst, x);
    }

    @Override
    public void close() {
        group.close();
        for (Tensor t : m) t.close();
        for (Tensor t : v) t.close();
    }
}
