package org.sparselora.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;

/**
 * Runs on any machine (no GPU): every kernel name the Java side may launch ({@link Kernels#NAMES})
 * must be an {@code .entry} of its module's shipped PTX for every architecture, and the PTX must
 * define nothing the catalogue does not know (a kernel nobody can launch is a rename gone wrong).
 * The launch constants the host reads from the PTX ({@link Kernels#constant}) must be there, agree
 * across architectures and fit the device.
 */
class KernelCatalogueTest {

    @Test
    void everyCataloguedKernelIsInItsPtx() {
        List<String> problems = new java.util.ArrayList<>();
        for (String arch : Kernels.ARCHS) {
            for (String module : Kernels.MODULES) {
                Set<String> entries = new HashSet<>(Kernels.entries(Kernels.ptxText(arch, module)));
                assertTrue(!entries.isEmpty(), arch + "/" + module + ".ptx defines no kernel");
                for (Map.Entry<String, String> e : Kernels.NAMES.entrySet())
                    if (e.getValue().equals(module) && !entries.contains(e.getKey()))
                        problems.add(arch + "/" + module + ".ptx lacks " + e.getKey());
                for (String entry : entries)
                    if (!module.equals(Kernels.NAMES.get(entry)))
                        problems.add(arch + "/" + module + ".ptx defines " + entry + ", which Kernels.NAMES does not list under " + module);
            }
        }
        if (!problems.isEmpty()) fail(String.join("\n", problems));
    }

    @Test
    void catalogueNamesOnlyShippedModules() {
        Set<String> modules = new TreeSet<>(Kernels.NAMES.values());
        assertEquals(new TreeSet<>(Kernels.MODULES), modules);
    }

    @Test
    void entryParserReadsPtxDeclarations() {
        String ptx = """
                .visible .entry axpy_f32_bf16(
                \t.param .u64 axpy_f32_bf16_param_0
                )
                .visible .entry attn_softmax(
                .func helper(
                """;
        assertEquals(List.of("axpy_f32_bf16", "attn_softmax"), Kernels.entries(ptx));
    }

    @Test
    void launchConstantsAgreeAcrossArchitectures() {
        for (String module : Kernels.MODULES) {
            Map<String, Integer> first = Kernels.constants(Kernels.ptxText(Kernels.ARCHS.get(0), module));
            for (String arch : Kernels.ARCHS)
                assertEquals(first, Kernels.constants(Kernels.ptxText(arch, module)), arch + "/" + module + ".ptx launch constants");
        }
    }

    /** Every constant the backend's classes read (those read at class initialization among them) is defined and launchable. */
    @Test
    void launchConstantsTheHostReadsAreDefined() {
        for (String d : new String[] {"d32", "d64", "d128"}) {
            for (String kind : new String[] {"flash3_fwd_", "flash3_bwd_"}) {
                int threads = Kernels.constant("attention", kind + d + "_threads"), rows = Kernels.constant("attention", kind + d + "_rows");
                int smem = Kernels.constant("attention", kind + d + "_smem_bytes");
                assertTrue(threads > 0 && threads % 32 == 0 && threads <= 1024, kind + d + " threads " + threads);
                assertTrue(rows > 0, kind + d + " rows " + rows);
                // the most dynamic shared memory a block may opt in to on an H100/H200 (227 KiB), and on an A100 (163 KiB)
                assertTrue(smem > 0 && smem <= 163 * 1024, kind + d + " shared bytes " + smem);
            }
        }
        assertTrue(GpuSparse.SCATTER_MAP_MAX_COLS > 0 && GpuSparse.SCATTER_MAP_MAX_COLS < 65535, "16-bit map positions");
        assertTrue(GpuSparse.JOIN_MAP_MAX_COLS > 0 && GpuSparse.JOIN_MAP_MAX_COLS < 65535, "16-bit map positions");
        assertTrue(GpuSparse.PAD_INDEX_MAX_N > 0);
        assertTrue(GpuPredictor.LOW_RANK_MAX > 0 && GpuPredictor.LR_COLS > 0 && GpuPredictor.LR_ROWS > 0);
        assertTrue(GpuOptimizer.MT_TILE % (4 * GpuOptimizer.MT_THREADS) == 0, "whole float4s per thread in a multi-tensor tile");
        assertTrue(Kernels.constant("attention", "attn_cached_smem_entry_bytes") > 0);
        IllegalStateException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class, () -> Kernels.constant("sparse", "no_such_constant"));
        assertTrue(e.getMessage().contains("no_such_constant"), e.getMessage());
    }

    @Test
    void constantParserReadsPtxDeclarations() {
        String ptx = """
                .const .align 4 .u32 flash3_fwd_d64_smem_bytes = 55296;
                .const .align 4 .b8 table[8] = {0, 16, 0, 0, 0, 1};
                .visible .entry attn_softmax(
                """;
        assertEquals(Map.of("flash3_fwd_d64_smem_bytes", 55296), Kernels.constants(ptx));
    }

    @Test
    void availabilityCheckNeverThrows() {
        Gpu.Availability a = Gpu.check();
        // On a machine without a driver the answer must say why; with one, it must count devices.
        if (a.available()) assertTrue(a.deviceCount() > 0);
        else assertTrue(!a.reason().isBlank(), "an unavailable GPU must come with a reason");
    }
}
