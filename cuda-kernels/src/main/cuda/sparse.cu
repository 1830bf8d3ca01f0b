// SparseLoRA's device-side selection and slicing: row/column gather and scatter (weight slices and
// token split/join, and the fused row+column forms that gather or re-join a sparse token group's
// kept channels in one pass), per-column L2 norms (two deterministic passes, no atomics, so the
// same input always gives the same bits and the same selection), per-sequence means over non-padding tokens,
// and top-k on the device (radix select of the k-th largest key + an index-ordered scan, so ties go
// to the lower index and the indices come out ascending with no host round trip).
#include "common.cuh"

// out[i,:] = src[idx[i],:]; an index outside [0,R) gives a NaN row.
template <typename TO, typename TS>
__device__ void gatherRowsImpl(TO* out, const TS* src, const int* idx, int R, int C, int vec) {
    long i = blockIdx.x;
    int r = idx[i];
    TO* o = out + i * (long)C;
    if (r < 0 || r >= R) { for (int c = threadIdx.x; c < C; c += blockDim.x) st(o, c, __int_as_float(0x7fc00000)); return; }
    const TS* s = src + (long)r * C;
    if (vec) { for (int g = threadIdx.x; g < C / 8; g += blockDim.x) { float v[8]; ld8(s, g * 8, v); st8(o, g * 8, v); } }
    else for (int c = threadIdx.x; c < C; c += blockDim.x) st(o, c, ld(s, c));
}

// out[idx[i],:] (+)= src[i,:]; indices are distinct (an index set); one outside [0,R) is skipped.
template <typename TO, typename TS>
__device__ void scatterRowsImpl(TO* out, const TS* src, const int* idx, int R, int C, int acc, int vec) {
    long i = blockIdx.x;
    int r = idx[i];
    if (r < 0 || r >= R) return;
    TO* o = out + (long)r * C;
    const TS* s = src + i * (long)C;
    if (vec) {
        for (int g = threadIdx.x; g < C / 8; g += blockDim.x) {
            float v[8]; ld8(s, g * 8, v);
            if (acc) { float w[8]; ld8(o, g * 8, w);
#pragma unroll
                for (int j = 0; j < 8; j++) v[j] += w[j]; }
            st8(o, g * 8, v);
        }
    } else {
        for (int c = threadIdx.x; c < C; c += blockDim.x) st(o, c, acc ? ld(o, c) + ld(s, c) : ld(s, c));
    }
}

// out (R,k) [r,i] = src (R,C) [r, idx[i]].
template <typename TO, typename TS>
__device__ void gatherColsImpl(TO* out, const TS* src, const int* idx, int R, int C, int k) {
    GRID_LOOP(e, (long)R * k) {
        long r = e / k; int i = (int)(e % k);
        int c = idx[i];
        st(out, e, c >= 0 && c < C ? ld(src, r * C + c) : __int_as_float(0x7fc00000));
    }
}

