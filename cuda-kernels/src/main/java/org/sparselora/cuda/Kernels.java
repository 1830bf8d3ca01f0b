package org.sparselora.cuda;

import static jcuda.driver.JCudaDriver.cuFuncSetAttribute;
import static jcuda.driver.JCudaDriver.cuLaunchKernel;
import static jcuda.driver.JCudaDriver.cuModuleGetFunction;
import static jcuda.driver.JCudaDriver.cuModuleLoadData;
import static jcuda.driver.JCudaDriver.cuModuleUnload;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import jcuda.Pointer;
import jcuda.driver.CUfunction;
import jcuda.driver.CUfunction_attribute;
import jcuda.driver.CUmodule;

/**
 * The kernel catalogue and launcher. {@link #NAMES} lists every kernel entry point the Java side
 * may launch, with the PTX module (resource {@code ptx/<arch>/<module>.ptx}) that defines it; the
 * launcher refuses any other name, and {@code KernelCatalogueTest} (a CPU test) checks that every
 * listed name is a {@code .entry} of its module's PTX for every shipped architecture, so a rename
 * in the CUDA sources cannot slip past a build machine without a GPU.
 */
final class Kernels implements AutoCloseable {
    static final String PTX_ROOT = "/org/sparselora/cuda/ptx/";
    static final List<String> ARCHS = List.of("sm_90", "compute_80");
    static final List<String> MODULES = List.of("elementwise", "layers", "attention", "sparse", "quant");
    /** kernel name -> module */
    static final Map<String, String> NAMES = catalogue();

    private static Map<String, String> catalogue() {
        String[] t = {"f32", "bf16"};
        Map<String, String> m = new LinkedHashMap<>();
        for (String a : t) {
            for (String op : new String[] {"scale", "sumsq", "swiglu", "swiglu_bwd", "randn"}) m.put(op + "_" + a, "elementwise");
            m.put("rope_" + a, "layers");
            m.put("rope_qk_" + a, "layers");
            m.put("rmsnorm_wgrad_" + a, "layers");
            m.put("embedding_bwd_" + a, "layers");
            for (String op : new String[] {"to_heads", "from_heads", "attn_rowdot", "attn_cached", "attn_cached_batch"}) m.put(op + "_" + a, "attention");
            m.put("colsumsq_" + a, "sparse");
            m.put("adamw_" + a, "sparse");
            for (String b : t) {
                for (String op : new String[] {"copy", "axpy", "dropout"}) m.put(op + "_" + a + "_" + b, "elementwise");
                for (String c : t) m.put("mul_" + a + "_" + b + "_" + c, "elementwise");
                for (String op : new String[] {"embedding", "rmsnorm", "add_rmsnorm", "add_rmsnorm_to", "rmsnorm_bwd", "cross_entropy"})
                    m.put(op + "_" + a + "_" + b, "layers");
                for (String op : new String[] {"gather_rows", "scatter_rows", "gather_cols", "scatter_cols", "gather_rows_cols", "scatter_rows_cols", "seq_mean"})
                    m.put(op + "_" + a + "_" + b, "sparse");
            }
        }
        for (String a : t)
            for (String op : new String[] {"nf4_dequant", "nf4_dequant_rows", "nf4_dequant_cols"}) m.put(op + "_" + a, "quant");
        m.put("attn_softmax", "attention");
        for (String w : new String[] {"w8", "w16", "w32"}) m.put("attn_softmax_" + w, "attention");
        for (String d : new String[] {"d32", "d64", "d128"})
            for (String op : new String[] {"flash3_fwd_", "flash3_bwd_"}) m.put(op + d, "attention");
        m.put("attn_softmax_bwd", "attention");
        m.put("attn_dq_convert", "attention");
        m.put("attn_bwd_prep", "attention");
        m.put("colnorm_finish", "sparse");
        m.put("topk_f32", "sparse");
        m.put("lowrank_norm_finish", "sparse");
        for (String a : t) {
            // lowrank_colsumsq: the row-sum form of the low-rank norms, a slower variant the backend no
            // longer runs; kept for the tests' and benches' comparison (DevKernels in the test sources)
            m.put("lowrank_colsumsq_" + a, "sparse");
            m.put("lowrank_gram_norms_" + a, "sparse");
            m.put("lowrank_swiglu_colsumsq_" + a, "sparse");
        }
        m.put("adamw_multi", "sparse");
        m.put("adamw_multi_dev", "sparse");
        for (String a : t) m.put("mask_padding_rows_" + a, "sparse");
        m.put("sumsq_multi", "sparse");
        m.put("kv_channel_scores", "sparse");
        m.put("expand_group_channels", "sparse");
        // the predictor's fast paths (issue 5)
        m.put("topk_reg4_f32", "sparse");
        m.put("topk_reg16_f32", "sparse");
        for (String a : t) {
            m.put("lowrank_gram_part_" + a, "sparse");
            m.put("lowrank_gram_part_norms_" + a, "sparse");
        }
        m.put("expand_group_channels_rows", "sparse");
        for (String sfx : new String[] {"bf16_bf16", "f32_bf16", "f32_f32"}) m.put("skinny_shared_a_" + sfx, "sparse");
        for (String a : t) for (String r : new String[] {"r8_", "r32_"}) m.put("lowrank_swiglu_small_" + r + a, "sparse");

        m.put("pad_index_set", "sparse");
        for (String a : t) {
            m.put("fill_cols_" + a, "sparse");
            m.put("scatter_add_rows_cols_" + a, "sparse");
            m.put("swiglu_join_" + a, "elementwise");
            m.put("swiglu_bwd_join_" + a, "elementwise");
        }
        return Collections.unmodifiableMap(m);
    }

