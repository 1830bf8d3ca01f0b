// SparseLoRA's device-side selection and slicing: row/column gather and scatter (weight slices and
// token split/join, and the fused row+column forms that gather or re-join a sparse token group's
// kept channels in one pass), per-column L2 norms (two deterministic passes, no atomics, so the
// same input always gives the same bits and the same selection), per-sequence means over non-padding tokens,
// and top-k on the device (radix select of the k-th largest key + an index-ordered scan, so ties go
// to the lower index and the indices come out ascending with no host round trip). The SVD predictor's
// per-layer kernels (issue 5) sit at the end: the register-resident top-k, the chunked Gram matrices
// of its low-rank norms, the two-row channel expansion, x̄·P for a few rows, the swiglu scores over few rows.
#include "common.cuh"
#include <cuda_fp16.h>

// Row gathers and scatters move whole rows: with vec (C % 8 == 0, 16-byte aligned) the grid strides
// over the k·C/8 16-byte units of the rows and each thread issues ROW_UNROLL loads before its stores,
// so many loads are in flight (one block per row with two units per thread left the copy at a third of
// the memory bandwidth). Without vec, one block per row, element by element.
#define ROW_UNROLL 4

// out[i,:] = src[idx[i],:]; an index outside [0,R) gives a NaN row.
template <typename TO, typename TS>
__device__ void gatherRowsImpl(TO* __restrict__ out, const TS* __restrict__ src, const int* __restrict__ idx, int R, int C, int k, int vec) {
    const float nan = __int_as_float(0x7fc00000);
    if (vec) {
        int per = C / 8;
        long units = (long)k * per, stride = (long)gridDim.x * blockDim.x;
        for (long u0 = (long)blockIdx.x * blockDim.x + threadIdx.x; u0 < units; u0 += ROW_UNROLL * stride) {
            float v[ROW_UNROLL][8];
#pragma unroll
            for (int q = 0; q < ROW_UNROLL; q++) {
                long u = u0 + q * stride;
                if (u >= units) break;
                long i = u / per;
                int g = (int)(u - i * per), r = idx[i];
                if (r >= 0 && r < R) ld8(src, (long)r * C + g * 8, v[q]);
                else for (int j = 0; j < 8; j++) v[q][j] = nan;
            }
#pragma unroll
            for (int q = 0; q < ROW_UNROLL; q++) {
                long u = u0 + q * stride;
                if (u >= units) break;
                st8(out, u * 8, v[q]);                  // unit u of the compact output starts at element 8u
            }
        }
        return;
    }
    long i = blockIdx.x;
    int r = idx[i];
    TO* o = out + i * (long)C;
    if (r < 0 || r >= R) { for (int c = threadIdx.x; c < C; c += blockDim.x) st(o, c, nan); return; }
    const TS* s = src + (long)r * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) st(o, c, ld(s, c));
}

// out[idx[i],:] (+)= src[i,:]; indices are distinct (an index set); one outside [0,R) is skipped.
template <typename TO, typename TS>
__device__ void scatterRowsImpl(TO* __restrict__ out, const TS* __restrict__ src, const int* __restrict__ idx, int R, int C, int k, int acc, int vec) {
    if (vec) {
        int per = C / 8;
        long units = (long)k * per, stride = (long)gridDim.x * blockDim.x;
        for (long u0 = (long)blockIdx.x * blockDim.x + threadIdx.x; u0 < units; u0 += ROW_UNROLL * stride) {
            float v[ROW_UNROLL][8];
            long dst[ROW_UNROLL];                       // -1: nothing to store for this unit
#pragma unroll
            for (int q = 0; q < ROW_UNROLL; q++) dst[q] = -1;
#pragma unroll
            for (int q = 0; q < ROW_UNROLL; q++) {
                long u = u0 + q * stride;
                if (u >= units) break;
                long i = u / per;
                int g = (int)(u - i * per), r = idx[i];
                if (r < 0 || r >= R) continue;
                dst[q] = (long)r * C + g * 8;
                ld8(src, u * 8, v[q]);
                if (acc) {
                    float w[8];
                    ld8(out, dst[q], w);
#pragma unroll
                    for (int j = 0; j < 8; j++) v[q][j] += w[j];
                }
            }
#pragma unroll
            for (int q = 0; q < ROW_UNROLL; q++)
                if (dst[q] >= 0) st8(out, dst[q], v[q]);
        }
        return;
    }
    long i = blockIdx.x;
    int r = idx[i];
    if (r < 0 || r >= R) return;
    TO* o = out + (long)r * C;
    const TS* s = src + i * (long)C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) st(o, c, acc ? ld(o, c) + ld(s, c) : ld(s, c));
}

// out (R,k) [r,i] = src (R,C) [r, idx[i]].
template <typename TO, typename TS>
__device__ void gatherColsImpl(TO* out, const TS* src, const int* idx, int R, int C, int k) {
    // blocks stride over rows, threads over the kept columns: no per-element 64-bit division
    for (long r = blockIdx.x; r < R; r += gridDim.x)
        for (int i = threadIdx.x; i < k; i += blockDim.x) {
            int c = idx[i];
            st(out, r * k + i, c >= 0 && c < C ? ld(src, r * C + c) : __int_as_float(0x7fc00000));
        }
}

// out (R,C) [r, idx[i]] (+)= src (R,k) [r,i].
template <typename TO, typename TS>
__device__ void scatterColsImpl(TO* out, const TS* src, const int* idx, int R, int C, int k, int acc) {
    for (long r = blockIdx.x; r < R; r += gridDim.x)
        for (int i = threadIdx.x; i < k; i += blockDim.x) {
            int c = idx[i];
            if (c < 0 || c >= C) continue;
            long o = r * C + c, e = r * k + i;
            st(out, o, acc ? ld(out, o) + ld(src, e) : ld(src, e));
        }
}

// out (n,k) [i,j] = src (R,C) [rowIdx[i], colIdx[j]]: the sparse tokens' kept channels in one pass.
// An index outside its range gives NaN. vec: k % 8 == 0 and out 16-byte aligned, so each thread
// gathers 8 columns (the kept columns are near each other, so the reads share cache lines) and
// writes them with one 16-byte store.
template <typename TO, typename TS>
__device__ void gatherRowsColsImpl(TO* out, const TS* src, const int* rowIdx, const int* colIdx,
                                   int n, int R, int C, int k, int vec) {
    int per = vec ? k / 8 : k;
    const float nan = __int_as_float(0x7fc00000);
    GRID_LOOP(e, (long)n * per) {
        long i = e / per;
        int j0 = (int)(e - i * per) * (vec ? 8 : 1);
        int r = rowIdx[i];
        bool rowOk = r >= 0 && r < R;
        const TS* s = src + (long)(rowOk ? r : 0) * C;
        if (vec) {
            float v[8];
#pragma unroll
            for (int j = 0; j < 8; j++) { int c = colIdx[j0 + j]; v[j] = rowOk && c >= 0 && c < C ? ld(s, c) : nan; }
            st8(out, i * k + j0, v);
        } else {
            int c = colIdx[j0];
            st(out, i * k + j0, rowOk && c >= 0 && c < C ? ld(s, c) : nan);
        }
    }
}

// Row rowIdx[i] of out (R,C) becomes src (n,k) row i placed at the columns colIdx and 0 elsewhere,
// written once (zeros and values in the same pass); rows not named are left alone. Each block takes
// rowsPerBlock consecutive entries of rowIdx. useMap: the block first builds, in shared memory, the
// inverse of colIdx (pos[c] = 1 + the position of column c in colIdx, 0 = pruned; C 16-bit entries),
// then every output element is one shared read and the row goes out in 16-byte stores (vec). Without
// the map (C or k too large for it) the block zeroes each row and then scatters into it.
// Indices must be distinct (an index set); an out-of-range row or column is skipped.
extern "C" __constant__ int scatter_rows_cols_smem_entry_bytes = sizeof(unsigned short);  // per column of the map (host: Kernels.constant)
template <typename TO, typename TS>
__device__ void scatterRowsColsImpl(TO* out, const TS* src, const int* rowIdx, const int* colIdx,
                                    int n, int R, int C, int k, int rowsPerBlock, int useMap, int vec) {
    extern __shared__ __align__(16) unsigned char smemRaw[];
    unsigned short* pos = reinterpret_cast<unsigned short*>(smemRaw);
    if (useMap) {
        for (int c = threadIdx.x; c < C; c += blockDim.x) pos[c] = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < k; j += blockDim.x) { int c = colIdx[j]; if (c >= 0 && c < C) pos[c] = (unsigned short)(j + 1); }
        __syncthreads();
    }
    int i0 = blockIdx.x * rowsPerBlock, i1 = min(n, i0 + rowsPerBlock);
    for (int i = i0; i < i1; i++) {
        int r = rowIdx[i];
        if (r < 0 || r >= R) continue;           // uniform across the block: no barrier is skipped by part of it
        TO* o = out + (long)r * C;
        const TS* s = src + (long)i * k;
        if (useMap) {
            if (vec) {
                for (int g = threadIdx.x; g < C / 8; g += blockDim.x) {
                    uint4 pk = *reinterpret_cast<const uint4*>(pos + g * 8);   // 8 positions in one 16-byte shared load
                    const unsigned short* p8 = reinterpret_cast<const unsigned short*>(&pk);
                    float v[8];
#pragma unroll
                    for (int j = 0; j < 8; j++) { int p = p8[j]; v[j] = p ? ld(s, p - 1) : 0.f; }
                    st8(o, g * 8, v);
                }
            } else {
                for (int c = threadIdx.x; c < C; c += blockDim.x) { int p = pos[c]; st(o, c, p ? ld(s, p - 1) : 0.f); }
            }
        } else {
            for (int c = threadIdx.x; c < C; c += blockDim.x) st(o, c, 0.f);
            __syncthreads();
            for (int j = threadIdx.x; j < k; j += blockDim.x) { int c = colIdx[j]; if (c >= 0 && c < C) st(o, c, ld(s, j)); }
            __syncthreads();
        }
    }
}

