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
    void availabilityCheckNeverThrows() {
        Gpu.Availability a = Gpu.check();
        // On a machine without a driver the answer must say why; with one, it must count devices.
        if (a.available()) assertTrue(a.deviceCount() > 0);
        else assertTrue(!a.reason().isBlank(), "an unavailable GPU must come with a reason");
    }
}
