package org.sparselora.engine.backend;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * A fixed set of LoRA tensors that take their AdamW step together: each slot is
 * {@code {param, grad, m, v}} (all F32, one shape) and optionally a fifth tensor, the parameter's
 * <em>compute copy</em> (the tensor the model's GEMMs read, e.g. a bf16 copy of the fp32 master on
 * the GPU; same shape, any float dtype), which the step refreshes from the updated parameter.
 * Made once by {@link Backend#adamwGroup} for tensors that live as long as the group; a device
 * backend keeps a table of their addresses, so the whole optimizer phase of a training step is a
 * couple of launches instead of one (or three) per tensor.
 *
 * <p>{@link PerTensor} is the reference semantics (the per-tensor ops in a loop); a backend's own
 * group must give the same results, and on the backend that defines {@link Backend#adamw} by
 * itself the default must stay bit-for-bit identical to the plain loop (the trainer's resume tests
 * pin that on the CPU).
 */
public interface AdamwGroup extends AutoCloseable {

    /** Number of slots. */
    int size();

    /** Σ grad² over every slot's gradient, accumulated in double (waits for the device). */
    double gradSumOfSquares();

    /**
     * One AdamW step over every slot, same rule as {@link Backend#adamw} (bias correction by the
     * 1-based {@code step}, {@code gradScale} carries averaging and clipping); then each compute
     * copy that is not the parameter itself becomes {@code convert(param)}; with {@code zeroGrads}
     * every gradient is left zero.
     */
    void step(float lr, float beta1, float beta2, float eps, float weightDecay, int step, float gradScale, boolean zeroGrads);

    /**
     * Whether {@link #clippedStep} is supported: the whole update with its per-step scalars read from
     * device memory, so it can be recorded once ({@link org.sparselora.engine.backend.GraphCapture#beginCapture()}) and replayed every
     * step. Groups that run on the host (the reference loop) say no.
     */
    default boolean canClipOnDevice() { return false; }

    /**
     * A trainer's whole update without a host round trip: Σgrad² of the slots' gradients, then
     * {@link #step} with gradScale = invTokens, multiplied by {@code (float) (maxNorm / (norm + 1e-6))}
     * when maxNorm &gt; 0 and norm = √Σgrad² · invTokens (in double) exceeds it — the clipping of
     * {@code LoraTrainer}, same arithmetic — and lr and the bias corrections (1 − β₁ᵗ, 1 − β₂ᵗ as
     * floats) read from {@code hyper}, F32 {lr, bc1, bc2, invTokens, maxNorm}, which the caller writes
     * before each run. {@link #lastSumOfSquares()} then reads the Σgrad² it used.
     */
    default void clippedStep(Tensor hyper, float beta1, float beta2, float eps, float weightDecay, boolean zeroGrads) {
        throw new UnsupportedOperationException("this AdamW group runs its update on the host (canClipOnDevice() is false)");
    }

    /**
     * Which slots take weight decay (full-parameter training decays the weight matrices, not norms,
     * biases or embeddings): from now on slot i's update uses {@code weightDecay} where
     * {@code decays[i]} and 0 elsewhere, in {@link #step} and {@link #clippedStep} alike. Every slot
     * decays until this is called (LoRA's behaviour). A group that cannot tell its slots apart
     * accepts only a mask of all true and throws {@link UnsupportedOperationException} otherwise,
     * so the caller can fall back to one group per decay setting.
     */
    default void setDecayMask(boolean[] decays) {
        if (decays == null || decays.length != size())
            throw new IllegalArgumentException("adamw group: decay mask needs " + size() + " entries, got " + (decays == null ? "null" : decays.length));
        for (boolean d : decays)
            if (!d) throw new UnsupportedOperationException("this AdamW group applies one weight decay to every slot");
    }

    /** Σgrad² used by the last {@link #clippedStep} (waits for the device). */
    default double lastSumOfSquares() {
        throw new UnsupportedOperationException("this AdamW group runs its update on the host (canClipOnDevice() is false)");
    }

    /** Frees what the group itself holds (never the slots' tensors). */
    @Override
    void close();

    /**
     * Checks slots (for backend {@code be}) and returns them as an unmodifiable list of copies: 4 or 5 tensors each; param,
     * grad, m and v F32 of one shape; a compute copy (if given) floating with the param's shape.
     * Errors name the slot and the tensor.
     */
    static List<Tensor[]> checkSlots(Backend be, List<Tensor[]> slots) {
        if (slots == null) throw new IllegalArgumentException("adamw group: slots is null");
        String[] role = {"param", "grad", "m", "v", "compute copy"};
        List<Tensor[]> out = new ArrayList<>(slots.size());
        for (int i = 0; i < slots.size(); i++) {
            Tensor[] s = slots.get(i);
            if (s == null || (s.length != 4 && s.length != 5))
                throw new IllegalArgumentException("adamw group slot " + i + ": want {param, grad, m, v} or {param, grad, m, v, computeCopy}, got "
                        + (s == null ? "null" : s.length + " tensors"));
            for (int j = 0; j < s.length; j++) {
                Tensor t = s[j];
                if (t == null) throw new IllegalArgumentException("adamw group slot " + i + ": " + role[j] + " is null");
                if (t.backend() != be)
                    throw new IllegalArgumentException("adamw group slot " + i + ": " + role[j] + " " + Tensor.describe(t) + " belongs to backend "
                            + t.backend().name() + ", not " + be.name());
                if (j < 4 && t.dtype() != DType.F32)
                    throw new IllegalArgumentException("adamw group slot " + i + ": " + role[j] + " must be F32, got " + Tensor.describe(t));
                if (j == 4 && t.dtype() == DType.I32)
                    throw new IllegalArgumentException("adamw group slot " + i + ": compute copy must be a floating tensor, got " + Tensor.describe(t));
                if (j > 0 && !java.util.Arrays.equals(t.shape(), s[0].shape()))
                    throw new IllegalArgumentException("adamw group slot " + i + ": " + role[j] + " " + Tensor.describe(t)
                            + " does not match param " + Tensor.describe(s[0]));
            }
            out.add(s.clone());
        }
        return Collections.unmodifiableList(out);
    }

    /** The reference implementation: the per-tensor {@link Backend} ops in a loop. */
    final class PerTensor implements AdamwGroup {
        private final Backend be;
        private final List<Tensor[]> slots;
        private final List<Tensor> grads;
        private boolean[] decays;   // null: every slot decays

        public PerTensor(Backend be, List<Tensor[]> slots) {
            this.be = be;
            this.slots = checkSlots(be, slots);
            List<Tensor> g = new ArrayList<>(this.slots.size());
            for (Tensor[] s : this.slots) g.add(s[1]);
            this.grads = Collections.unmodifiableList(g);
        }

        @Override public int size() { return slots.size(); }

        @Override public double gradSumOfSquares() { return be.sumOfSquares(grads); }

        @Override
        public void step(float lr, float beta1, float beta2, float eps, float weightDecay, int step, float gradScale, boolean zeroGrads) {
            if (step < 1) throw new IllegalArgumentException("adamw: step is 1-based, got " + step);
            for (int i = 0; i < slots.size(); i++) {
                Tensor[] s = slots.get(i);
                be.adamw(s[0], s[1], s[2], s[3], lr, beta1, beta2, eps, decays == null || decays[i] ? weightDecay : 0f, step, gradScale);
            }
            for (Tensor[] s : slots)
                if (s.length == 5 && s[4] != s[0]) be.copy(s[4], s[0]);
            if (zeroGrads) for (Tensor g : grads) be.fill(g, 0f);
        }

        @Override
        public void setDecayMask(boolean[] decays) {
            if (decays == null || decays.length != slots.size())
                throw new IllegalArgumentException("adamw group: decay mask needs " + slots.size() + " entries, got " + (decays == null ? "null" : decays.length));
            this.decays = decays.clone();
        }

        @Override public void close() {}
    }
}