// Pass 1 of columnNorms: part[chunk, c] = Σ_{r in chunk} x[r,c]², chunk = blockIdx.y (rows
// [chunk·rows, (chunk+1)·rows)). Threads run along columns, so loads coalesce.
template <typename T>
__device__ void colSumsqImpl(float* part, const T* x, int R, int C, int rowsPerChunk) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int r0 = blockIdx.y * rowsPerChunk, r1 = min(R, r0 + rowsPerChunk);
    float s = 0.f;
    for (int r = r0; r < r1; r++) { float v = ld(x, (long)r * C + c); s = fmaf(v, v, s); }
    part[(long)blockIdx.y * C + c] = s;
}

// Pass 2: out[c] = sqrt(Σ_chunks part[chunk, c]), summed in a fixed order.
extern "C" __global__ void colnorm_finish(float* out, const float* part, int chunks, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.f;
    for (int j = 0; j < chunks; j++) s += part[(long)j * C + c];
    out[c] = sqrtf(s);
}

// out[b,c] = mean_{t in [keyStart[b], T)} x[b·T+t, c]; 0 when a sequence is all padding.
// A block of 32·SEQ_MEAN_SPLIT threads per (column tile, sequence): a lane owns 8 adjacent columns (one 16-byte
// load per row when vec) or 1, the SEQ_MEAN_SPLIT rows of threads stride over the sequence's tokens,
// and the partial sums are added in a fixed order (same input, same bits). Many independent loads
// per thread instead of the T dependent ones of one thread per column.
#define SEQ_MEAN_SPLIT 16
template <typename TO, typename TI>
__device__ void seqMeanImpl(TO* out, const TI* x, const int* keyStart, int B, int T, int C, int vec) {
    __shared__ float part[SEQ_MEAN_SPLIT][32 * 8];
    int b = blockIdx.y, lane = threadIdx.x & 31, ty = threadIdx.x >> 5;   // blockDim.x = 32·SEQ_MEAN_SPLIT
    int width = vec ? 8 : 1;
    int c0 = (blockIdx.x * 32 + lane) * width;
    int ks = max(0, keyStart[b]);
    float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (c0 < C) {
        const TI* xb = x + (long)b * T * C + c0;
#pragma unroll 4
        for (int t = ks + ty; t < T; t += SEQ_MEAN_SPLIT) {
            if (vec) {
                float v[8];
                ld8(xb, (long)t * C, v);
#pragma unroll
                for (int j = 0; j < 8; j++) s[j] += v[j];
            } else {
                s[0] += ld(xb, (long)t * C);
            }
        }
    }
    for (int j = 0; j < width; j++) part[ty][lane * width + j] = s[j];
    __syncthreads();
    if (ty == 0 && c0 < C) {
        for (int j = 0; j < width; j++) {
            float tot = 0.f;
            for (int y = 0; y < SEQ_MEAN_SPLIT; y++) tot += part[y][lane * width + j];
            st(out, (long)b * C + c0 + j, ks < T ? tot / (T - ks) : 0.f);
        }
    }
}

// The SVD predictor's scores without its (n, M) estimates: column L2 norms of t·Q, where t (n, r) is
// x·P (one cuBLAS GEMM per factor) and Q (r, M). Up to 3 segments (q̂, k̂, v̂ of one layer) share one
// launch: the output columns are the segments' columns one after another, segment s has its own
// t_s, Q_s and output. grid.x tiles the columns (LR_COLS per block, one per thread, its Q column in
// registers), grid.y chunks the rows (LR_ROWS per chunk, t staged in shared memory as fp32); each
// thread writes its chunk's Σ (t·Q)² to part[chunk, column], or the square root straight to the
// output when there is one chunk. lowrank_norm_finish adds the chunks in a fixed order.
#define LR_COLS 256
#define LR_ROWS 64
#define LR_MAXR 32
// Launch constants the host reads from this module's PTX (Kernels.constant): each is a __constant__
// int with C linkage, so its name and value appear verbatim in the PTX text.
extern "C" __constant__ int lowrank_cols = LR_COLS;
extern "C" __constant__ int lowrank_rows = LR_ROWS;
extern "C" __constant__ int lowrank_max_rank = LR_MAXR;
struct LowRankSegs {
    const void* t[3]; const void* q[3]; float* out[3];
    int m[3];        // columns per segment
    int nseg;
};

// Column c of segment sg's Q (r, m_sg) into qc[0, LR_MAXR) as fp32, zero past r (the unrolled
// loops read every slot).
template <typename T>
__device__ __forceinline__ void lrQColumn(const LowRankSegs& g, int sg, const T* q, int c, int r, float* qc) {
#pragma unroll
    for (int j = 0; j < LR_MAXR; j++) qc[j] = j < r ? ld(q, (long)j * g.m[sg] + c) : 0.f;
}

template <typename T>
__device__ __forceinline__ int lrSegment(const LowRankSegs& g, int col, int* c) {
    int s = 0;
    *c = col;
    while (s < g.nseg - 1 && *c >= g.m[s]) { *c -= g.m[s]; s++; }
    return s;
}

template <typename T>
__device__ void lowRankColSumsqImpl(LowRankSegs g, float* part, int n, int r, int mTotal) {
    __shared__ float ts[3][LR_ROWS][LR_MAXR];
    int col = blockIdx.x * LR_COLS + threadIdx.x;
    int r0 = blockIdx.y * LR_ROWS, rows = min(LR_ROWS, n - r0);
    // stage the chunk's rows of every segment's t (the block's columns may span segments)
    for (int s = 0; s < g.nseg; s++) {
        const T* t = (const T*)g.t[s];
        for (int e = threadIdx.x; e < rows * r; e += blockDim.x) ts[s][e / r][e % r] = ld(t, (long)(r0 + e / r) * r + e % r);
    }
    __syncthreads();
    if (col >= mTotal) return;
    int c;
    int sg = lrSegment<T>(g, col, &c);
    const T* q = (const T*)g.q[sg];
    float qc[LR_MAXR];
    lrQColumn<T>(g, sg, q, c, r, qc);
    float acc = 0.f;
    for (int i = 0; i < rows; i++) {
        float e = 0.f;
#pragma unroll
        for (int j = 0; j < LR_MAXR; j++) if (j < r) e = fmaf(ts[sg][i][j], qc[j], e);
        acc = fmaf(e, e, acc);
    }
    if (gridDim.y == 1) g.out[sg][c] = sqrtf(acc);
    else part[(long)blockIdx.y * mTotal + col] = acc;
}

