package org.sparselora.engine.lora;

import java.util.ArrayList;
import java.util.Collection;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;
import org.sparselora.engine.model.Projection;

/**
 * LoRA hyper-parameters, PEFT's meaning: rank r, alpha, dropout on the LoRA branch's input, the
 * targeted projections, rsLoRA scaling, and the seed of A's initialisation. The one place the
 * scaling is chosen: alpha/√r with rsLoRA, alpha/r otherwise.
 */
public record LoraConfig(int r, float alpha, float dropout, Set<Projection> targets, boolean useRslora, long seed) {

    public LoraConfig {
        if (r <= 0) throw new IllegalArgumentException("lora r must be > 0, got " + r);
        if (!(dropout >= 0f && dropout < 1f)) throw new IllegalArgumentException("lora dropout must be in [0,1), got " + dropout);
        if (targets == null || targets.isEmpty()) throw new IllegalArgumentException("lora targets must name at least one projection");
        targets = Set.copyOf(EnumSet.copyOf(targets));
    }

    /** The reference default: r=32, alpha=64, dropout 0, q,k,v,o. */
    public static LoraConfig defaults(long seed) {
        return new LoraConfig(32, 64f, 0f, EnumSet.of(Projection.Q, Projection.K, Projection.V, Projection.O), false, seed);
    }

    /** Targets from PEFT names ({@code q_proj}, …); {@code all-linear} means all seven. */
    public static Set<Projection> targetsOf(Collection<String> names) {
        EnumSet<Projection> s = EnumSet.noneOf(Projection.class);
        for (String n : names) {
            if (n.equals("all-linear")) s.addAll(EnumSet.allOf(Projection.class));
            else s.add(Projection.byHfName(n));
        }
        return s;
    }

    public float scaling() { return useRslora ? (float) (alpha / Math.sqrt(r)) : alpha / r; }

    /** Targets in canonical (enum) order. */
    public List<Projection> orderedTargets() {
        List<Projection> l = new ArrayList<>();
        for (Projection p : Projection.values()) if (targets.contains(p)) l.add(p);
        return l;
    }
}
