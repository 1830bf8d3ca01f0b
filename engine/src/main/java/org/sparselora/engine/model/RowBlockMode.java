package org.sparselora.engine.model;

/**
 * Which token groups run their frozen GEMMs on row blocks in place when their layout allows
 * ({@link RowBlocks}): {@code CONTIGUOUS}, the default — only a group that is one contiguous run of
 * rows, e.g. every token sparse or a single sequence, so its GEMMs are plain GEMMs on row views and
 * nothing is gathered —, {@code OFF}, {@code SPARSE} or {@code ALL}. Every mode gives the same bits.
 * Measured on the H200 (8B, 8×512, math10k config, q,k,v,o, 2026-11-29): the gathered path
 * 126.8 ms/step, {@code SPARSE} 131.8, {@code ALL} 133.4 — cuBLAS's strided-batched GEMMs over 8
 * blocks of 384 rows against narrow kept-channel slices run slower than one GEMM over the 3072
 * gathered rows by more than the gathers cost, so several blocks per group are used only when asked for.
 */
public enum RowBlockMode {
    OFF, CONTIGUOUS, SPARSE, ALL;

    /**
     * The mode named by system property {@code sparselora.rowBlocks} ({@code contiguous},
     * {@code off}, {@code sparse} or {@code all}; default contiguous): the benchmarks' knob, which
     * their entry points hand to {@link LlamaModel#setRowBlockMode}. The model reads no property; it
     * starts at {@link #CONTIGUOUS}.
     */
    public static RowBlockMode fromProperty() {
        String v = System.getProperty("sparselora.rowBlocks", "contiguous");
        return switch (v) {
            case "off" -> OFF;
            case "contiguous" -> CONTIGUOUS;
            case "sparse" -> SPARSE;
            case "all" -> ALL;
            default -> throw new IllegalArgumentException("system property sparselora.rowBlocks must be contiguous, off, sparse or all, not '" + v + "'");
        };
    }
}