// The MLP score's per-column work, shared by lowrank_swiglu_colsumsq and lowrank_swiglu_small:
// column col of Q_g and Q_u (r, m) into cg / cu as fp32 (zero past r: the unrolled loops read every
// slot), then Σ over the staged rows i < rows of (silu(t_g[i]·cg) · (t_u[i]·cu))² (ts[0]: t_g, ts[1]: t_u).
template <typename T, int RMAX>
__device__ __forceinline__ void lrSwigluColumns(const T* qg, const T* qu, int m, int col, int r, float* cg, float* cu) {
#pragma unroll
    for (int j = 0; j < RMAX; j++) {
        cg[j] = j < r ? ld(qg, (long)j * m + col) : 0.f;
        cu[j] = j < r ? ld(qu, (long)j * m + col) : 0.f;
    }
}
template <int RMAX>
__device__ __forceinline__ float lrSwigluSumsq(const float (&ts)[2][LR_ROWS][RMAX], int rows, int r, const float* cg, const float* cu) {
    float acc = 0.f;
    for (int i = 0; i < rows; i++) {
        float a = 0.f, b = 0.f;
#pragma unroll
        for (int j = 0; j < RMAX; j++) if (j < r) { a = fmaf(ts[0][i][j], cg[j], a); b = fmaf(ts[1][i][j], cu[j], b); }
        float h = a / (1.f + __expf(-a)) * b;
        acc = fmaf(h, h, acc);
    }
    return acc;
}

// The MLP form: segment 0 is the gate estimate, segment 1 the up estimate (same M); the score of
// column c is ‖silu(t_g·Q_g[:,c]) ⊙ (t_u·Q_u[:,c])‖ over the rows (the B sequence means), out = g.out[0].
template <typename T>
__device__ void lowRankSwigluColSumsqImpl(LowRankSegs g, float* part, int n, int r) {
    __shared__ float ts[2][LR_ROWS][LR_MAXR];
    int m = g.m[0];
    int col = blockIdx.x * LR_COLS + threadIdx.x;
    int r0 = blockIdx.y * LR_ROWS, rows = min(LR_ROWS, n - r0);
    for (int s = 0; s < 2; s++) {
        const T* t = (const T*)g.t[s];
        for (int e = threadIdx.x; e < rows * r; e += blockDim.x) ts[s][e / r][e % r] = ld(t, (long)(r0 + e / r) * r + e % r);
    }
    __syncthreads();
    if (col >= m) return;
    const T* qg = (const T*)g.q[0];
    const T* qu = (const T*)g.q[1];
    float cg[LR_MAXR], cu[LR_MAXR];
    lrSwigluColumns<T, LR_MAXR>(qg, qu, m, col, r, cg, cu);
    float acc = lrSwigluSumsq<LR_MAXR>(ts, rows, r, cg, cu);
    if (gridDim.y == 1) g.out[0][col] = sqrtf(acc);
    else part[(long)blockIdx.y * m + col] = acc;
}

// Kernel parameters are flat (three t, three Q, three outputs, three widths, the segment count);
// unused segments pass null and 0.
#define LR_PARAMS const void* t0, const void* t1, const void* t2, const void* q0, const void* q1, const void* q2, \
                  float* o0, float* o1, float* o2, int m0, int m1, int m2, int nseg
__device__ __forceinline__ LowRankSegs lrSegs(const void* t0, const void* t1, const void* t2, const void* q0, const void* q1,
                                              const void* q2, float* o0, float* o1, float* o2, int m0, int m1, int m2, int nseg) {
    LowRankSegs g;
    g.t[0] = t0; g.t[1] = t1; g.t[2] = t2; g.q[0] = q0; g.q[1] = q1; g.q[2] = q2;
    g.out[0] = o0; g.out[1] = o1; g.out[2] = o2; g.m[0] = m0; g.m[1] = m1; g.m[2] = m2; g.nseg = nseg;
    return g;
}
#define LR_ARGS t0, t1, t2, q0, q1, q2, o0, o1, o2, m0, m1, m2, nseg

// out_s[c] = sqrt(Σ_chunks part[chunk, col]) in chunk order, col running over every segment's columns.
extern "C" __global__ void lowrank_norm_finish(LR_PARAMS, const float* part, int chunks, int mTotal) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= mTotal) return;
    LowRankSegs g = lrSegs(LR_ARGS);
    float s = 0.f;
    for (int j = 0; j < chunks; j++) s += part[(long)j * mTotal + col];
    int c;
    int sg = lrSegment<float>(g, col, &c);
    g.out[sg][c] = sqrtf(s);
}

// Column `col` (over every segment's columns) of the Gram form: out_s[c] = sqrt(max(q_cᵀ·G_s·q_c, 0)),
// G_s = gs[s·r², (s+1)·r²) row-major. Shared by lowrank_gram_norms and lowrank_gram_part_norms.
template <typename T>
__device__ __forceinline__ void lrGramColumnNorm(const LowRankSegs& g, const float* gs, int r, int col) {
    int c;
    int sg = lrSegment<T>(g, col, &c);
    const T* q = (const T*)g.q[sg];
    const float* gm = gs + sg * r * r;
    float qc[LR_MAXR];
    lrQColumn<T>(g, sg, q, c, r, qc);
    float s = 0.f;
    for (int a = 0; a < r; a++) {
        float acc = 0.f;
        for (int b = 0; b < r; b++) acc = fmaf(gm[a * r + b], qc[b], acc);
        s = fmaf(qc[a], acc, s);
    }
    g.out[sg][c] = sqrtf(fmaxf(s, 0.f));
}

// The same norms from each segment's Gram matrix G_s = t_sᵀ·t_s (r, r) fp32, made by one small cuBLAS
// GEMM per segment: ‖t·q_c‖² = q_cᵀ·G·q_c, so a column costs r² operations instead of n·r (the t
// pointers of the segments are unused). One thread per output column; G of every segment in shared memory.
template <typename T>
__device__ void lowRankGramNormsImpl(LowRankSegs g, const float* G, int r, int mTotal) {
    __shared__ float gs[3 * LR_MAXR * LR_MAXR];
    for (int e = threadIdx.x; e < g.nseg * r * r; e += blockDim.x) gs[e] = G[e];
    __syncthreads();
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= mTotal) return;
    lrGramColumnNorm<T>(g, gs, r, col);
}
extern "C" __global__ void lowrank_gram_norms_f32(LR_PARAMS, const float* G, int r, int mTotal) { lowRankGramNormsImpl<float>(lrSegs(LR_ARGS), G, r, mTotal); }
extern "C" __global__ void lowrank_gram_norms_bf16(LR_PARAMS, const float* G, int r, int mTotal) { lowRankGramNormsImpl<bf16>(lrSegs(LR_ARGS), G, r, mTotal); }

extern "C" __global__ void lowrank_colsumsq_f32(LR_PARAMS, float* part, int n, int r, int mTotal) { lowRankColSumsqImpl<float>(lrSegs(LR_ARGS), part, n, r, mTotal); }
extern "C" __global__ void lowrank_colsumsq_bf16(LR_PARAMS, float* part, int n, int r, int mTotal) { lowRankColSumsqImpl<bf16>(lrSegs(LR_ARGS), part, n, r, mTotal); }
extern "C" __global__ void lowrank_swiglu_colsumsq_f32(LR_PARAMS, float* part, int n, int r) { lowRankSwigluColSumsqImpl<float>(lrSegs(LR_ARGS), part, n, r); }
extern "C" __global__ void lowrank_swiglu_colsumsq_bf16(LR_PARAMS, float* part, int n, int r) { lowRankSwigluColSumsqImpl<bf16>(lrSegs(LR_ARGS), part, n, r); }

// Order-preserving key of a float (larger float -> larger unsigned); NaN ranks lowest.
__device__ __forceinline__ unsigned int orderKey(float f) {
    if (f != f) return 0u;
    unsigned int u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Exclusive prefix sum of v over the block (blockDim a multiple of 32); *total gets the block sum.
__device__ int blockExclusiveScan(int v, int* total) {
    __shared__ int warpTotals[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) { int y = __shfl_up_sync(0xffffffffu, x, o); if (lane >= o) x += y; }
    __syncthreads();
    if (lane == 31) warpTotals[w] = x;
    __syncthreads();
    if (w == 0) {
        int t = lane < nw ? warpTotals[lane] : 0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) { int y = __shfl_up_sync(0xffffffffu, t, o); if (lane >= o) t += y; }
        warpTotals[lane] = t;  // inclusive prefix of warp totals
    }
    __syncthreads();
    int before = w > 0 ? warpTotals[w - 1] : 0;
    *total = warpTotals[nw - 1];
    return before + x - v;
}