    /** The PTX text of {@code module} for {@code arch}, as shipped in the jar. */
    static String ptxText(String arch, String module) {
        String path = PTX_ROOT + arch + "/" + module + ".ptx";
        try (InputStream in = Kernels.class.getResourceAsStream(path)) {
            if (in == null) throw new IllegalStateException("PTX resource " + path + " missing from the classpath (run cuda-kernels/build-ptx.sh)");
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new IllegalStateException("cannot read PTX resource " + path, e);
        }
    }

    /**
     * Dynamic shared memory a launch may use without opting in (CUDA's rule; above it the launcher
     * sets the kernel's maximum first).
     */
    static final int DEFAULT_DYNAMIC_SHARED_BYTES = 48 * 1024;

    private static final java.util.regex.Pattern CONSTANT = java.util.regex.Pattern.compile("^\\.const \\.align 4 \\.u32 (\\w+) = (\\d+);$");
    private static final Map<String, Map<String, Integer>> CONSTANTS = new java.util.concurrent.ConcurrentHashMap<>();

    /**
     * A launch constant of {@code module} (shared-memory bytes, threads, tile sizes): the CUDA
     * sources declare each as an {@code extern "C" __constant__ int}, whose name and value the PTX
     * states verbatim, so the host reads them there rather than keeping copies. The values do not
     * depend on the architecture ({@code KernelCatalogueTest} checks every shipped PTX agrees); the
     * first architecture's PTX is read, once per module, without a GPU.
     */
    static int constant(String module, String name) {
        Integer v = CONSTANTS.computeIfAbsent(module, m -> constants(ptxText(ARCHS.get(0), m))).get(name);
        if (v == null) throw new IllegalStateException("launch constant '" + name + "' is not in PTX module " + module + " (run cuda-kernels/build-ptx.sh)");
        return v;
    }

    /** The {@code extern "C" __constant__ int} values a PTX text defines, by name. */
    static Map<String, Integer> constants(String ptx) {
        Map<String, Integer> out = new LinkedHashMap<>();
        for (String line : ptx.split("\n")) {
            var m = CONSTANT.matcher(line.strip());
            if (m.matches()) out.put(m.group(1), Integer.parseInt(m.group(2)));
        }
        return Collections.unmodifiableMap(out);
    }

    /** The {@code .entry} names a PTX text defines. */
    static List<String> entries(String ptx) {
        List<String> out = new ArrayList<>();
        for (String line : ptx.split("\n")) {
            String s = line.strip();
            int i = s.indexOf(".entry ");
            if (i < 0) continue;
            String rest = s.substring(i + 7).strip();
            int end = 0;
            while (end < rest.length() && (Character.isJavaIdentifierPart(rest.charAt(end)))) end++;
            out.add(rest.substring(0, end));
        }
        return out;
    }

