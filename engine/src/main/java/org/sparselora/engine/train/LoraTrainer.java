package org.sparselora.engine.train;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import org.sparselora.engine.backend.AdamwGroup;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.GraphCapture;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.lora.LoraAdapter;
import org.sparselora.engine.model.LlamaModel;
import org.sparselora.engine.sparse.FlopCount;
import org.sparselora.engine.sparse.StepPlanner;
import org.sparselora.engine.model.SparsePlan;
import org.sparselora.engine.model.Batch;

/**
 * LoRA training on one backend: a {@link TrainingWorker}. {@link #computeGradients} runs the
 * model's forward/backward (sparse when the step is sparse and a {@link StepPlanner} is set) and
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
 *
 * <p>Recorded steps (CUDA graphs): on a backend that can record ({@link Backend#graphCapture()}) the
 * device work of {@link #computeGradients} — forward, predictor and channel selection, loss head,
 * backward — is recorded the second time a {@link LlamaModel.StepKey} (shape bucket: batch shape,
 * output rows, token-split layout, …) comes up and replayed, as one graph launch, for every later
 * step of that key; the host only uploads the step's inputs ({@link LlamaModel#prepareStep}) and
 * reads the loss. {@link #applyUpdate} is recorded too (one graph for the trainer's life: Σgrad²,
 * clipping and AdamW with the step's scalars in a 5-float device tensor, {@link AdamwGroup#clippedStep}),
 * so a step is two graph launches, the update kept apart for gradient accumulation and exchange. A recording is dropped when the model's buffers change
 * ({@link LlamaModel#bufferEpoch()}); at most {@link #MAX_RECORDED} are kept (least recently used
 * first out). Steps with LoRA dropout (new masks each step) and planners that are not
 * {@link StepPlanner#recordable()} run eagerly. System property {@code sparselora.graphs=off} (or
 * {@link #setRecordSteps}) turns recording off; results are the same either way (the replay runs
 * the very kernels the eager step queues).
 */
public final class LoraTrainer implements TrainingWorker {
    private final Backend be;
    private final GraphCapture capture;   // null: the backend records no ops, every step runs eagerly
    private final LlamaModel model;
    private final LoraAdapter lora;
    private final OptimizerConfig opt;
    private final List<Tensor> m = new ArrayList<>(), v = new ArrayList<>();
    private final AdamwGroup group;
    private StepPlanner planner;
    private int updates;       // AdamW steps applied (1-based count for bias correction)
    private int microBatch;    // computeGradients calls since the last update
    private double lastGradNorm;
    /** Recordings kept at once; each holds its scratch memory. */
    public static final int MAX_RECORDED = 16;
    /**
     * When recording, steps are put in shape buckets of this many rows ({@link LlamaModel#setShapeBucket}:
     * the loss head's rows; {@link StepPlanner#bucketDenseTokens}: the dense token group; and a
     * selection scores every row with padding zeroed): fixed-length batches of real data, whose
     * output counts and padding differ, then share recordings.
     */
    public static final int SHAPE_BUCKET = 128;
    private int shapeBucket = -1;   // -1: SHAPE_BUCKET exactly when recording on a backend that records

    /**
     * Shape buckets of {@code rows} rows whether or not steps are recorded (0 = off; -1, the default:
     * {@link #SHAPE_BUCKET} exactly when steps are recorded). Tiny batches want small buckets: the dense
     * token group grows to a whole bucket (at most every token).
     */
    public LoraTrainer setShapeBucket(int rows) {
        if (rows < -1) throw new IllegalArgumentException("shape bucket must be ≥ -1, got " + rows);
        shapeBucket = rows;
        return this;
    }
    private boolean recordSteps = !"off".equals(System.getProperty("sparselora.graphs", "on"));
    private final java.util.LinkedHashMap<LlamaModel.StepKey, Recorded> recorded = new java.util.LinkedHashMap<>(16, 0.75f, true);
    private final java.util.Set<LlamaModel.StepKey> seen = java.util.Collections.newSetFromMap(new java.util.LinkedHashMap<>(16, 0.75f, true) {
        @Override protected boolean removeEldestEntry(java.util.Map.Entry<LlamaModel.StepKey, Boolean> e) { return size() > 64; }
    });
    private long replays, recordings;
    private Tensor hyper;                    // {lr, bc1, bc2, 1/tokens, max norm} of the recorded update
    private GraphCapture.Captured updateGraph;    // the recorded update (one for the trainer's life: its shapes never change)

    /** One recorded step: the graph, the model's buffer epoch it was made in, and its FLOP count (a replay runs no Java). */
    private record Recorded(GraphCapture.Captured graph, long epoch, FlopCount.Step flops, long predictorFlops) {}