// idx (k) <- indices of the k largest scores (n), ascending; ties -> lower index. One block per
// problem: block b takes row b of idx (rows, k) and scores (rows, n), so several score vectors are
// selected in one launch.
extern "C" __global__ void topk_f32(int* idx, const float* scores, int n, int k) {
    idx += (long)blockIdx.x * k;
    scores += (long)blockIdx.x * n;
    __shared__ unsigned int hist[256];
    __shared__ unsigned int sPrefix, sRemaining;
    if (threadIdx.x == 0) { sPrefix = 0; sRemaining = (unsigned)k; }
    unsigned int mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int j = threadIdx.x; j < 256; j += blockDim.x) hist[j] = 0;
        __syncthreads();
        unsigned int prefix = sPrefix;
        // Scores of one layer sit in a narrow range, so most keys share the top digits: lanes with the
        // same bin are matched and their leader adds the count (one shared atomic per distinct bin per
        // warp instead of up to 32 colliding ones). Every lane runs the same number of iterations.
        for (int base = 0; base < n; base += blockDim.x) {
            int i = base + threadIdx.x;
            unsigned int key = i < n ? orderKey(scores[i]) : 0u;
            bool active = i < n && (key & mask) == prefix;
            unsigned int bin = active ? (key >> shift) & 255u : 256u;
            unsigned int peers = __match_any_sync(0xffffffffu, bin);
            if (active && (threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&hist[bin], (unsigned)__popc(peers));
        }
        __syncthreads();
        // Find the digit d (from the top) where the count of keys above reaches sRemaining: warp 0,
        // 8 bins per lane, a suffix scan of lane totals, then the one lane that crosses scans its bins.
        if (threadIdx.x < 32) {
            int lane = threadIdx.x;
            unsigned int rem = sRemaining;
            unsigned int mine = 0;
#pragma unroll
            for (int j = 0; j < 8; j++) mine += hist[lane * 8 + j];
            unsigned int suffix = mine;  // inclusive suffix sum over lanes >= lane
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                unsigned int y = __shfl_down_sync(0xffffffffu, suffix, o);
                if (lane + o < 32) suffix += y;
            }
            unsigned int above = suffix - mine;  // keys in the bins of higher lanes (larger digits)
            if (above < rem && above + mine >= rem) {
                unsigned int cum = above;
                for (int d = lane * 8 + 7; d >= lane * 8; d--) {
                    if (cum + hist[d] >= rem) { sPrefix = prefix | ((unsigned)d << shift); sRemaining = rem - cum; break; }
                    cum += hist[d];
                }
            }
        }
        mask |= 255u << shift;
        __syncthreads();
    }
    // sPrefix is the k-th largest key; take every key above it and the first sRemaining equal ones.
    // Each thread owns a contiguous run of indices, so two block-wide scans (equal keys before the
    // run, picks before the run) place every pick: ascending output, ties to the lower index.
    unsigned int thr = sPrefix;
    int takeEq = (int)sRemaining;
    int per = (n + blockDim.x - 1) / blockDim.x;
    int beg = min(n, (int)threadIdx.x * per), end = min(n, beg + per);
    int myEq = 0;
    for (int i = beg; i < end; i++) myEq += orderKey(scores[i]) == thr;
    int eqTotal;
    int eqRank = blockExclusiveScan(myEq, &eqTotal);
    int mySel = 0;
    for (int i = beg, r = eqRank; i < end; i++) {
        unsigned int key = orderKey(scores[i]);
        if (key > thr) mySel++;
        else if (key == thr) { mySel += r < takeEq; r++; }
    }
    int selTotal;
    int pos = blockExclusiveScan(mySel, &selTotal);
    for (int i = beg, r = eqRank; i < end; i++) {
        unsigned int key = orderKey(scores[i]);
        bool take = key > thr;
        if (key == thr) { take = r < takeEq; r++; }
        if (take) idx[pos++] = i;
    }
}

// AdamW on fp32 master params: g = grad·gradScale; m,v moments; bias corrections bc1 = 1−β1^t,
// bc2 = 1−β2^t; decoupled weight decay.
template <typename TG>
__device__ __forceinline__ void adamwOne(float* p, const TG* g, float* m, float* v, long i, float lr, float b1, float b2,
                                         float eps, float wd, float bc1, float bc2, float gs) {
    float gi = ld(g, i) * gs;
    float mi = b1 * m[i] + (1.f - b1) * gi;
    float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi; v[i] = vi;
    float pi = p[i];
    p[i] = pi - lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * pi);
}

template <typename TG>
__device__ void adamwImpl(float* p, const TG* g, float* m, float* v, long n, float lr, float b1, float b2,
                          float eps, float wd, float bc1, float bc2, float gs) {
    GRID_LOOP(i, n) adamwOne(p, g, m, v, i, lr, b1, b2, eps, wd, bc1, bc2, gs);
}

// ---- Multi-tensor optimizer kernels: a whole LoRA adapter in one launch ----------------------------
// GpuBackend's AdamW group writes a device table of MultiSlot (only slots with elements) once; every
// slot is cut into MT_TILE-element tiles numbered consecutively across slots (slot i owns tiles
// [tile0_i, tile0_{i+1})), and one block handles one tile, so the grid is the adapter's size / 4096
// whatever the mix of tensor sizes (27M params -> ~6.6k blocks of 256 threads, several waves on an
// H200). A block finds its slot by binary search over tile0 (≤ 9 steps for 448 slots, cached reads).
#define MT_TILE 4096
#define MT_THREADS 256  // MT_TILE / MT_THREADS / 4 = 4 float4 per thread and array
extern "C" __constant__ int multi_tile = MT_TILE;         // read by the host (Kernels.constant)
extern "C" __constant__ int multi_threads = MT_THREADS;

// 64 bytes, 8-byte fields; GpuBackend.AdamwMulti writes it word by word.
struct MultiSlot {
    float* p; float* g; float* m; float* v;
    void* copy;      // the compute copy to refresh after the update, or null
    long n;          // elements (> 0)
    long tile0;      // first tile of this slot
    int copyType;    // 0 none, 1 bf16, 2 f16, 3 f32
    int vec;         // flags: bit 0 = p, g, m, v, copy 16-byte aligned and n % 4 == 0 (float4 path);
                     // bit 1 = no weight decay for this slot (the group's decay mask)
};

__device__ __forceinline__ int findSlot(const MultiSlot* slots, int nslots, long tile) {
    int lo = 0, hi = nslots - 1;
    while (lo < hi) { int mid = (lo + hi + 1) >> 1; if (slots[mid].tile0 <= tile) lo = mid; else hi = mid - 1; }
    return lo;
}

__device__ __forceinline__ void storeCopy1(void* c, int type, long i, float x) {
    if (type == 1) reinterpret_cast<bf16*>(c)[i] = __float2bfloat16_rn(x);
    else if (type == 2) reinterpret_cast<__half*>(c)[i] = __float2half_rn(x);
    else if (type == 3) reinterpret_cast<float*>(c)[i] = x;
}

// 4 values at c[i..i+4) (i a multiple of 4, c 16-byte aligned): one 8- or 16-byte store.
__device__ __forceinline__ void storeCopy4(void* c, int type, long i, float4 x) {
    if (type == 1) {
        __nv_bfloat162 a = __floats2bfloat162_rn(x.x, x.y), b = __floats2bfloat162_rn(x.z, x.w);
        uint2 u; u.x = *reinterpret_cast<unsigned int*>(&a); u.y = *reinterpret_cast<unsigned int*>(&b);
        *reinterpret_cast<uint2*>(reinterpret_cast<bf16*>(c) + i) = u;
    } else if (type == 2) {
        __half2 a = __floats2half2_rn(x.x, x.y), b = __floats2half2_rn(x.z, x.w);
        uint2 u; u.x = *reinterpret_cast<unsigned int*>(&a); u.y = *reinterpret_cast<unsigned int*>(&b);
        *reinterpret_cast<uint2*>(reinterpret_cast<__half*>(c) + i) = u;
    } else if (type == 3) {
        *reinterpret_cast<float4*>(reinterpret_cast<float*>(c) + i) = x;
    }
}

// One AdamW element (adamwOne's arithmetic, operation for operation, so results match the
// per-tensor kernel and CpuBackend's formula). Returns the new parameter.
__device__ __forceinline__ float adamwElem(float& p, float g, float& m, float& v, float lr, float b1, float b2,
                                           float eps, float wd, float bc1, float bc2, float gs) {
    float gi = g * gs;
    float mi = b1 * m + (1.f - b1) * gi;
    float vi = b2 * v + (1.f - b2) * gi * gi;
    m = mi; v = vi;
    float pi = p;
    p = pi - lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * pi);
    return p;
}

