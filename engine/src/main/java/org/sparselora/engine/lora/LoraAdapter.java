package org.sparselora.engine.lora;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;
import org.sparselora.engine.model.LlamaConfig;
import org.sparselora.engine.model.Projection;

/**
 * The trainable LoRA parameters of a whole model, on a backend: for every layer and targeted
 * projection, A (r, in) kaiming-uniform (a = √5, PEFT's init: bound 1/√in) and B (out, r) zero,
 * as fp32 master tensors with fp32 gradient buffers of the same shape. Keyed by PEFT's names
 * ({@code base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight}); the canonical order
 * (layer, projection, A then B) is the order of {@link #params()}, {@link #grads()},
 * {@link #computeCopies()} and every host exchange.
 *
 * <p><b>Compute copies.</b> The GEMMs read A and B in the backend's compute type: on a bf16 device
 * every master has a bf16 copy (so no GEMM converts its operand first); where the compute type is
 * F32 (the CPU reference) the copy is the master itself. Copies are refreshed by
 * {@link #syncComputeCopies()}, which {@link #fromHost} and the trainer's update call; whoever
 * writes a master directly (e.g. {@code backend.copyFromHost(params().get(i), …)}) must call it.
 *
 * <p><b>Fused layout.</b> With dropout 0, the A matrices of the targeted projections that read the
 * same input — q,k,v (the layer's normed input) and gate,up (the MLP's normed input) — are row
 * blocks of one (k·r, in) tensor per layer ({@link Group}), as are their gradients and compute
 * copies, so the model computes all their x·Aᵀ in one GEMM. This is an internal layout: names,
 * shapes and values seen through {@link #params()}, {@link #toHost()} and saved adapters are
 * per projection, exactly as without it.
 */
public final class LoraAdapter implements AutoCloseable {

    /** One adapted projection. y += s · (drop(x)·Aᵀ)·Bᵀ; ac, bc are A and B in the compute type (== a, b on F32). */
    public record Lora(Projection proj, int layer, Tensor a, Tensor b, Tensor da, Tensor db, Tensor ac, Tensor bc) {
        public int rank() { return a.dim(0); }
    }

    /**
     * The fused A of a layer's projections that share an input: members in canonical order, A, dA
     * and A's compute copy of shape (members·r, in); member j's tensors are rows [j·r, (j+1)·r).
     */
    public record Group(int layer, List<Projection> members, Tensor a, Tensor da, Tensor ac) {}

    /** Projections that read the same input, in canonical order. */
    private static final List<List<Projection>> SHARED_INPUT = List.of(
            List.of(Projection.Q, Projection.K, Projection.V), List.of(Projection.GATE, Projection.UP));

    private final Backend backend;
    private final LlamaConfig model;
    private final LoraConfig config;
    private final Lora[][] byLayer; // [layer][projection ordinal], null where not targeted
    private final Group[][] groups; // [layer][projection ordinal], null where not in a fused group
    private final List<Tensor> params = new ArrayList<>();
    private final List<Tensor> grads = new ArrayList<>();
    private final List<Tensor> copies = new ArrayList<>();
    private final List<String> names = new ArrayList<>();
    /** Tensors this adapter allocated (owners; the fused members are views into some of them). */
    private final List<Tensor> owned = new ArrayList<>();
    /** What zeroGrads fills and syncComputeCopies copies: whole fused tensors once, others one by one. */
    private final List<Tensor> gradBlocks = new ArrayList<>();
    private final List<Tensor[]> copyBlocks = new ArrayList<>(); // {copy, master}

    /** Fuses the shared-input A matrices when the config's dropout is 0 (PEFT draws one dropout mask per module). */
    public LoraAdapter(Backend backend, LlamaConfig model, LoraConfig config) {
        this(backend, model, config, config.dropout() == 0f);
    }

