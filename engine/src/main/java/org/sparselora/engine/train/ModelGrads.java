package org.sparselora.engine.train;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.DType;
import org.sparselora.engine.backend.Tensor;

/**
 * One F32 gradient tensor per model parameter (HF name → tensor of the parameter's shape), on the
 * model's backend: what {@link FullParameterModel#forwardBackward} adds into and what
 * {@link FullTrainer}'s AdamW reads. Allocated once for the trainer's life (the optimizer group keeps
 * their addresses); zeroed by the update. The gradients are views of one flat buffer (each view
 * starting at a multiple of {@value #ALIGN} elements, for vector loads and cuBLAS), so a
 * {@link GradientExchange} sums data-parallel workers' gradients as one buffer; a model of more than
 * 2³¹ − 1 gradient elements gets one tensor per parameter instead ({@link #flat()} is then null).
 */
public final class ModelGrads implements AutoCloseable {
    /** Each view starts at a multiple of this many elements (512 bytes). */
    public static final long ALIGN = 128;

    private final Backend be;
    private final LinkedHashMap<String, Tensor> grads;
    private final Tensor flat;   // null: one tensor per parameter

    private ModelGrads(Backend be, LinkedHashMap<String, Tensor> grads, Tensor flat) {
        this.be = be;
        this.grads = grads;
        this.flat = flat;
    }

    /** Zero gradients shaped like {@code params}, in their order. */
    public static ModelGrads zerosLike(Backend be, Map<String, Tensor> params) {
        LinkedHashMap<String, Tensor> g = new LinkedHashMap<>();
        long size = 0;
        for (Tensor p : params.values()) size += (p.numel() + ALIGN - 1) / ALIGN * ALIGN;
        if (size > Integer.MAX_VALUE) {
            for (Map.Entry<String, Tensor> e : params.entrySet()) g.put(e.getKey(), be.zeros(DType.F32, e.getValue().shape()));
            return new ModelGrads(be, g, null);
        }
        Tensor flat = be.zeros(DType.F32, (int) Math.max(1, size));
        long off = 0;
        for (Map.Entry<String, Tensor> e : params.entrySet()) {
            g.put(e.getKey(), flat.view(off, e.getValue().shape()));
            off += (e.getValue().numel() + ALIGN - 1) / ALIGN * ALIGN;
        }
        return new ModelGrads(be, g, flat);
    }

    /** The one buffer every gradient is a view of (padding between views stays zero), or null. */
    public Tensor flat() { return flat; }

    /** The gradient of parameter {@code name}; an error naming it when there is none. */
    public Tensor get(String name) {
        Tensor t = grads.get(name);
        if (t == null) throw new IllegalArgumentException("no gradient for parameter '" + name + "' (parameters: " + grads.size() + ")");
        return t;
    }

    public List<String> names() { return Collections.unmodifiableList(new ArrayList<>(grads.keySet())); }

    public List<Tensor> tensors() { return Collections.unmodifiableList(new ArrayList<>(grads.values())); }

    public int size() { return grads.size(); }

    public void zero() {
        if (flat != null) be.fill(flat, 0f);
        else for (Tensor t : grads.values()) be.fill(t, 0f);
    }

    /** Σ g² over every gradient, in double. */
    public double sumOfSquares() { return be.sumOfSquares(tensors()); }

    /** A host copy of one gradient. */
    public float[] toHost(String name) { return be.toFloats(get(name)); }

    @Override
    public String toString() {
        StringBuilder b = new StringBuilder("ModelGrads[");
        grads.forEach((k, v) -> b.append(k).append(Arrays.toString(v.shape())).append(' '));
        return b.append(']').toString();
    }

    @Override
    public void close() {
        if (flat != null) flat.close();
        else for (Tensor t : grads.values()) t.close();
    }
}