// AdamW over every slot's tile (rule of adamwOne); then the compute copy = convert(param) and, with
// zeroGrads, the gradient is zeroed after it was read — the optimizer phase in one launch.
// Grid: total tiles; block MT_THREADS.
__device__ __forceinline__ void adamwMultiImpl(const MultiSlot* slots, int nslots, float lr, float b1, float b2, float eps, float wd,
                                               float bc1, float bc2, float gs, int zeroGrads) {
    const MultiSlot* sp = slots + findSlot(slots, nslots, blockIdx.x);
    float *p = sp->p, *g = sp->g, *m = sp->m, *v = sp->v;
    void* c = sp->copy;
    int ct = c ? sp->copyType : 0;
    long n = sp->n, base = ((long)blockIdx.x - sp->tile0) * MT_TILE, end = min(n, base + MT_TILE);
    wd = (sp->vec & 2) ? 0.f : wd;   // a slot the decay mask leaves out
    if (sp->vec & 1) {
        // All loads of the thread's 4 chunks first (16 independent 16-byte loads in flight), then math and stores.
        float4 P[4], G[4], M[4], V[4];
        long idx[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            idx[k] = base + ((long)k * MT_THREADS + threadIdx.x) * 4;
            if (idx[k] < end) {
                P[k] = *reinterpret_cast<const float4*>(p + idx[k]); G[k] = *reinterpret_cast<const float4*>(g + idx[k]);
                M[k] = *reinterpret_cast<const float4*>(m + idx[k]); V[k] = *reinterpret_cast<const float4*>(v + idx[k]);
            }
        }
#pragma unroll
        for (int k = 0; k < 4; k++) {
            if (idx[k] >= end) continue;
            adamwElem(P[k].x, G[k].x, M[k].x, V[k].x, lr, b1, b2, eps, wd, bc1, bc2, gs);
            adamwElem(P[k].y, G[k].y, M[k].y, V[k].y, lr, b1, b2, eps, wd, bc1, bc2, gs);
            adamwElem(P[k].z, G[k].z, M[k].z, V[k].z, lr, b1, b2, eps, wd, bc1, bc2, gs);
            adamwElem(P[k].w, G[k].w, M[k].w, V[k].w, lr, b1, b2, eps, wd, bc1, bc2, gs);
            *reinterpret_cast<float4*>(p + idx[k]) = P[k];
            *reinterpret_cast<float4*>(m + idx[k]) = M[k];
            *reinterpret_cast<float4*>(v + idx[k]) = V[k];
            if (zeroGrads) *reinterpret_cast<float4*>(g + idx[k]) = make_float4(0.f, 0.f, 0.f, 0.f);
            if (ct) storeCopy4(c, ct, idx[k], P[k]);
        }
    } else {
        for (long i = base + threadIdx.x; i < end; i += MT_THREADS) {
            float pi = p[i], mi = m[i], vi = v[i];
            adamwElem(pi, g[i], mi, vi, lr, b1, b2, eps, wd, bc1, bc2, gs);
            p[i] = pi; m[i] = mi; v[i] = vi;
            if (zeroGrads) g[i] = 0.f;
            if (ct) storeCopy1(c, ct, i, pi);
        }
    }
}

extern "C" __global__ void adamw_multi(const MultiSlot* slots, int nslots, float lr, float b1, float b2, float eps, float wd,
                                       float bc1, float bc2, float gs, int zeroGrads) {
    adamwMultiImpl(slots, nslots, lr, b1, b2, eps, wd, bc1, bc2, gs, zeroGrads);
}

// adamw_multi with the step's scalars read from device memory, so a recorded update (CUDA graph)
// serves every step: hyper = {lr, bc1, bc2, invTokens, maxNorm} (written by the host before each
// replay), ss = this step's Σg² (sumsq_multi's result). The gradient scale is the trainer's, with the
// host's arithmetic (so the same bits): gs = invTokens, times (float)(maxNorm / (norm + 1e-6)) when
// maxNorm > 0 and norm = sqrt(ss)·invTokens (in double) exceeds maxNorm.
extern "C" __global__ void adamw_multi_dev(const MultiSlot* slots, int nslots, const float* hyper, const double* ss,
                                           float b1, float b2, float eps, float wd, int zeroGrads) {
    float lr = hyper[0], bc1 = hyper[1], bc2 = hyper[2], inv = hyper[3], maxNorm = hyper[4];
    double norm = sqrt(*ss) * (double)inv;
    float gs = inv;
    if (maxNorm > 0.f && norm > (double)maxNorm) gs *= (float)((double)maxNorm / (norm + 1e-6));
    adamwMultiImpl(slots, nslots, lr, b1, b2, eps, wd, bc1, bc2, gs, zeroGrads);
}

// Block-wide double sum in a fixed tree order (MT_THREADS threads); thread 0 gets the result.
__device__ __forceinline__ double blockSumDouble(double x) {
    __shared__ double sh[MT_THREADS / 32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    if (l == 0) sh[w] = x;
    __syncthreads();
    double t = 0.0;
    if (threadIdx.x == 0)
        for (int j = 0; j < MT_THREADS / 32; j++) t += sh[j];
    __syncthreads();
    return t;
}

// Σ g² over every slot's gradient in one launch, deterministic: each block sums its tile (fp32 per
// thread over ≤ 16 elements, then double across the block in a fixed order) into partial[tile];
// the last block to finish (a counter, reset by that block for the next launch) adds the partials
// in tile order in double and writes *out. The result does not depend on block scheduling, so the
// same gradients always give the same bits (unlike the atomicAdd-into-double of sumsq_*).
// Grid: total tiles; block MT_THREADS; partial (tiles) doubles; *counter 0 before the first launch.
extern "C" __global__ void sumsq_multi(double* out, double* partial, unsigned int* counter, const MultiSlot* slots, int nslots) {
    const MultiSlot* sp = slots + findSlot(slots, nslots, blockIdx.x);
    const float* g = sp->g;
    long n = sp->n, base = ((long)blockIdx.x - sp->tile0) * MT_TILE, end = min(n, base + MT_TILE);
    float s = 0.f;
    if (sp->vec & 1) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            long i = base + ((long)k * MT_THREADS + threadIdx.x) * 4;
            if (i < end) {
                float4 x = *reinterpret_cast<const float4*>(g + i);
                s = fmaf(x.x, x.x, s); s = fmaf(x.y, x.y, s); s = fmaf(x.z, x.z, s); s = fmaf(x.w, x.w, s);
            }
        }
    } else {
        for (long i = base + threadIdx.x; i < end; i += MT_THREADS) s = fmaf(g[i], g[i], s);
    }
    double b = blockSumDouble((double)s);
    __shared__ bool last;
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = b;
        __threadfence();  // the partial is visible device-wide before the counter says so
        last = atomicAdd(counter, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    double t = 0.0;
    for (long j = threadIdx.x; j < gridDim.x; j += MT_THREADS) t += __ldcg(partial + j);  // L2: other blocks' writes
    t = blockSumDouble(t);
    if (threadIdx.x == 0) { *out = t; *counter = 0u; }
}

// GQA "QK-norm" scores per KV channel (g, d): scores[g·D+d] = kNorms[g·D+d] · mean_j qNorms[(g·G+j)·D+d].
extern "C" __global__ void kv_channel_scores(float* scores, const float* qNorms, const float* kNorms, int Hkv, int G, int D) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= Hkv * D) return;
    int g = i / D, d = i % D;
    float s = 0.f;
    for (int j = 0; j < G; j++) s += qNorms[(g * G + j) * D + d];
    scores[i] = kNorms[i] * (s / G);
}

// First position in the ascending idx[0, k) whose value is >= v.
__device__ __forceinline__ int lowerBound(const int* idx, int k, int v) {
    int lo = 0, hi = k;
    while (lo < hi) { int mid = (lo + hi) >> 1; if (idx[mid] < v) lo = mid + 1; else hi = mid; }
    return lo;
}

// Kept KV channels -> the query-side channels of their group, ascending: kvIdx (k) ascending values
// g·D+d; out (k·G): group g's block starts at (first index of g in kvIdx)·G and holds, for each
// query head h = g·G+j in turn, h·D+d for the kept d of g in ascending order. One thread per output.
extern "C" __global__ void expand_group_channels(int* out, const int* kvIdx, int k, int G, int D) {
    long e = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long)k * G) return;
    int i = (int)(e / G);             // the kv entry this thread expands ...
    int j = (int)(e % G);             // ... for query head g·G+j
    int c = kvIdx[i], g = c / D, d = c % D;
    int start = lowerBound(kvIdx, k, g * D), end = lowerBound(kvIdx, k, (g + 1) * D);
    out[(long)start * G + (long)j * (end - start) + (i - start)] = (g * G + j) * D + d;
}

