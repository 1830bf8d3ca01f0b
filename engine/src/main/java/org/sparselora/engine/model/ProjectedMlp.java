package org.sparselora.engine.model;

import org.sparselora.engine.backend.Backend;
import org.sparselora.engine.backend.Tensor;

/**
 * The MLP as three projections: gate and up (frozen part, then LoRA; their fused LoRA group after
 * both), swiglu, down. Each projection's frozen part is its own {@link FrozenLinear}, so this one
 * strategy runs dense layers and, at the full intermediate width, sparse ones.
 */
final class ProjectedMlp implements Mlp {
    private final Backend be;
    private final FrozenLinear gate, up, down;
    private final LoraBranch lora;

    ProjectedMlp(Backend be, FrozenLinear gate, FrozenLinear up, FrozenLinear down, LoraBranch lora) {
        this.be = be;
        this.gate = gate;
        this.up = up;
        this.down = down;
        this.lora = lora;
    }

    @Override public Kind kind() { return Kind.PROJECTED; }

    @Override
    public void forward(Activations a, Tensor y, int l) {
        Tensor x = a.xn2[l];
        gate.forward(a, a.g[l], x);
        lora.forward(a, a.g[l], x, l, Projection.GATE);
        up.forward(a, a.u[l], x);
        lora.forward(a, a.u[l], x, l, Projection.UP);
        lora.groupForward(a, l, lora.group(l, Projection.GATE), x, 1f);          // gate/up's LoRA when fused
        be.swiglu(a.h[l], a.g[l], a.u[l]);
        down.forward(a, y, a.h[l]);
        lora.forward(a, y, a.h[l], l, Projection.DOWN);
    }

    @Override
    public void backward(Activations a, Tensor dx, Tensor dy, int l) {
        Tensor x = a.xn2[l];
        down.backward(a, a.dh, false, dy, a.h[l]);
        lora.backward(a, a.dh, dy, a.h[l], l, Projection.DOWN);
        be.swigluBackward(a.dg, a.du, a.dh, a.g[l], a.u[l]);
        gate.backward(a, dx, false, a.dg, x);
        lora.backward(a, dx, a.dg, x, l, Projection.GATE);
        up.backward(a, dx, true, a.du, x);
        lora.backward(a, dx, a.du, x, l, Projection.UP);
        lora.groupBackward(a, dx, l, lora.group(l, Projection.GATE), x);
    }
}
