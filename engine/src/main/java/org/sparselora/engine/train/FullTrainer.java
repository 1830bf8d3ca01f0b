package org.sparselora.engine.train;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.sparselora.engine.backend.AdamwGroup;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.GraphCapture;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.io.HostTensor;
import org.sparselora.engine.io.WeightSource;
import org.sparselora.engine.model.Batch;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Projection;
import org.sparselora.engine.sparse.FlopCount;

/**
 * Full-parameter training on one backend: a {@link TrainingWorker} over a {@link FullParameterModel}.
 * Every parameter is one optimizer slot {@code {fp32 master, fp32 grad, fp32 m, fp32 v, compute
 * copy}}: on the CPU the compute weight is F32 and is its own master (a 4-tensor slot); on the GPU
 * the model computes in BF16 and the trainer keeps the fp32 master, which the AdamW step writes and
 * then rounds into the compute weight. Bytes per parameter on the GPU: 4 master + 4 grad + 4 m + 4 v
 * + 2 bf16 compute = 18 (plus activations); on the CPU 16.
 *
 * <p>The update is {@link LoraTrainer}'s, same arithmetic: gradients (sums over output tokens) scaled
 * by 1/totalOutputTokens, clipped by the global norm over <em>all</em> parameters (PyTorch's
 * {@code clip_grad_norm_}), AdamW with decoupled weight decay ({@code p -= lr·(m̂/(√v̂+ε) + wd·p)}) at
 * the schedule's learning rate. Weight decay applies to the weight matrices (projections and an
 * untied head) and, unless {@code decayNormsAndEmbeddings}, not to RMSNorm weights, biases and the
 * embedding (a tied head is the embedding) — the usual GPT/Llama pretraining recipe: decaying a norm's
 * gain or a bias toward 0 only fights the scale the model needs, and rows of rare tokens would decay
 * while they get no gradient.
 *
 * <p>All slots go through one {@link AdamwGroup} with a per-slot decay mask (the GPU's multi-tensor
 * AdamW: two launches for the whole model, recordable as a CUDA graph). A backend whose group cannot
 * take a mask gets one group per decay setting instead, the norm summed over both on the host.
 *
 * <p>Recorded steps (CUDA graphs), as in {@link LoraTrainer}: on a backend that can record, a model
 * that offers {@link FullParameterModel#phases()} has its step's device part recorded the second time
 * a step key comes up and replayed for every later step of that key (at most {@link #MAX_RECORDED}
 * kept, a recording dropped when the model's buffers moved), and the update (one masked group) is
 * recorded once with its scalars in a device tensor. Replays give the eager step's results exactly.
 */
public final class FullTrainer implements TrainingWorker {
    private final Backend be;
    /** The backend's graph recording, or null where ops run at once (the CPU). */
    private final GraphCapture capture;
    private final FullParameterModel model;
    private final OptimizerConfig opt;
    private final List<String> names;
    private final LinkedHashMap<String, Tensor> params;
    private final List<Tensor> masters = new ArrayList<>(), m = new ArrayList<>(), v = new ArrayList<>();
    private final List<Tensor> ownedMasters = new ArrayList<>();
    private final boolean[] decays;
    private final ModelGrads grads;
    private final List<AdamwGroup> groups = new ArrayList<>();
    private final float[] groupDecay;          // weight decay of each group (one group: opt's)
    private int updates;
    private double lastGradNorm;
    private boolean recordSteps = !"off".equals(System.getProperty("sparselora.graphs", "on"));
    private Tensor hyper;
    private GraphCapture.Captured updateGraph;
    /** Step recordings kept at once (least recently used dropped first), as {@link LoraTrainer#MAX_RECORDED}. */
    public static final int MAX_RECORDED = LoraTrainer.MAX_RECORDED;
    private record Recorded(GraphCapture.Captured graph, long epoch) {}
    private final LinkedHashMap<Object, Recorded> recorded = new LinkedHashMap<>(16, 0.75f, true);
    private final java.util.Set<Object> seen = java.util.Collections.newSetFromMap(new LinkedHashMap<>(16, 0.75f, true) {
        @Override protected boolean removeEldestEntry(Map.Entry<Object, Boolean> e) { return size() > 64; }
    });
    private long replays, recordings;