#define FOR_2TYPES(M) M(f32, f32, float, float) M(f32, bf16, float, bf16) M(bf16, f32, bf16, float) M(bf16, bf16, bf16, bf16)
#define SPARSE(SO, SI, TO, TI) \
    extern "C" __global__ void gather_rows_##SO##_##SI(TO* o, const TI* s, const int* idx, int R, int C, int k, int vec) { gatherRowsImpl(o, s, idx, R, C, k, vec); } \
    extern "C" __global__ void scatter_rows_##SO##_##SI(TO* o, const TI* s, const int* idx, int R, int C, int k, int acc, int vec) { scatterRowsImpl(o, s, idx, R, C, k, acc, vec); } \
    extern "C" __global__ void gather_cols_##SO##_##SI(TO* o, const TI* s, const int* idx, int R, int C, int k) { gatherColsImpl(o, s, idx, R, C, k); } \
    extern "C" __global__ void scatter_cols_##SO##_##SI(TO* o, const TI* s, const int* idx, int R, int C, int k, int acc) { scatterColsImpl(o, s, idx, R, C, k, acc); } \
    extern "C" __global__ void gather_rows_cols_##SO##_##SI(TO* o, const TI* s, const int* ri, const int* ci, int n, int R, int C, int k, int vec) { gatherRowsColsImpl(o, s, ri, ci, n, R, C, k, vec); } \
    extern "C" __global__ void scatter_rows_cols_##SO##_##SI(TO* o, const TI* s, const int* ri, const int* ci, int n, int R, int C, int k, int rpb, int map, int vec) { scatterRowsColsImpl(o, s, ri, ci, n, R, C, k, rpb, map, vec); } \
    extern "C" __global__ void seq_mean_##SO##_##SI(TO* o, const TI* x, const int* ks, int B, int T, int C, int vec) { seqMeanImpl(o, x, ks, B, T, C, vec); }
FOR_2TYPES(SPARSE)

extern "C" __global__ void colsumsq_f32(float* part, const float* x, int R, int C, int rows) { colSumsqImpl(part, x, R, C, rows); }
extern "C" __global__ void colsumsq_bf16(float* part, const bf16* x, int R, int C, int rows) { colSumsqImpl(part, x, R, C, rows); }
extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, long n, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2, float gs) { adamwImpl(p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, gs); }
extern "C" __global__ void adamw_bf16(float* p, const bf16* g, float* m, float* v, long n, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2, float gs) { adamwImpl(p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, gs); }

// ==== Predictor fast paths (issue 5: the predictor ≤ 2% of the sparse step) =======================

// ---- Top-k with the keys in registers ------------------------------------------------------------
// topk_f32 above re-reads every score from global memory in each of its four 8-bit passes, one
// dependent load per thread at a time, and resolves a digit with one warp: ≈ 28 µs for 14,336
// scores. Here one block per row holds the row in registers (thread t owns the contiguous indices
// [t·ITEMS, t·ITEMS + ITEMS), loaded once, all loads in flight together), and the radix select works
// on the keys' range instead of their raw bits: the block's min and max key first, then 2048-bin
// histograms of (key − base) >> shift, so the first pass already spreads a layer's narrow range of
// scores over all bins (few shared-atomic collisions). The search stops as soon as the bin holding
// the k-th largest key is one key value, is taken whole, or holds ≤ TOPK_CAND keys — then one warp
// ranks those directly (descending key, ascending index) — so continuous scores take one pass; at
// most three passes (11 bits each over at most 32). That yields the last pick as a (key, index)
// pair: a key is taken iff it is larger, or equal with an index no larger, and one block scan places
// every pick in index order. Output ascending, ties to the lower index, NaN lowest: bit for bit what
// topk_f32 and CpuBackend.topK return.
#define TOPK_BITS 11
#define TOPK_BINS (1 << TOPK_BITS)
#define TOPK_OUT 8192   // output staging: 32 KB of shared memory, at most two rounds for 16,384 keys
#define TOPK_CAND 64    // a class of at most this many keys is ranked directly instead of by further passes

template <int ITEMS>
__device__ void topkRegImpl(int* idx, const float* scores, int n, int k, int vec) {
    __shared__ unsigned int hist[TOPK_BINS];
    __shared__ unsigned int sMin, sMax, sDigit, sRem, sCount, sCand, sThrKey;
    __shared__ int sThrIdx;
    idx += (long)blockIdx.x * k;
    scores += (long)blockIdx.x * n;
    const int beg = threadIdx.x * ITEMS;
    unsigned int key[ITEMS];
    if (vec) {  // scores 16-byte aligned, n % 4 == 0: a group of 4 is wholly inside or outside the row
#pragma unroll
        for (int j = 0; j < ITEMS; j += 4) {
            if (beg + j < n) {
                float4 v = *reinterpret_cast<const float4*>(scores + beg + j);
                key[j] = orderKey(v.x); key[j + 1] = orderKey(v.y); key[j + 2] = orderKey(v.z); key[j + 3] = orderKey(v.w);
            } else {
                key[j] = key[j + 1] = key[j + 2] = key[j + 3] = 0u;
            }
        }
    } else {
#pragma unroll
        for (int j = 0; j < ITEMS; j++) key[j] = beg + j < n ? orderKey(scores[beg + j]) : 0u;
    }
    // the row's smallest and largest key (keys past n left out)
    unsigned int lo = 0xffffffffu, hi = 0u;
#pragma unroll
    for (int j = 0; j < ITEMS; j++)
        if (beg + j < n) { lo = min(lo, key[j]); hi = max(hi, key[j]); }
    if (threadIdx.x == 0) { sMin = 0xffffffffu; sMax = 0u; sCand = 0u; }
    __syncthreads();
    lo = __reduce_min_sync(0xffffffffu, lo);
    hi = __reduce_max_sync(0xffffffffu, hi);
    if ((threadIdx.x & 31) == 0) { atomicMin(&sMin, lo); atomicMax(&sMax, hi); }
    __syncthreads();
    // Candidates are the keys in [base, base + 2^wb); each pass bins them by (key − base) >> sh.
    unsigned int base = sMin, rem = (unsigned)k;
    unsigned int span = sMax - sMin;
    int wb = span == 0u ? 0 : 32 - __clz(span);
    int sh;
    unsigned int count;
    for (;;) {
        sh = max(0, wb - TOPK_BITS);
        int nb = (int)((((1ull << wb) - 1ull) >> sh) + 1ull);   // bins in use, ≤ 2048
        for (int b = threadIdx.x; b < nb; b += blockDim.x) hist[b] = 0u;
        __syncthreads();
#pragma unroll
        for (int j = 0; j < ITEMS; j++) {
            unsigned int d = key[j] - base;
            if (beg + j < n && (wb >= 32 || (d >> wb) == 0u)) atomicAdd(&hist[d >> sh], 1u);
        }
        __syncthreads();
        // The bin d (from the top) where the count of candidates at or above reaches rem: thread t
        // owns bins nb-1-t·per … nb-1-(t·per+per-1), a block scan gives the count above its bins.
        int per = (nb + blockDim.x - 1) / blockDim.x;
        int top = nb - 1 - (int)threadIdx.x * per;
        unsigned int mine = 0;
        for (int j = 0; j < per; j++) if (top - j >= 0) mine += hist[top - j];
        int total;
        unsigned int above = (unsigned)blockExclusiveScan((int)mine, &total);
        if (above < rem && above + mine >= rem) {
            unsigned int cum = above;
            for (int j = 0; j < per && top - j >= 0; j++) {
                unsigned int c = hist[top - j];
                if (cum + c >= rem) { sDigit = (unsigned)(top - j); sRem = rem - cum; sCount = c; break; }
                cum += c;
            }
        }
        __syncthreads();
        unsigned int d = sDigit;
        count = sCount;
        rem = sRem;
        base += d << sh;
        // one key value, a bin taken whole, or few enough candidates to rank directly
        if (sh == 0 || count == rem || count <= TOPK_CAND) break;
        wb = sh;
        __syncthreads();                      // sDigit/sRem/sCount are rewritten by the next pass
    }
    // The k-th largest key lies in the class [base, base + 2^sh) of `count` keys, of which the first
    // rem (by descending key, then ascending index) are taken. Find the last pick's (key, index): a key
    // is then taken iff it is larger, or equal with an index no larger.
    unsigned int thrKey = base;
    int thrIdx = n;                           // class taken whole: every key >= base
    if (count != rem && sh == 0) {
        // one key value: the rem-th of its keys in index order
        int myEq = 0;
#pragma unroll
        for (int j = 0; j < ITEMS; j++) myEq += beg + j < n && key[j] == base;
        int eqTotal;
        int eqRank = blockExclusiveScan(myEq, &eqTotal);
        if (eqRank < (int)rem && eqRank + myEq >= (int)rem) {
            int r = eqRank;
#pragma unroll
            for (int j = 0; j < ITEMS; j++)
                if (beg + j < n && key[j] == base && ++r == (int)rem) sThrIdx = beg + j;
        }
        __syncthreads();
        thrIdx = sThrIdx;
    } else if (count != rem) {
        // ≤ TOPK_CAND keys in the class: gather them, one warp ranks each against all others
        __shared__ unsigned int candKey[TOPK_CAND];
        __shared__ int candIdx[TOPK_CAND];
#pragma unroll
        for (int j = 0; j < ITEMS; j++) {
            unsigned int dd = key[j] - base;
            if (beg + j < n && key[j] >= base && (dd >> sh) == 0u) {
                unsigned int slot = atomicAdd(&sCand, 1u);
                candKey[slot] = key[j];
                candIdx[slot] = beg + j;
            }
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            for (int l = threadIdx.x; l < (int)count; l += 32) {
                unsigned int kl = candKey[l];
                int il = candIdx[l], rank = 0;
                for (int m = 0; m < (int)count; m++) {
                    unsigned int km = candKey[m];
                    rank += km > kl || (km == kl && candIdx[m] < il);
                }
                if (rank == (int)rem - 1) { sThrKey = kl; sThrIdx = il; }
            }
        }
        __syncthreads();
        thrKey = sThrKey;
        thrIdx = sThrIdx;
    }
    unsigned int take = 0u;                       // bit j: item j is picked
#pragma unroll
    for (int j = 0; j < ITEMS; j++)
        if (beg + j < n && (key[j] > thrKey || (key[j] == thrKey && beg + j <= thrIdx))) take |= 1u << j;
    int selTotal;
    int pos = blockExclusiveScan(__popc(take), &selTotal);
    // Picks go out through shared memory, TOPK_OUT at a time: a thread's picks are adjacent in the
    // output but 16 apart between lanes, so direct 4-byte stores would cost one sector each, issued by
    // this one block's SM (≈ 8 µs for 12,902 picks); staged, every warp stores whole lines.
    __shared__ int outBuf[TOPK_OUT];
    for (int o0 = 0; o0 < k; o0 += TOPK_OUT) {
        __syncthreads();                          // the previous round's buffer has been copied out
        int p = pos;
#pragma unroll
        for (int j = 0; j < ITEMS; j++)
            if (take >> j & 1u) {
                if (p >= o0 && p < o0 + TOPK_OUT) outBuf[p - o0] = beg + j;
                p++;
            }
        __syncthreads();
        int cnt = min(TOPK_OUT, k - o0);
        for (int e = threadIdx.x; e < cnt; e += blockDim.x) idx[o0 + e] = outBuf[e];
    }
}

