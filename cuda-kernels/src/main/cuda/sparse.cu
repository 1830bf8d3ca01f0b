// SparseLoRA's device-side selection and slicing: row/column gather and scatter (weight slices and
// token split/join), per-column L2 norms (two deterministic passes, no atomics, so the same input
// always gives the same bits and the same selection), per-sequence means over non-padding tokens,
// and top-k on the device (radix select of the k-th largest key + an index-ordered scan, so ties go
// to the lower index and the indices come out ascending with no host round trip).
#include "common.cuh"
#include <cuda_fp16.h>

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

// ---- Multi-tensor optimizer kernels: a whole LoRA adapter in one launch ----------------------------
// GpuBackend's AdamW group writes a device table of MultiSlot (only slots with elements) once; every
// slot is cut into MT_TILE-element tiles numbered consecutively across slots (slot i owns tiles
// [tile0_i, tile0_{i+1})), and one block handles one tile, so the grid is the adapter's size / 4096
// whatever the mix of tensor sizes (27M params -> ~6.6k blocks of 256 threads, several waves on an
// H200). A block finds its slot by binary search over tile0 (≤ 9 steps for 448 slots, cached reads).
#define MT_TILE 4096
#define MT_THREADS 256  // MT_TILE / MT_THREADS / 4 = 4 float4 per thread and array

// 64 bytes, 8-byte fields; GpuBackend.AdamwMulti writes it word by word.
struct MultiSlot {
    float* p; float* g; float* m; float* v;
    void* copy;      // the compute copy to refresh after the update, or null
    long n;          // elements (> 0)
    long tile0;      // first tile of this slot
    int copyType;    // 0 none, 1 bf16, 2 f16, 3 f32
    int vec;         // p, g, m, v, copy 16-byte aligned and n % 4 == 0: float4 path
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
extern "C" __global__ void adamw_multi(const MultiSlot* slots, int nslots, float lr, float b1, float b2, float eps, float wd,
                                       float bc1, float bc2, float gs, int zeroGrads) {
    const MultiSlot* sp = slots + findSlot(slots, nslots, blockIdx.x);
    float *p = sp->p, *g = sp->g, *m = sp->m, *v = sp->v;
    void* c = sp->copy;
    int ct = c ? sp->copyType : 0;
    long n = sp->n, base = ((long)blockIdx.x - sp->tile0) * MT_TILE, end = min(n, base + MT_TILE);
    if (sp->vec) {
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
    if (sp->vec) {
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
    extern "C" __global__ void gather_rows_##SO##_##SI(TO* o, const TI* s, const int* idx, int R, int C, int vec) { gatherRowsImpl(o, s, idx, R, C, vec); } \
    extern "C" __global__ void scatter_rows_##SO##_##SI(TO* o, const TI* s, const int* idx, int R, int C, int acc, int vec) { scatterRowsImpl(o, s, idx, R, C, acc, vec); } \
    extern "C" __global__ void gather_cols_##SO##_##SI(TO* o, const TI* s, const int* idx, int R, int C, int k) { gatherColsImpl(o, s, idx, R, C, k); } \
    extern "C" __global__ void scatter_cols_##SO##_##SI(TO* o, const TI* s, const int* idx, int R, int C, int k, int acc) { scatterColsImpl(o, s, idx, R, C, k, acc); } \
    extern "C" __global__ void seq_mean_##SO##_##SI(TO* o, const TI* x, const int* ks, int B, int T, int C) { seqMeanImpl(o, x, ks, B, T, C); }
FOR_2TYPES(SPARSE)

extern "C" __global__ void colsumsq_f32(float* part, const float* x, int R, int C, int rows) { colSumsqImpl(part, x, R, C, rows); }
extern "C" __global__ void colsumsq_bf16(float* part, const bf16* x, int R, int C, int rows) { colSumsqImpl(part, x, R, C, rows); }
extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, long n, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2, float gs) { adamwImpl(p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, gs); }
extern "C" __global__ void adamw_bf16(float* p, const bf16* g, float* m, float* v, long n, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2, float gs) { adamwImpl(p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, gs); }
