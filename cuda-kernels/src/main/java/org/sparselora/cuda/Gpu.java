package org.sparselora.cuda;

import static jcuda.driver.JCudaDriver.cuDeviceGetCount;
import static jcuda.driver.JCudaDriver.cuInit;

import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import jcuda.driver.JCudaDriver;

/**
 * Whether this process can use a CUDA GPU, and if not, why: the JCuda native library, a driver, a
 * device and cuBLAS (13, or 12) must all be there. Tests and the CLI ask this before making a
 * {@link GpuBackend}; the answer is computed once.
 */
public final class Gpu {
    /** @param deviceCount devices visible (0 when unavailable) */
    public record Availability(boolean available, int deviceCount, String reason) {}

    private static volatile Availability cached;

    private Gpu() {}

    public static boolean available() { return check().available(); }

    /** Why the GPU is unavailable ("" when it is available). */
    public static String reason() { return check().reason(); }

    public static int deviceCount() { return check().deviceCount(); }

    public static synchronized Availability check() {
        if (cached != null) return cached;
        Availability a;
        try {
            JCudaDriver.setExceptionsEnabled(true);
            cuInit(0);
            int[] n = {0};
            cuDeviceGetCount(n);
            if (n[0] == 0) {
                a = new Availability(false, 0, "the CUDA driver reports no device");
            } else {
                String cublas = null;
                for (String name : new String[] {"libcublas.so.13", "libcublas.so.12"}) {
                    try (Arena arena = Arena.ofConfined()) {
                        SymbolLookup.libraryLookup(name, arena);
                        cublas = name;
                        break;
                    } catch (IllegalArgumentException e) {
                        // try the next
                    }
                }
                a = cublas == null
                        ? new Availability(false, n[0], "no cuBLAS library (libcublas.so.13 or libcublas.so.12) in the loader path")
                        : new Availability(true, n[0], "");
            }
        } catch (UnsatisfiedLinkError | NoClassDefFoundError e) {
            a = new Availability(false, 0, "JCuda native driver library could not load: " + e.getMessage());
        } catch (RuntimeException e) {
            a = new Availability(false, 0, "CUDA driver unusable: " + e.getMessage());
        }
        cached = a;
        return a;
    }
}