    public LoraTrainer(LlamaModel model, LoraAdapter lora, OptimizerConfig opt) {
        this.be = model.backend();
        this.capture = be.graphCapture().orElse(null);
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
    public LoraTrainer setSparsePlanner(StepPlanner planner) {
        this.planner = planner;
        return this;
    }

    public LlamaModel model() { return model; }

    public LoraAdapter adapter() { return lora; }

    public OptimizerConfig optimizer() { return opt; }

    /** Global gradient norm (after 1/tokens scaling, before clipping) of the last update. */
    public double lastGradNorm() { return lastGradNorm; }

    /** Turns recorded (graph) steps on or off; off closes the recordings kept. */
    public LoraTrainer setRecordSteps(boolean on) {
        recordSteps = on;
        if (!on) dropRecordings();
        return this;
    }

    /** Steps run as a replay of a recording so far, and recordings made. */
    public long replayedSteps() { return replays; }

    public long recordedSteps() { return recordings; }

    @Override
    public StepResult computeGradients(Batch batch, int step, boolean sparse) {
        long t0 = System.nanoTime();
        int bucket = shapeBucket >= 0 ? shapeBucket : recordSteps && capture != null ? SHAPE_BUCKET : 0;
        SparsePlan plan = null;
        if (sparse && planner != null) {
            planner.bucketDenseTokens(bucket);
            plan = planner.plan(batch, step);
        }
        long seed = lora.config().seed() * 0x2545F4914F6CDD1DL + step * 1_000_003L + microBatch;
        microBatch++;
        model.setShapeBucket(bucket);
        LlamaModel.StepKey key = model.prepareStep(batch, lora, plan, plan != null ? planner.selector() : null, seed);
        boolean record = key != null && recordSteps && capture != null && (plan == null || planner.recordable());
        Recorded r = record ? recorded.get(key) : null;
        if (r != null && r.epoch() != model.bufferEpoch()) {   // the model's buffers moved since: record again
            recorded.remove(key).graph().close();
            r = null;
        }
        FlopCount.Step f;
        long predictor;
        if (r != null) {
            r.graph().replay();
            replays++;
            f = r.flops();
            predictor = r.predictorFlops();
        } else {
            if (record && seen.contains(key)) {
                capture.beginCapture();
                GraphCapture.Captured g;
                try {
                    model.queueForward();
                    model.backward();
                } catch (RuntimeException e) {
                    capture.abortCapture();
                    throw new IllegalStateException("recording the training step as a CUDA graph failed (run with -Dsparselora.graphs=off to train without): " + e.getMessage(), e);
                }
                g = capture.endCapture();
                recordings++;
                g.replay();
                predictor = plan != null ? planner.lastPredictorFlops() : 0;
                f = FlopCount.executed(model.config(), FlopCount.Lora.of(lora.config()), batch, plan, predictor);
                recorded.put(key, new Recorded(g, model.bufferEpoch(), f, predictor));
                if (recorded.size() > MAX_RECORDED) {
                    var eldest = recorded.entrySet().iterator().next();
                    recorded.remove(eldest.getKey()).graph().close();
                }
            } else {
                model.queueForward();
                model.backward();
                if (record) seen.add(key);
                predictor = plan != null ? planner.lastPredictorFlops() : 0;   // the plan is complete only now
                f = FlopCount.executed(model.config(), FlopCount.Lora.of(lora.config()), batch, plan, predictor);
            }
        }
        double loss = model.stepLoss();   // waits for the step
        double ms = (System.nanoTime() - t0) / 1e6;
        if (plan != null) planner.release();
        return new StepResult(loss, batch.outputTokenCount(), batch.tokenCount(), plan != null, f.flops(), f.denseFlops(), predictor, ms);
    }

    private void dropRecordings() {
        for (Recorded r : recorded.values()) r.graph().close();
        recorded.clear();
        seen.clear();
        if (updateGraph != null) updateGraph.close();
        updateGraph = null;
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
        if (recordSteps && capture != null && group.canClipOnDevice()) return recordedUpdate(step, scale);
        double norm = Math.sqrt(group.gradSumOfSquares()) * scale;
        lastGradNorm = norm;
        if (opt.maxGradNorm() > 0 && norm > opt.maxGradNorm()) scale *= (float) (opt.maxGradNorm() / (norm + 1e-6));
        float lr = LrSchedule.lr(opt, step);
        updates++;
        group.step(lr, opt.beta1(), opt.beta2(), opt.eps(), opt.weightDecay(), updates, scale, true);  // also refreshes the compute copies
        microBatch = 0;
        return lr;
    }

    /**
     * {@link #applyUpdate} as one recorded update: the step's scalars go to a small device tensor,
     * the group's {@link AdamwGroup#clippedStep} (Σgrad², clipping, AdamW, compute copies, zeroed
     * gradients) is recorded at the first update and replayed afterwards, and the gradient norm is
     * read back after it (the same numbers as the eager update: the clip arithmetic is the host's).
     */
    private float recordedUpdate(int step, float scale) {
        float lr = LrSchedule.lr(opt, step);
        updates++;
        float bc1 = (float) (1 - Math.pow(opt.beta1(), updates)), bc2 = (float) (1 - Math.pow(opt.beta2(), updates));
        if (hyper == null) hyper = be.empty(DType.F32, 5);
        be.copyFromHost(hyper, new float[] {lr, bc1, bc2, scale, opt.maxGradNorm()});
        if (updateGraph == null) {
            capture.beginCapture();
            try {
                group.clippedStep(hyper, opt.beta1(), opt.beta2(), opt.eps(), opt.weightDecay(), true);
            } catch (RuntimeException e) {
                capture.abortCapture();
                throw new IllegalStateException("recording the AdamW update as a CUDA graph failed (run with -Dsparselora.graphs=off to train without): " + e.getMessage(), e);
            }
            updateGraph = capture.endCapture();
        }
        updateGraph.replay();
        lastGradNorm = Math.sqrt(group.lastSumOfSquares()) * scale;   // waits for the update
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
        dropRecordings();
        if (hyper != null) hyper.close();
        group.close();
        for (Tensor t : m) t.close();
        for (Tensor t : v) t.close();
    }
}
