package org.sparselora.engine.backend;

import java.util.Arrays;

/**
 * Argument checks the host-memory backends (CPU and reference) share: a shape's element count, a
 * view inside its storage, operands of equal size, and the AdamW step's operands. Each failure is
 * one {@link IllegalArgumentException} naming the op and the offending shapes.
 */
public final class TensorChecks {

    private TensorChecks() {}

    /** The element count of {@code shape}; a negative dimension is an error. */
    public static long numel(int[] shape) {
        long n = 1;
        for (int d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            n *= d;
        }
        return n;
    }

    /** A view of {@code numel} elements from {@code off} must lie inside a storage of {@code cap} elements. */
    public static void viewInside(int off, long numel, int cap) {
        if (off < 0 || off + numel > cap)
            throw new IllegalArgumentException("view [" + off + ", " + (off + numel) + ") outside storage of " + cap);
    }

    /** {@code a} and {@code b} must have the same element count. */
    public static void sameNumel(Tensor a, Tensor b, String op) {
        if (a.numel() != b.numel())
            throw new IllegalArgumentException(op + ": element counts differ: " + Tensor.describe(a) + " vs " + Tensor.describe(b));
    }

    /** AdamW's operands: grad, m and v the size of param, and a 1-based step. */
    public static void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, int step) {
        sameNumel(param, grad, "adamw");
        sameNumel(param, m, "adamw");
        sameNumel(param, v, "adamw");
        if (step < 1) throw new IllegalArgumentException("adamw: step is 1-based, got " + step);
    }
}