// Block = ceil(n / ITEMS) threads rounded up to a multiple of 32; grid = rows.
extern "C" __global__ void __launch_bounds__(1024) topk_reg4_f32(int* idx, const float* scores, int n, int k, int vec) { topkRegImpl<4>(idx, scores, n, k, vec); }
extern "C" __global__ void __launch_bounds__(1024) topk_reg16_f32(int* idx, const float* scores, int n, int k, int vec) { topkRegImpl<16>(idx, scores, n, k, vec); }

// ---- Gram matrices of the predictor's t = x·P without cuBLAS -------------------------------------
// lowRankColumnNorms' Gram form needs G_s = t_sᵀ·t_s (r, r) per segment; three tiny cuBLAS GEMMs
// with a 4096-long reduction each run on a handful of blocks. Here pass 1 spreads the rows over
// `chunks` blocks: block c stages its rows of every segment in shared memory (LR_ROWS at a time) and
// thread e < nseg·r² sums t_s[:, a]·t_s[:, b] over them (e = (s·r + a)·r + b) into part[c, e]; then
// lowrank_gram_part_norms adds the chunks in a fixed order (same input, same bits) and computes the
// column norms as lowrank_gram_norms does.
template <typename T>
__device__ void lowRankGramPartImpl(LowRankSegs g, float* part, int n, int r, int rowsPerChunk) {
    __shared__ float ts[3][LR_ROWS][LR_MAXR];
    int E = g.nseg * r * r;
    int r0 = blockIdx.x * rowsPerChunk, r1 = min(n, r0 + rowsPerChunk);
    int e = threadIdx.x;
    int s = e / (r * r), a = (e / r) % r, b = e % r;
    float acc = 0.f;
    for (int c0 = r0; c0 < r1; c0 += LR_ROWS) {
        int rows = min(LR_ROWS, r1 - c0);
        __syncthreads();   // the previous rows are no longer read
        for (int sg = 0; sg < g.nseg; sg++) {
            const T* t = (const T*)g.t[sg];
            for (int x = threadIdx.x; x < rows * r; x += blockDim.x) ts[sg][x / r][x % r] = ld(t, (long)c0 * r + x);
        }
        __syncthreads();
        if (e < E)
            for (int i = 0; i < rows; i++) acc = fmaf(ts[s][i][a], ts[s][i][b], acc);
    }
    if (e < E) part[(long)blockIdx.x * E + e] = acc;
}

template <typename T>
__device__ void lowRankGramPartNormsImpl(LowRankSegs g, const float* part, int chunks, int r, int mTotal) {
    __shared__ float gs[3 * LR_MAXR * LR_MAXR];
    int E = g.nseg * r * r;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        float s = 0.f;
        int c = 0;
        for (; c + 8 <= chunks; c += 8) {   // eight independent loads in flight, added in chunk order
            float v[8];
#pragma unroll
            for (int j = 0; j < 8; j++) v[j] = part[(long)(c + j) * E + e];
#pragma unroll
            for (int j = 0; j < 8; j++) s += v[j];
        }
        for (; c < chunks; c++) s += part[(long)c * E + e];
        gs[e] = s;
    }
    __syncthreads();
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= mTotal) return;
    lrGramColumnNorm<T>(g, gs, r, col);
}
extern "C" __global__ void lowrank_gram_part_f32(LR_PARAMS, float* part, int n, int r, int rowsPerChunk) { lowRankGramPartImpl<float>(lrSegs(LR_ARGS), part, n, r, rowsPerChunk); }
extern "C" __global__ void lowrank_gram_part_bf16(LR_PARAMS, float* part, int n, int r, int rowsPerChunk) { lowRankGramPartImpl<bf16>(lrSegs(LR_ARGS), part, n, r, rowsPerChunk); }
extern "C" __global__ void lowrank_gram_part_norms_f32(LR_PARAMS, const float* part, int chunks, int r, int mTotal) { lowRankGramPartNormsImpl<float>(lrSegs(LR_ARGS), part, chunks, r, mTotal); }
extern "C" __global__ void lowrank_gram_part_norms_bf16(LR_PARAMS, const float* part, int chunks, int r, int mTotal) { lowRankGramPartNormsImpl<bf16>(lrSegs(LR_ARGS), part, chunks, r, mTotal); }

// ---- expandGroupChannels over several index rows in one launch -----------------------------------
// Row y of kvIdx (rows, k) expands into row y of out (rows, k·G) by expand_group_channels' rule: the
// attention selection's kept Q channels (from K's row) and o_proj input columns (from V's) together.
extern "C" __global__ void expand_group_channels_rows(int* out, const int* kvIdx, int k, int G, int D) {
    long e = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long)k * G) return;
    out += (long)blockIdx.y * k * G;
    kvIdx += (long)blockIdx.y * k;
    int i = (int)(e / G), j = (int)(e % G);
    int c = kvIdx[i], g = c / D, d = c % D;
    int start = lowerBound(kvIdx, k, g * D), end = lowerBound(kvIdx, k, (g + 1) * D);
    out[(long)start * G + (long)j * (end - start) + (i - start)] = (g * G + j) * D + d;
}