    /**
     * @param initial                  fp32 values for the masters of parameters whose compute copy is
     *                                 not F32 (the file's weights, so bf16 rounding does not enter the
     *                                 masters); null: the compute copies' values
     * @param decayNormsAndEmbeddings  weight decay on every parameter, not only the matrices
     */
    public FullTrainer(FullParameterModel model, WeightSource initial, OptimizerConfig opt, boolean decayNormsAndEmbeddings) {
        this.be = model.backend();
        this.capture = be.graphCapture().orElse(null);
        this.model = model;
        this.opt = opt;
        this.params = new LinkedHashMap<>(model.parameters());
        if (params.isEmpty()) throw new IllegalArgumentException("full training: the model lists no parameters");
        this.names = List.copyOf(params.keySet());
        this.grads = ModelGrads.zerosLike(be, params);
        this.decays = new boolean[names.size()];
        List<Tensor[]> slots = new ArrayList<>(names.size());
        try {
            for (int i = 0; i < names.size(); i++) {
                String n = names.get(i);
                Tensor p = params.get(n);
                Tensor master;
                if (p.dtype() == DType.F32) master = p;
                else {
                    float[] x = initial != null && initial.has(n) ? initial.get(n).toFloats() : be.toFloats(p);
                    if (x.length != p.numel()) throw new IllegalArgumentException("full training: initial weights of " + n + " have " + x.length + " values, the parameter " + p.numel());
                    master = be.fromFloats(x, DType.F32, p.shape());
                    ownedMasters.add(master);
                    be.copy(p, master);   // the compute copy starts as the rounded master, as after every step
                }
                masters.add(master);
                m.add(be.zeros(DType.F32, p.shape()));
                v.add(be.zeros(DType.F32, p.shape()));
                decays[i] = decayNormsAndEmbeddings || decays(n, model.config());
                slots.add(master == p ? new Tensor[] {master, grads.get(n), m.get(i), v.get(i)}
                        : new Tensor[] {master, grads.get(n), m.get(i), v.get(i), p});
            }
            AdamwGroup one = be.adamwGroup(slots);
            float[] gd;
            try {
                one.setDecayMask(decays);
                groups.add(one);
                gd = new float[] {opt.weightDecay()};
            } catch (UnsupportedOperationException noMask) {
                one.close();
                List<Tensor[]> dec = new ArrayList<>(), plain = new ArrayList<>();
                for (int i = 0; i < slots.size(); i++) (decays[i] ? dec : plain).add(slots.get(i));
                List<Float> wd = new ArrayList<>();
                if (!dec.isEmpty()) { groups.add(be.adamwGroup(dec)); wd.add(opt.weightDecay()); }
                if (!plain.isEmpty()) { groups.add(be.adamwGroup(plain)); wd.add(0f); }
                gd = new float[wd.size()];
                for (int i = 0; i < gd.length; i++) gd[i] = wd.get(i);
            }
            this.groupDecay = gd;
        } catch (RuntimeException e) {
            closeTensors();
            throw e;
        }
    }

    /**
     * Whether a parameter takes weight decay by default: the matrices of the decoder's projections and
     * an untied head do; norms, biases and the embedding (which is also a tied head) do not.
     */
    public static boolean decays(String name, LlamaConfig c) {
        if (name.endsWith(".bias") || name.endsWith("norm.weight") || name.equals("model.embed_tokens.weight")) return false;
        return name.endsWith("_proj.weight") || name.equals("lm_head.weight");
    }

    public FullParameterModel model() { return model; }

    public OptimizerConfig optimizer() { return opt; }

    /** Parameter names in slot order (the order of {@link #gradientsToHost()}). */
    public List<String> names() { return names; }

    /** Whether slot i takes weight decay. */
    public boolean decays(int i) { return decays[i]; }

    /** Optimizer groups in use: 1 when the backend's group takes a decay mask (or no decay split is needed). */
    public int groupCount() { return groups.size(); }

    public ModelGrads grads() { return grads; }

    /** Global gradient norm (after 1/tokens scaling, before clipping) of the last update. */
    public double lastGradNorm() { return lastGradNorm; }

    /**
     * Records steps and the update as CUDA graphs where the backend can (on by default, system
     * property {@code sparselora.graphs=off} turns it off; off: eager). A step is recorded the second
     * time its key ({@link FullParameterModel.StepPhases#prepare}) comes up and replayed for every
     * later step of that key while the model's buffers stay put; models without
     * {@link FullParameterModel#phases()} always run eagerly.
     */
    public FullTrainer setRecordSteps(boolean on) {
        recordSteps = on;
        if (!on) dropRecordings();
        return this;
    }

    /** Steps run as a replay so far, and recordings made. */
    public long replayedSteps() { return replays; }

    public long recordedSteps() { return recordings; }