    private final String arch;
    private final Map<String, CUmodule> modules = new HashMap<>();
    private final Map<String, CUfunction> functions = new HashMap<>();
    private final Map<String, Integer> dynamicSharedSet = new HashMap<>();

    /** @param computeMajor the device's compute capability major: ≥ 9 loads sm_90 PTX, 8 the portable compute_80 PTX */
    Kernels(int computeMajor) {
        if (computeMajor < 8) throw new IllegalStateException("GPU compute capability " + computeMajor + ".x is too old: the kernels need 8.0 or newer (bf16)");
        this.arch = computeMajor >= 9 ? "sm_90" : "compute_80";
    }

    String arch() { return arch; }

    CUfunction function(String name) {
        CUfunction f = functions.get(name);
        if (f != null) return f;
        String module = NAMES.get(name);
        if (module == null) throw new IllegalStateException("kernel '" + name + "' is not in the catalogue (Kernels.NAMES)");
        CUmodule mod = modules.computeIfAbsent(module, mname -> {
            byte[] text = ptxText(arch, mname).getBytes(StandardCharsets.UTF_8);
            byte[] z = new byte[text.length + 1];  // cuModuleLoadData wants a NUL-terminated image
            System.arraycopy(text, 0, z, 0, text.length);
            CUmodule mm = new CUmodule();
            cuModuleLoadData(mm, z);
            return mm;
        });
        f = new CUfunction();
        cuModuleGetFunction(f, mod, name);
        functions.put(name, f);
        return f;
    }

    private final Map<String, Integer> residentPerSm = new HashMap<>();

    /** How many blocks of {@code name} (block size, dynamic shared bytes) one SM holds at once (the occupancy API; cached). */
    int residentBlocksPerSm(String name, int blockSize, int sharedBytes) {
        return residentPerSm.computeIfAbsent(name + "/" + blockSize + "/" + sharedBytes, key -> {
            int[] n = {0};
            jcuda.driver.JCudaDriver.cuOccupancyMaxActiveBlocksPerMultiprocessor(n, function(name), blockSize, sharedBytes);
            return Math.max(1, n[0]);
        });
    }

    /** Launches {@code name} on {@code stream} with the given kernel arguments (see {@link Args}). */
    void launch(String name, int gx, int gy, int bx, int sharedBytes, CudaStream stream, Args args) {
        launch(name, gx, gy, 1, bx, sharedBytes, stream, args);
    }

    void launch(String name, int gx, int gy, int gz, int bx, int sharedBytes, CudaStream stream, Args args) {
        CUfunction f = function(name);
        if (sharedBytes > DEFAULT_DYNAMIC_SHARED_BYTES && dynamicSharedSet.getOrDefault(name, 0) < sharedBytes) {
            // above the default a kernel must opt in to its dynamic shared memory size
            cuFuncSetAttribute(f, CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, sharedBytes);
            dynamicSharedSet.put(name, sharedBytes);
        }
        try {
            cuLaunchKernel(f, gx, gy, gz, bx, 1, 1, sharedBytes, stream, args.pointer(), null);
        } catch (jcuda.CudaException e) {
            // A fault inside an earlier kernel also surfaces here (launches are asynchronous).
            throw new IllegalStateException("launch of kernel " + name + " (grid " + gx + "×" + gy + "×" + gz + ", block " + bx
                    + ", " + sharedBytes + " B shared) failed: " + e.getMessage(), e);
        }
    }

    @Override
    public void close() {
        for (CUmodule m : modules.values()) cuModuleUnload(m);
        modules.clear();
        functions.clear();
    }

    /** Kernel arguments in declaration order: device addresses and 64-bit ints as {@code long}, etc. */
    static final class Args {
        private final List<Pointer> ps = new ArrayList<>(12);

        Args ptr(long address) { ps.add(Pointer.to(new long[] {address})); return this; }
        Args i(int v) { ps.add(Pointer.to(new int[] {v})); return this; }
        Args l(long v) { ps.add(Pointer.to(new long[] {v})); return this; }
        Args f(float v) { ps.add(Pointer.to(new float[] {v})); return this; }

        Pointer pointer() { return Pointer.to(ps.toArray(new Pointer[0])); }
    }
}
