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
    /**
     * The adapter's storage: every master, gradient and compute copy is a view into one flat tensor
     * of its kind, so zeroing all gradients or refreshing all copies is one op (one launch on a
     * device), and a fused group's A rows are adjacent. flatC is flatP on F32.
     */
    private final Tensor flatP, flatG, flatC;

    /** Each view starts at a multiple of this many elements (≥ 256-byte aligned for vector loads and cuBLAS). */
    private static final long ALIGN = 128;

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
        int nProj = Projection.values().length, L = model.numLayers(), r = config.r();
        this.byLayer = new Lora[L][nProj];
        this.groups = new Group[L][nProj];
        DType ct = backend.computeType();
        boolean f32 = ct == DType.F32;
        // layout, per layer: each fused group's A rows (members in canonical order), the other A's, then every B
        List<List<List<Projection>>> fusedOf = new ArrayList<>();
        long[][] aOff = new long[L][nProj], bOff = new long[L][nProj];
        long[][] groupOff = new long[L][SHARED_INPUT.size()];
        long size = 0;
        for (int l = 0; l < L; l++) {
            List<List<Projection>> fl = new ArrayList<>();
            for (int gi = 0; gi < SHARED_INPUT.size(); gi++) {
                List<Projection> members = new ArrayList<>();
                for (Projection p : SHARED_INPUT.get(gi)) if (config.targets().contains(p)) members.add(p);
                if (!fuseSharedInputs || members.size() < 2) members = List.of();
                fl.add(members);
                if (members.isEmpty()) continue;
                groupOff[l][gi] = size;
                for (Projection p : members) {
                    aOff[l][p.ordinal()] = size;
                    size += (long) r * p.inDim(model);   // rows of one tensor: no padding between members
                }
                size = align(size);
            }
            fusedOf.add(fl);
            for (Projection p : config.orderedTargets()) {
                if (inGroup(fl, p)) continue;
                aOff[l][p.ordinal()] = size;
                size = align(size + (long) r * p.inDim(model));
            }
            for (Projection p : config.orderedTargets()) {
                bOff[l][p.ordinal()] = size;
                size = align(size + (long) p.outDim(model) * r);
            }
        }
        if (size > Integer.MAX_VALUE) throw new IllegalArgumentException("LoRA adapter of " + size + " parameters is too large for one buffer");
        flatP = backend.zeros(DType.F32, (int) size);
        flatG = backend.zeros(DType.F32, (int) size);
        flatC = f32 ? flatP : backend.zeros(ct, (int) size);
        for (int l = 0; l < L; l++) {
            for (int gi = 0; gi < SHARED_INPUT.size(); gi++) {
                List<Projection> members = fusedOf.get(l).get(gi);
                if (members.isEmpty()) continue;
                int rows = members.size() * r, in = members.get(0).inDim(model);
                long off = groupOff[l][gi];
                Group g = new Group(l, List.copyOf(members), flatP.view(off, rows, in), flatG.view(off, rows, in), flatC.view(off, rows, in));
                for (Projection p : members) groups[l][p.ordinal()] = g;
            }
            for (Projection p : config.orderedTargets()) {
                int in = p.inDim(model), out = p.outDim(model);
                float[] a = new float[r * in];
                // one stream per (seed, layer, projection): the init does not depend on which other targets exist
                SplittableRandom rnd = new SplittableRandom(config.seed() * 1_000_003L + l * 31L + p.ordinal());
                double bound = 1.0 / Math.sqrt(in);
                for (int i = 0; i < a.length; i++) a[i] = (float) ((rnd.nextDouble() * 2 - 1) * bound);
                long ao = aOff[l][p.ordinal()], bo = bOff[l][p.ordinal()];
                Tensor ta = flatP.view(ao, r, in), tb = flatP.view(bo, out, r);
                backend.copyFromHost(ta, a);
                Lora lo = new Lora(p, l, ta, tb, flatG.view(ao, r, in), flatG.view(bo, out, r),
                        f32 ? ta : flatC.view(ao, r, in), f32 ? tb : flatC.view(bo, out, r));
                byLayer[l][p.ordinal()] = lo;
                params.add(lo.a()); params.add(lo.b());
                grads.add(lo.da()); grads.add(lo.db());
                copies.add(lo.ac()); copies.add(lo.bc());
                names.add(name(l, p, "A")); names.add(name(l, p, "B"));
            }
        }
        syncComputeCopies();
    }

    private static long align(long n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

    private static boolean inGroup(List<List<Projection>> fused, Projection p) {
        for (List<Projection> g : fused) if (g.contains(p)) return true;
        return false;
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

    /** Rewrites every compute copy from its master (one op over the flat buffers); a no-op where the compute type is F32. */
    public void syncComputeCopies() { if (flatC != flatP) backend.copy(flatC, flatP); }

    /**
     * The flat storage behind {@link #params()}, {@link #grads()} and {@link #computeCopies()}: every
     * tensor of those lists is a view into these (F32, F32, compute type; the third is the first on
     * F32). Elements between views are padding, zero in all three, so an element-wise optimizer
     * step over the flat tensors equals the per-tensor steps and leaves the padding zero.
     */
    public Tensor flatParams() { return flatP; }

    public Tensor flatGrads() { return flatG; }

    public Tensor flatComputeCopies() { return flatC; }

    /** Parameters in canonical order (A, B per layer and target). */

    public List<Tensor> params() { return params; }

    /** Gradient buffers, same order as {@link #params()}. */
    public List<Tensor> grads() { return grads; }

    /** PEFT names, same order as {@link #params()}. */
    public List<String> names() { return names; }

    public void zeroGrads() { backend.fill(flatG, 0f); }

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
        flatP.close();
        flatG.close();
        if (flatC != flatP) flatC.close();
    }
}