    /**
     * @param fuseSharedInputs use the fused layout (see the class comment); needs dropout 0 — tests
     *                         pass false to run the per-projection path on the same values
     */
    public LoraAdapter(Backend backend, LlamaConfig model, LoraConfig config, boolean fuseSharedInputs) {
        if (fuseSharedInputs && config.dropout() != 0f)
            throw new IllegalArgumentException("fused LoRA layout needs dropout 0 (PEFT draws a mask per module), got " + config.dropout());
        this.backend = backend;
        this.model = model;
        this.config = config;
        int nProj = Projection.values().length;
        this.byLayer = new Lora[model.numLayers()][nProj];
        this.groups = new Group[model.numLayers()][nProj];
        DType ct = backend.computeType();
        boolean f32 = ct == DType.F32;
        int r = config.r();
        for (int l = 0; l < model.numLayers(); l++) {
            // fused A blocks first (their members' A, dA and copy are views)
            Tensor[][] fusedViews = new Tensor[nProj][];
            if (fuseSharedInputs)
                for (List<Projection> shared : SHARED_INPUT) {
                    List<Projection> members = new ArrayList<>();
                    for (Projection p : shared) if (config.targets().contains(p)) members.add(p);
                    if (members.size() < 2) continue;
                    int in = members.get(0).inDim(model), rows = members.size() * r;
                    Tensor fa = backend.empty(DType.F32, rows, in), fda = backend.zeros(DType.F32, rows, in);
                    Tensor fac = f32 ? fa : backend.empty(ct, rows, in);
                    owned.add(fa); owned.add(fda);
                    gradBlocks.add(fda);
                    if (!f32) { owned.add(fac); copyBlocks.add(new Tensor[] {fac, fa}); }
                    Group g = new Group(l, List.copyOf(members), fa, fda, fac);
                    for (int j = 0; j < members.size(); j++) {
                        long off = (long) j * r * in;
                        Projection p = members.get(j);
                        groups[l][p.ordinal()] = g;
                        fusedViews[p.ordinal()] = new Tensor[] {fa.view(off, r, in), fda.view(off, r, in), fac.view(off, r, in)};
                    }
                }
            for (Projection p : config.orderedTargets()) {
                int in = p.inDim(model), out = p.outDim(model);
                float[] a = new float[r * in];
                // one stream per (seed, layer, projection): the init does not depend on which other targets exist
                SplittableRandom rnd = new SplittableRandom(config.seed() * 1_000_003L + l * 31L + p.ordinal());
                double bound = 1.0 / Math.sqrt(in);
                for (int i = 0; i < a.length; i++) a[i] = (float) ((rnd.nextDouble() * 2 - 1) * bound);
                Tensor[] fv = fusedViews[p.ordinal()];
                Tensor ta, tda, tac;
                if (fv != null) {
                    ta = fv[0]; tda = fv[1]; tac = f32 ? ta : fv[2];
                    backend.copyFromHost(ta, a);
                } else {
                    ta = backend.fromFloats(a, DType.F32, r, in);
                    tda = backend.zeros(DType.F32, r, in);
                    tac = f32 ? ta : backend.empty(ct, r, in);
                    owned.add(ta); owned.add(tda);
                    gradBlocks.add(tda);
                    if (!f32) { owned.add(tac); copyBlocks.add(new Tensor[] {tac, ta}); }
                }
                Tensor tb = backend.zeros(DType.F32, out, r), tdb = backend.zeros(DType.F32, out, r);
                Tensor tbc = f32 ? tb : backend.empty(ct, out, r);
                owned.add(tb); owned.add(tdb);
                gradBlocks.add(tdb);
                if (!f32) { owned.add(tbc); copyBlocks.add(new Tensor[] {tbc, tb}); }
                Lora lo = new Lora(p, l, ta, tb, tda, tdb, tac, tbc);
                byLayer[l][p.ordinal()] = lo;
                params.add(ta); params.add(tb);
                grads.add(tda); grads.add(tdb);
                copies.add(tac); copies.add(tbc);
                names.add(name(l, p, "A")); names.add(name(l, p, "B"));
            }
        }
        syncComputeCopies();
    }