    @Override
    public StepResult computeGradients(Batch batch, int step, boolean sparse) {
        if (sparse) throw new IllegalArgumentException("full-parameter training has no sparse steps (sparsity is a LoRA-mode feature)");
        long t0 = System.nanoTime();
        FullParameterModel.StepPhases ph = recordSteps && capture != null ? model.phases() : null;
        double loss = ph == null ? model.forwardBackward(batch, grads) : recordedStep(ph, batch);
        long f = flops(model.config(), batch);
        return new StepResult(loss, batch.outputTokenCount(), batch.tokenCount(), false, f, f, 0, (System.nanoTime() - t0) / 1e6);
    }

    /** One step through the model's phases: replayed, recorded (its key's second time) or eager. */
    private double recordedStep(FullParameterModel.StepPhases ph, Batch batch) {
        Object key = ph.prepare(batch, grads);
        Recorded r = key == null ? null : recorded.get(key);
        if (r != null && r.epoch() != ph.bufferEpoch()) {   // the model's buffers moved since: record again
            recorded.remove(key).graph().close();
            r = null;
        }
        if (r != null) {
            r.graph().replay();
            replays++;
        } else if (key != null && seen.contains(key)) {
            capture.beginCapture();
            GraphCapture.Captured g;
            try {
                ph.queue();
            } catch (RuntimeException e) {
                capture.abortCapture();
                throw new IllegalStateException("recording the training step as a CUDA graph failed (run with -Dsparselora.graphs=off to train without): " + e.getMessage(), e);
            }
            g = capture.endCapture();
            recordings++;
            g.replay();
            recorded.put(key, new Recorded(g, ph.bufferEpoch()));
            if (recorded.size() > MAX_RECORDED) {
                var eldest = recorded.entrySet().iterator().next();
                recorded.remove(eldest.getKey()).graph().close();
            }
        } else {
            ph.queue();
            if (key != null) seen.add(key);
        }
        return ph.loss();
    }

    private void dropRecordings() {
        for (Recorded r : recorded.values()) r.graph().close();
        recorded.clear();
        seen.clear();
        if (updateGraph != null) updateGraph.close();
        updateGraph = null;
    }

    /**
     * FLOPs of a full-parameter step: the frozen-weight count of {@link FlopCount#dense} (forward,
     * input gradients, attention, head) plus what training the weights adds — every projection's
     * weight gradient ({@code 2·in·out} per token), layer 0's q/k/v input gradient (it now reaches the
     * embedding) and the head's weight gradient ({@code 2·C·V} per output token).
     */
    public static long flops(LlamaConfig c, Batch batch) {
        long n = batch.tokenCount(), outs = batch.outputTokenCount();
        long f = FlopCount.dense(c, FlopCount.Lora.NONE, batch).flops();
        long perLayer = 0;
        for (Projection p : Projection.values()) perLayer += 2L * p.inDim(c) * p.outDim(c);
        f += perLayer * n * c.numLayers();
        if (c.numLayers() > 0) f += 2L * c.hiddenSize() * (c.qDim() + 2L * c.kvDim()) * n;
        f += 2L * c.hiddenSize() * c.vocabSize() * outs;
        return f;
    }

    @Override
    public float[][] gradientsToHost() {
        float[][] out = new float[names.size()][];
        for (int i = 0; i < out.length; i++) out[i] = grads.toHost(names.get(i));
        return out;
    }

    @Override
    public void gradientsFromHost(float[][] g) {
        if (g.length != names.size()) throw new IllegalArgumentException("expected " + names.size() + " gradient tensors, got " + g.length);
        for (int i = 0; i < g.length; i++) {
            Tensor t = grads.get(names.get(i));
            if (g[i].length != t.numel()) throw new IllegalArgumentException("gradient " + names.get(i) + ": " + g[i].length + " values, expected " + t.numel());
            be.copyFromHost(t, g[i]);
        }
    }

    @Override
    public float applyUpdate(int step, long totalOutputTokens) {
        float scale = totalOutputTokens > 0 ? 1f / totalOutputTokens : 0f;
        float lr = LrSchedule.lr(opt, step);
        if (groups.size() == 1 && recordSteps && capture != null && groups.get(0).canClipOnDevice()) return recordedUpdate(lr, scale);
        double ss = 0;
        for (AdamwGroup g : groups) ss += g.gradSumOfSquares();
        double norm = Math.sqrt(ss) * scale;
        lastGradNorm = norm;
        if (opt.maxGradNorm() > 0 && norm > opt.maxGradNorm()) scale *= (float) (opt.maxGradNorm() / (norm + 1e-6));
        updates++;
        for (int i = 0; i < groups.size(); i++)   // also refreshes the compute copies and zeroes the gradients
            groups.get(i).step(lr, opt.beta1(), opt.beta2(), opt.eps(), groupDecay[i], updates, scale, true);
        return lr;
    }