// ---- A few products with one small shared left operand (the MLP predictor's x̄·P) ---------------
// outs_s (M, N) = A (M, K) · B_s (K, N) for s < S, with B_s at B + s·bStride and out_s at C + s·cStride
// (elements), M and N small (M ≤ 32 rows, N ≤ 32 columns, N % 8 == 0): the predictor's x̄ (B, C) times
// its stacked P (C, r). cuBLAS runs such a product on a handful of blocks that walk all of K (≈ 9 µs
// for 8 × 4096 × 8, twice). Here block (m, s) splits K over its threads — each reads A[m, k] and the
// 8-wide rows of B_s (16-byte loads), all loads independent — then the block adds the threads' N
// partial sums in a fixed order (same input, same bits). fp32 accumulation, one rounding at the store.
#define SKINNY_THREADS 256
template <typename TI, typename TO>
__device__ void skinnySharedAImpl(TO* C, const TI* A, const TI* B, int K, int N, long bStride, long cStride) {
    __shared__ float part[SKINNY_THREADS / 32][32];
    int m = blockIdx.x, s = blockIdx.y;
    const TI* a = A + (long)m * K;
    const TI* b = B + s * bStride;
    float acc[32];
#pragma unroll
    for (int j = 0; j < 32; j++) acc[j] = 0.f;
    for (int k = threadIdx.x; k < K; k += SKINNY_THREADS) {
        float av = ld(a, k);
#pragma unroll
        for (int c = 0; c < 4; c++) {
            if (c * 8 >= N) break;
            float v[8];
            ld8(b, (long)k * N + c * 8, v);
#pragma unroll
            for (int j = 0; j < 8; j++) acc[c * 8 + j] = fmaf(av, v[j], acc[c * 8 + j]);
        }
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
    for (int j = 0; j < 32; j++) {
        if (j >= N) break;
        float v = warpSum(acc[j]);
        if (lane == 0) part[w][j] = v;
    }
    __syncthreads();
    if (threadIdx.x < N) {
        float t = 0.f;
        for (int x = 0; x < SKINNY_THREADS / 32; x++) t += part[x][threadIdx.x];
        st(C + s * cStride, (long)m * N + threadIdx.x, t);
    }
}
extern "C" __global__ void skinny_shared_a_bf16_bf16(bf16* C, const bf16* A, const bf16* B, int K, int N, long bs, long cs) { skinnySharedAImpl(C, A, B, K, N, bs, cs); }
extern "C" __global__ void skinny_shared_a_f32_bf16(float* C, const bf16* A, const bf16* B, int K, int N, long bs, long cs) { skinnySharedAImpl(C, A, B, K, N, bs, cs); }
extern "C" __global__ void skinny_shared_a_f32_f32(float* C, const float* A, const float* B, int K, int N, long bs, long cs) { skinnySharedAImpl(C, A, B, K, N, bs, cs); }

// ---- The MLP predictor's scores over a few rows, flat parameters ----------------------------------
// lowRankSwigluColumnNorms for n ≤ LR_ROWS rows (the B per-sequence means): out[c] = ‖silu(tg·qg[:,c])
// ⊙ (tu·qu[:,c])‖ over the rows, the square root written directly. The same arithmetic as
// lowrank_swiglu_colsumsq (same fmaf order, same __expf), but with plain pointer parameters (no
// segment struct indexed at run time, which the compiler keeps in local memory), the rank a template
// bound (8 covers the default predictor: no predicated-off work of the 32-wide form) and 128-thread
// blocks (112 blocks over 14,336 channels instead of 56). Grid: ceil(m / 128); block 128.
template <typename T, int RMAX>
__device__ void lowRankSwigluSmallImpl(float* out, const T* tg, const T* tu, const T* qg, const T* qu, int n, int r, int m) {
    __shared__ float ts[2][LR_ROWS][RMAX];
    for (int e = threadIdx.x; e < n * r; e += blockDim.x) {
        ts[0][e / r][e % r] = ld(tg, e);
        ts[1][e / r][e % r] = ld(tu, e);
    }
    __syncthreads();
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= m) return;
    float cg[RMAX], cu[RMAX];
    lrSwigluColumns<T, RMAX>(qg, qu, m, col, r, cg, cu);
    out[col] = sqrtf(lrSwigluSumsq<RMAX>(ts, n, r, cg, cu));
}
extern "C" __global__ void lowrank_swiglu_small_r8_f32(float* o, const float* tg, const float* tu, const float* qg, const float* qu, int n, int r, int m) { lowRankSwigluSmallImpl<float, 8>(o, tg, tu, qg, qu, n, r, m); }
extern "C" __global__ void lowrank_swiglu_small_r8_bf16(float* o, const bf16* tg, const bf16* tu, const bf16* qg, const bf16* qu, int n, int r, int m) { lowRankSwigluSmallImpl<bf16, 8>(o, tg, tu, qg, qu, n, r, m); }
extern "C" __global__ void lowrank_swiglu_small_r32_f32(float* o, const float* tg, const float* tu, const float* qg, const float* qu, int n, int r, int m) { lowRankSwigluSmallImpl<float, 32>(o, tg, tu, qg, qu, n, r, m); }
extern "C" __global__ void lowrank_swiglu_small_r32_bf16(float* o, const bf16* tg, const bf16* tu, const bf16* qg, const bf16* qu, int n, int r, int m) { lowRankSwigluSmallImpl<bf16, 32>(o, tg, tu, qg, qu, n, r, m); }

// ---- the sparse MLP's kept-channel padding (Backend.padIndexSet / fillCols)

// out[:k] = idx; out[k:kp] = the smallest values of [0,n) not in idx, ascending. One block: a
// bitmap of the taken values in shared memory ((n+31)/32 words), then one thread walks its zero bits
// (at most n/32 word reads, a few µs at n = 14336). Values outside [0,n) mark nothing; if fewer than
// kp−k values are free the rest is -1 (the host checks kp ≤ n, and idx is a set).
extern "C" __constant__ int pad_index_set_smem_entry_bytes = sizeof(unsigned int);  // per 32 values of the bitmap (host: Kernels.constant)
extern "C" __global__ void pad_index_set(int* out, const int* idx, int k, int kp, int n) {
    extern __shared__ unsigned int taken[];
    int words = (n + 31) >> 5;
    for (int w = threadIdx.x; w < words; w += blockDim.x) taken[w] = 0u;
    __syncthreads();
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        int c = idx[j];
        out[j] = c;
        if (c >= 0 && c < n) atomicOr(&taken[c >> 5], 1u << (c & 31));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int j = k;
        for (int w = 0; w < words && j < kp; w++) {
            unsigned int free = ~taken[w];
            if (w == words - 1 && (n & 31)) free &= (1u << (n & 31)) - 1u;
            while (free && j < kp) { out[j++] = (w << 5) + __ffs(free) - 1; free &= free - 1u; }
        }
        for (; j < kp; j++) out[j] = -1;
    }
}

// t (R,C): t[r, c0:C] = v for every row.
template <typename T>
__device__ void fillColsImpl(T* t, int R, int C, int c0, float v) {
    int w = C - c0;
    GRID_LOOP(e, (long)R * w) {
        long r = e / w;
        st(t, r * C + c0 + (e - r * w), v);
    }
}
extern "C" __global__ void fill_cols_f32(float* t, int R, int C, int c0, float v) { fillColsImpl(t, R, C, c0, v); }
extern "C" __global__ void fill_cols_bf16(bf16* t, int R, int C, int c0, float v) { fillColsImpl(t, R, C, c0, v); }

// out (R,C) [rowIdx[i], colIdx[j]] += src (n,k) [i,j]: only the named elements are touched (the
// sparse tokens' kept-channel frozen outputs joined into LoRA's full-width ones). Index sets are
// distinct, so no two threads write one element; an out-of-range index is skipped.
template <typename T>
__device__ void scatterAddRowsColsImpl(T* out, const T* src, const int* rowIdx, const int* colIdx, int n, int R, int C, int k) {
    GRID_LOOP(e, (long)n * k) {
        long i = e / k;
        int j = (int)(e - i * k), r = rowIdx[i], c = colIdx[j];
        if (r < 0 || r >= R || c < 0 || c >= C) continue;
        long o = (long)r * C + c;
        st(out, o, ld(out, o) + ld(src, e));
    }
}
extern "C" __global__ void scatter_add_rows_cols_f32(float* o, const float* s, const int* ri, const int* ci, int n, int R, int C, int k) { scatterAddRowsColsImpl(o, s, ri, ci, n, R, C, k); }
extern "C" __global__ void scatter_add_rows_cols_bf16(bf16* o, const bf16* s, const int* ri, const int* ci, int n, int R, int C, int k) { scatterAddRowsColsImpl(o, s, ri, ci, n, R, C, k); }

// ==== Recorded sparse steps on padded batches ======================================================
// x[b·T+t, :] = 0 for the padding positions t < keyStart[b]; other rows untouched. One block per row
// (grid T × B): a padding row's block zeroes it, every other block returns at once — the work depends
// on the device's keyStart only, so one recorded launch serves batches whose padding differs.
template <typename T_>
__device__ void maskPaddingRowsImpl(T_* x, const int* keyStart, int T, int C) {
    int t = blockIdx.x, b = blockIdx.y;
    if (t >= keyStart[b]) return;
    T_* row = x + ((long)b * T + t) * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) st(row, c, 0.f);
}
extern "C" __global__ void mask_padding_rows_f32(float* x, const int* keyStart, int T, int C) { maskPaddingRowsImpl(x, keyStart, T, C); }
extern "C" __global__ void mask_padding_rows_bf16(bf16* x, const int* keyStart, int T, int C) { maskPaddingRowsImpl(x, keyStart, T, C); }
