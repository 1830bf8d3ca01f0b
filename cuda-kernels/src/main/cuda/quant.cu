// QLoRA's NF4 frozen weights: dequantization of a whole projection (a layer's weights into the
// scratch the GEMMs read) and of its kept rows or columns (SparseLoRA's slices, straight from the
// codes). Format (engine Nf4): element i's 4-bit code index in bits 4*(i%8) of packed[i/8], one
// fp32 absmax per block of 64 consecutive elements (row-major); value = NF4[code] * absmax.
#include "common.cuh"

// The 16 NormalFloat values (engine Nf4.CODE, from scripts/nf4_reference.py), bit for bit.
__constant__ float NF4_CODE[16] = {
    -1.0f, -0.6961929f, -0.52507305f, -0.3949175f, -0.28444135f, -0.18477343f, -0.09104999f, 0.0f,
    0.07958033f, 0.16093017f, 0.24611229f, 0.33791518f, 0.4407098f, 0.56261694f, 0.7229567f, 1.0f};

__device__ __forceinline__ float nf4At(const unsigned* packed, const float* absmax, long i) {
    unsigned q = (packed[i >> 3] >> ((unsigned) (i & 7) << 2)) & 15u;
    return NF4_CODE[q] * absmax[i >> 6];
}

// out (n) = the whole tensor. Each thread decodes one packed word: 8 consecutive elements.
template <typename TO>
__device__ void nf4DequantImpl(TO* out, const unsigned* packed, const float* absmax, long n) {
    long words = (n + 7) >> 3;
    for (long w = blockIdx.x * (long) blockDim.x + threadIdx.x; w < words; w += (long) gridDim.x * blockDim.x) {
        unsigned word = packed[w];
        float a = absmax[w >> 3];   // 8 words = 64 elements = one block
        long i0 = w << 3;
        #pragma unroll
        for (int j = 0; j < 8; j++) {
            long i = i0 + j;
            if (i < n) st(out, i, NF4_CODE[(word >> (j << 2)) & 15u] * a);
        }
    }
}

// out (k, cols) [r, j] = W[rows[r], j] of the NF4 (R, cols) matrix: blocks stride over kept rows.
template <typename TO>
__device__ void nf4DequantRowsImpl(TO* out, const unsigned* packed, const float* absmax, const int* rows, int k, int cols) {
    for (long r = blockIdx.x; r < k; r += gridDim.x) {
        long base = (long) rows[r] * cols;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) st(out, r * cols + j, nf4At(packed, absmax, base + j));
    }
}

// out (R, k) [r, j] = W[r, cols[j]] of the NF4 (R, C) matrix: blocks stride over rows, threads over kept columns.
template <typename TO>
__device__ void nf4DequantColsImpl(TO* out, const unsigned* packed, const float* absmax, const int* cols, int R, int C, int k) {
    for (long r = blockIdx.x; r < R; r += gridDim.x)
        for (int j = threadIdx.x; j < k; j += blockDim.x) st(out, r * k + j, nf4At(packed, absmax, r * C + cols[j]));
}

#define QUANT(S, T) \
    extern "C" __global__ void nf4_dequant_##S(T* o, const unsigned* p, const float* a, long n) { nf4DequantImpl(o, p, a, n); } \
    extern "C" __global__ void nf4_dequant_rows_##S(T* o, const unsigned* p, const float* a, const int* rows, int k, int cols) { nf4DequantRowsImpl(o, p, a, rows, k, cols); } \
    extern "C" __global__ void nf4_dequant_cols_##S(T* o, const unsigned* p, const float* a, const int* cols, int R, int C, int k) { nf4DequantColsImpl(o, p, a, cols, R, C, k); }
QUANT(f32, float)
QUANT(bf16, bf16)