    /** The update as one recorded graph (see {@code LoraTrainer}): scalars in a device tensor, replayed every step. */
    private float recordedUpdate(float lr, float scale) {
        updates++;
        float bc1 = (float) (1 - Math.pow(opt.beta1(), updates)), bc2 = (float) (1 - Math.pow(opt.beta2(), updates));
        if (hyper == null) hyper = be.empty(DType.F32, 5);
        be.copyFromHost(hyper, new float[] {lr, bc1, bc2, scale, opt.maxGradNorm()});
        AdamwGroup g = groups.get(0);
        if (updateGraph == null) {
            capture.beginCapture();
            try {
                g.clippedStep(hyper, opt.beta1(), opt.beta2(), opt.eps(), groupDecay[0], true);
            } catch (RuntimeException e) {
                capture.abortCapture();
                throw new IllegalStateException("recording the AdamW update as a CUDA graph failed (run with -Dsparselora.graphs=off to train without): " + e.getMessage(), e);
            }
            updateGraph = capture.endCapture();
        }
        updateGraph.replay();
        lastGradNorm = Math.sqrt(g.lastSumOfSquares()) * scale;
        return lr;
    }

    /**
     * Masters and moments under the parameter's HF name ({@code name}, {@code name.exp_avg},
     * {@code name.exp_avg_sq}) and the number of updates: everything a bit-identical resume needs (the
     * step has no randomness of its own; the data order is the checkpoint's data position).
     */
    @Override
    public TrainerState state() {
        LinkedHashMap<String, float[]> t = new LinkedHashMap<>();
        for (int i = 0; i < names.size(); i++) {
            t.put(names.get(i), be.toFloats(masters.get(i)));
            t.put(names.get(i) + ".exp_avg", be.toFloats(m.get(i)));
            t.put(names.get(i) + ".exp_avg_sq", be.toFloats(v.get(i)));
        }
        return new TrainerState(updates, t);
    }

    @Override
    public void restore(TrainerState state) {
        if (state.step() < 0) throw new IllegalArgumentException("trainer state step must be >= 0, got " + state.step());
        for (int i = 0; i < names.size(); i++) {
            String n = names.get(i);
            put(state, n, masters.get(i));
            put(state, n + ".exp_avg", m.get(i));
            put(state, n + ".exp_avg_sq", v.get(i));
            Tensor p = params.get(n);
            if (p != masters.get(i)) be.copy(p, masters.get(i));
        }
        updates = state.step();
        grads.zero();
    }

    private void put(TrainerState s, String name, Tensor dst) {
        float[] x = s.tensors().get(name);
        if (x == null) throw new IllegalArgumentException("trainer state lacks tensor " + name + " (a LoRA checkpoint cannot resume a full-parameter run)");
        if (x.length != dst.numel()) throw new IllegalArgumentException("trainer state tensor " + name + " has " + x.length + " values, expected " + dst.numel());
        be.copyFromHost(dst, x);
    }

    /**
     * The trained weights (the fp32 masters) as a {@link WeightSource} under HF names, for
     * {@code HfCheckpointWriter}: each tensor is copied to the host when asked for, one at a time.
     */
    public WeightSource weights() {
        LlamaConfig cfg = model.config();
        return new WeightSource() {
            @Override public LlamaConfig config() { return cfg; }

            @Override public Set<String> names() { return params.keySet(); }

            @Override
            public HostTensor get(String name) {
                int i = names.indexOf(name);
                if (i < 0) throw new IllegalArgumentException("trained weights: no parameter named " + name);
                float[] x = be.toFloats(masters.get(i));
                MemorySegment seg = Arena.ofAuto().allocate((long) x.length * 4, 4);
                MemorySegment.copy(x, 0, seg, ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0, x.length);
                return new HostTensor(name, DType.F32, masters.get(i).shape(), seg);
            }
        };
    }

    private void closeTensors() {
        for (Tensor t : ownedMasters) t.close();
        for (Tensor t : m) t.close();
        for (Tensor t : v) t.close();
        grads.close();
    }

    @Override
    public void close() {
        dropRecordings();
        if (hyper != null) hyper.close();
        for (AdamwGroup g : groups) g.close();
        closeTensors();
    }
}
