package org.sparselora.cuda;

import jcuda.driver.CUstream;

/** A JCuda stream handle that exposes its raw {@code CUstream} value, which cuBLAS (bound through
 *  FFM) needs for {@code cublasSetStream_v2}. */
final class CudaStream extends CUstream {
    long address() { return getNativePointer(); }
}