    /** PEFT's tensor name, e.g. {@code base_model.model.model.layers.3.mlp.up_proj.lora_B.weight}. */
    /**
     * A PEFT adapter (as read by {@code io.PeftAdapter.read}) on {@code backend}, checked against the
     * model first. Dropout is off (scoring, generation, evaluation); a bad tensor is a
     * {@code FormatException} naming {@code where}.
     */
    public static LoraAdapter fromPeft(Backend backend, LlamaConfig model, org.sparselora.engine.io.AdapterFiles af, java.nio.file.Path where) {
        org.sparselora.engine.io.PeftAdapter.validate(where, af, model);
        var s = af.spec();
        LoraAdapter lora = new LoraAdapter(backend, model, new LoraConfig(s.r(), s.loraAlpha(), 0f, LoraConfig.targetsOf(s.targetModules()), s.useRslora(), 0));
        try {
            lora.fromHost(af.tensors());
        } catch (RuntimeException e) {
            lora.close();
            throw new org.sparselora.engine.io.FormatException(where, e.getMessage() != null ? e.getMessage() : e.toString(), e);
        }
        return lora;
    }

    public static String name(int layer, Projection p, String ab) {
        return "base_model.model.model." + p.path(layer) + ".lora_" + ab + ".weight";
    }

    public LoraConfig config() { return config; }

    public LlamaConfig modelConfig() { return model; }

    public Backend backend() { return backend; }

    public float scaling() { return config.scaling(); }

    /** The adapter of (layer, projection), or null when that projection is not targeted. */
    public Lora get(int layer, Projection p) { return byLayer[layer][p.ordinal()]; }

    /** The fused group (layer, p) belongs to, or null when p runs its own LoRA GEMMs (not fused, or not targeted). */
    public Group group(int layer, Projection p) { return groups[layer][p.ordinal()]; }

    /** Whether any projection is in a fused group. */
    public boolean fused() {
        for (Group[] gs : groups) for (Group g : gs) if (g != null) return true;
        return false;
    }

    /**
     * The parameters in the backend's compute type, same order as {@link #params()}: the parameter
     * itself where the compute type is F32, a copy otherwise (current as of the last
     * {@link #syncComputeCopies()}).
     */
    public List<Tensor> computeCopies() { return copies; }

    /** Rewrites every compute copy from its master (fused blocks in one copy each); a no-op where the compute type is F32. */
    public void syncComputeCopies() { for (Tensor[] cm : copyBlocks) backend.copy(cm[0], cm[1]); }

    /** Parameters in canonical order (A, B per layer and target). */

    public List<Tensor> params() { return params; }

    /** Gradient buffers, same order as {@link #params()}. */
    public List<Tensor> grads() { return grads; }

    /** PEFT names, same order as {@link #params()}. */
    public List<String> names() { return names; }

    public void zeroGrads() { for (Tensor g : gradBlocks) backend.fill(g, 0f); }

    public long parameterCount() {
        long n = 0;
        for (Tensor t : params) n += t.numel();
        return n;
    }

    /** The parameters by PEFT name, in canonical order. */
    public LinkedHashMap<String, float[]> toHost() {
        LinkedHashMap<String, float[]> m = new LinkedHashMap<>();
        for (int i = 0; i < params.size(); i++) m.put(names.get(i), backend.toFloats(params.get(i)));
        return m;
    }

    /** Loads parameters by PEFT name: every tensor of this adapter must be present with its size. */
    public void fromHost(Map<String, float[]> tensors) {
        for (int i = 0; i < params.size(); i++) {
            String n = names.get(i);
            float[] v = tensors.get(n);
            if (v == null) throw new IllegalArgumentException("adapter tensor missing: " + n);
            Tensor t = params.get(i);
            if (v.length != t.numel())
                throw new IllegalArgumentException("adapter tensor " + n + " has " + v.length + " values, expected " + Tensor.describe(t));
            backend.copyFromHost(t, v);
        }
        for (String n : tensors.keySet())
            if (!names.contains(n)) throw new IllegalArgumentException("adapter tensor " + n + " does not belong to this adapter (targets " + config.orderedTargets() + ", r=" + config.r() + ")");
        syncComputeCopies();
    }

    @Override
    public void close() {
        for (Tensor t : owned) t.close();
    }
}