// out (R,C) [r, idx[i]] (+)= src (R,k) [r,i].
template <typename TO, typename TS>
__device__ void scatterColsImpl(TO* out, const TS* src, const int* idx, int R, int C, int k, int acc) {
    GRID_LOOP(e, (long)R * k) {
        long r = e / k; int i = (int)(e % k);
        int c = idx[i];
        if (c < 0 || c >= C) continue;
        long o = r * C + c;
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
                    float v[8];
#pragma unroll
                    for (int j = 0; j < 8; j++) { int p = pos[g * 8 + j]; v[j] = p ? ld(s, p - 1) : 0.f; }
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
template <typename TO, typename TI>
__device__ void seqMeanImpl(TO* out, const TI* x, const int* keyStart, int B, int T, int C) {
    GRID_LOOP(e, (long)B * C) {
        long b = e / C; int c = (int)(e % C);
        int ks = max(0, keyStart[b]);
        float s = 0.f;
        for (int t = ks; t < T; t++) s += ld(x, (b * T + t) * C + c);
        st(out, e, ks < T ? s / (T - ks) : 0.f);
    }
}

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

// idx (k) <- indices of the k largest scores (n), ascending; ties -> lower index. One block.
extern "C" __global__ void topk_f32(int* idx, const float* scores, int n, int k) {
    __shared__ unsigned int hist[256];
    __shared__ unsigned int sPrefix, sRemaining;
    if (threadIdx.x == 0) { sPrefix = 0; sRemaining = (unsigned)k; }
    unsigned int mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int j = threadIdx.x; j < 256; j += blockDim.x) hist[j] = 0;
        __syncthreads();
        unsigned int prefix = sPrefix;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            unsigned int key = orderKey(scores[i]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
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
    unsigned int thr = sPrefix;
    int takeEq = (int)sRemaining;
    int eqSeen = 0, written = 0;
    for (int base = 0; base < n; base += blockDim.x) {
        int i = base + threadIdx.x;
        unsigned int key = i < n ? orderKey(scores[i]) : 0u;
        int isEq = i < n && key == thr;
        int eqTotal;
        int eqRank = eqSeen + blockExclusiveScan(isEq, &eqTotal);
        int sel = i < n && (key > thr || (isEq && eqRank < takeEq));
        int selTotal;
        int pos = written + blockExclusiveScan(sel, &selTotal);
        if (sel) idx[pos] = i;
        eqSeen += eqTotal;
        written += selTotal;
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

// Many LoRA tensors in one launch: blockIdx.y picks the tensor from a device table.
struct AdamSlot { float* p; const float* g; float* m; float* v; long n; };
extern "C" __global__ void adamw_multi(const AdamSlot* slots, float lr, float b1, float b2, float eps, float wd,
                                       float bc1, float bc2, float gs) {
    AdamSlot s = slots[blockIdx.y];
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < s.n; i += (long)gridDim.x * blockDim.x)
        adamwOne(s.p, s.g, s.m, s.v, i, lr, b1, b2, eps, wd, bc1, bc2, gs);
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
    extern "C" __global__ void gather_rows_##SO##_##SI(TO* o, const TI* s, const int* idx, int R, int C, int vec) { gatherRowsImpl(o, s, idx, R, C, vec); } \
    extern "C" __global__ void scatter_rows_##SO##_##SI(TO* o, const TI* s, const int* idx, int R, int C, int acc, int vec) { scatterRowsImpl(o, s, idx, R, C, acc, vec); } \
    extern "C" __global__ void gather_cols_##SO##_##SI(TO* o, const TI* s, const int* idx, int R, int C, int k) { gatherColsImpl(o, s, idx, R, C, k); } \
    extern "C" __global__ void scatter_cols_##SO##_##SI(TO* o, const TI* s, const int* idx, int R, int C, int k, int acc) { scatterColsImpl(o, s, idx, R, C, k, acc); } \
    extern "C" __global__ void gather_rows_cols_##SO##_##SI(TO* o, const TI* s, const int* ri, const int* ci, int n, int R, int C, int k, int vec) { gatherRowsColsImpl(o, s, ri, ci, n, R, C, k, vec); } \
    extern "C" __global__ void scatter_rows_cols_##SO##_##SI(TO* o, const TI* s, const int* ri, const int* ci, int n, int R, int C, int k, int rpb, int map, int vec) { scatterRowsColsImpl(o, s, ri, ci, n, R, C, k, rpb, map, vec); } \
    extern "C" __global__ void seq_mean_##SO##_##SI(TO* o, const TI* x, const int* ks, int B, int T, int C) { seqMeanImpl(o, x, ks, B, T, C); }
FOR_2TYPES(SPARSE)

extern "C" __global__ void colsumsq_f32(float* part, const float* x, int R, int C, int rows) { colSumsqImpl(part, x, R, C, rows); }
extern "C" __global__ void colsumsq_bf16(float* part, const bf16* x, int R, int C, int rows) { colSumsqImpl(part, x, R, C, rows); }
extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, long n, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2, float gs) { adamwImpl(p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, gs); }
extern "C" __global__ void adamw_bf16(float* p, const bf16* g, float* m, float* v, long n, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2, float gs) { adamwImpl(p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, gs); }
