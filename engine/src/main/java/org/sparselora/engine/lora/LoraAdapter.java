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
 * (layer, projection, A then B) is the order of {@link #params()}, {@link #grads()} and every host
 * exchange.
 */
public final class LoraAdapter implements AutoCloseable {

    /** One adapted projection. y += s · (drop(x)·Aᵀ)·Bᵀ. */
    public record Lora(Projection proj, int layer, Tensor a, Tensor b, Tensor da, Tensor db) {
        public int rank() { return a.dim(0); }
    }

    private final Backend backend;
    private final LlamaConfig model;
    private final LoraConfig config;
    private final Lora[][] byLayer; // [layer][projection ordinal], null where not targeted
    private final List<Tensor> params = new ArrayList<>();
    private final List<Tensor> grads = new ArrayList<>();
    private final List<String> names = new ArrayList<>();

    public LoraAdapter(Backend backend, LlamaConfig model, LoraConfig config) {
        this.backend = backend;
        this.model = model;
        this.config = config;
        int nProj = Projection.values().length;
        this.byLayer = new Lora[model.numLayers()][nProj];
        for (int l = 0; l < model.numLayers(); l++)
            for (Projection p : config.orderedTargets()) {
                int in = p.inDim(model), out = p.outDim(model), r = config.r();
                float[] a = new float[r * in];
                // one stream per (seed, layer, projection): the init does not depend on which other targets exist
                SplittableRandom rnd = new SplittableRandom(config.seed() * 1_000_003L + l * 31L + p.ordinal());
                double bound = 1.0 / Math.sqrt(in);
                for (int i = 0; i < a.length; i++) a[i] = (float) ((rnd.nextDouble() * 2 - 1) * bound);
                Tensor ta = backend.fromFloats(a, DType.F32, r, in);
                Tensor tb = backend.zeros(DType.F32, out, r);
                Lora lo = new Lora(p, l, ta, tb, backend.zeros(DType.F32, r, in), backend.zeros(DType.F32, out, r));
                byLayer[l][p.ordinal()] = lo;
                params.add(ta); params.add(tb);
                grads.add(lo.da()); grads.add(lo.db());
                names.add(name(l, p, "A")); names.add(name(l, p, "B"));
            }
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

    /** Parameters in canonical order (A, B per layer and target). */
    public List<Tensor> params() { return params; }

    /** Gradient buffers, same order as {@link #params()}. */
    public List<Tensor> grads() { return grads; }

    /** PEFT names, same order as {@link #params()}. */
    public List<String> names() { return names; }

    public void zeroGrads() { for (Tensor g : grads) backend.fill(g, 0f); }

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
    }

    @Override
    public void close() {
        for (Tensor t : params) t.close();
        for (Tensor t : grads) t.close();
    }
}
