package org.sparselora.engine.model;

/**
 * The seven linear projections of a Llama decoder layer, with their HF/PEFT names and their shapes
 * for a given config. Frozen base weights and LoRA adapters are both keyed by these.
 */
public enum Projection {
    Q("q_proj", "self_attn"), K("k_proj", "self_attn"), V("v_proj", "self_attn"), O("o_proj", "self_attn"),
    GATE("gate_proj", "mlp"), UP("up_proj", "mlp"), DOWN("down_proj", "mlp");

    /** HF module name, e.g. {@code q_proj}. */
    public final String hfName;
    /** Parent module, {@code self_attn} or {@code mlp}. */
    public final String module;

    Projection(String hfName, String module) {
        this.hfName = hfName;
        this.module = module;
    }

    /** {@code layers.{i}.self_attn.q_proj} — the path under {@code model.} in HF names. */
    public String path(int layer) { return "layers." + layer + "." + module + "." + hfName; }

    public int inDim(LlamaConfig c) {
        return switch (this) {
            case Q, K, V, GATE, UP -> c.hiddenSize();
            case O -> c.qDim();
            case DOWN -> c.intermediateSize();
        };
    }

    public int outDim(LlamaConfig c) {
        return switch (this) {
            case Q -> c.qDim();
            case K, V -> c.kvDim();
            case GATE, UP -> c.intermediateSize();
            case O, DOWN -> c.hiddenSize();
        };
    }

    /** The projection named {@code q_proj} etc., or an error listing the valid names. */
    public static Projection byHfName(String name) {
        for (Projection p : values()) if (p.hfName.equals(name)) return p;
        throw new IllegalArgumentException("unknown LoRA target '" + name + "'; expected one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
    }
}
