// Elementwise kernels: dtype conversion copy, axpy, scale, mul, sum of squares, dropout, random normal fill and SwiGLU
// (forward and backward). Every kernel takes a `vec` flag: when the host has checked that every
// pointer is 16-byte aligned and n is a multiple of 8, elements move 8 at a time (one 16-byte load
// per bf16 group); otherwise a scalar grid-stride loop runs. Math is fp32 whatever the storage.
#include "common.cuh"

template <typename TO, typename TI>
__device__ void copyImpl(TO* dst, const TI* src, long n, int vec) {
    if (vec) {
        GRID_LOOP(g, n / 8) { float v[8]; ld8(src, g * 8, v); st8(dst, g * 8, v); }
    } else {
        GRID_LOOP(i, n) st(dst, i, ld(src, i));
    }
}

template <typename TY, typename TX>
__device__ void axpyImpl(TY* y, float a, const TX* x, long n, int vec) {
    if (vec) {
        GRID_LOOP(g, n / 8) {
            float vy[8], vx[8];
            ld8(y, g * 8, vy); ld8(x, g * 8, vx);
#pragma unroll
            for (int j = 0; j < 8; j++) vy[j] = fmaf(a, vx[j], vy[j]);
            st8(y, g * 8, vy);
        }
    } else {
        GRID_LOOP(i, n) st(y, i, fmaf(a, ld(x, i), ld(y, i)));
    }
}

template <typename T>
__device__ void scaleImpl(T* t, float s, long n, int vec) {
    if (vec) {
        GRID_LOOP(g, n / 8) {
            float v[8]; ld8(t, g * 8, v);
#pragma unroll
            for (int j = 0; j < 8; j++) v[j] *= s;
            st8(t, g * 8, v);
        }
    } else {
        GRID_LOOP(i, n) st(t, i, ld(t, i) * s);
    }
}

template <typename TO, typename TA, typename TB>
__device__ void mulImpl(TO* out, const TA* a, const TB* b, long n, int vec) {
    if (vec) {
        GRID_LOOP(g, n / 8) {
            float va[8], vb[8];
            ld8(a, g * 8, va); ld8(b, g * 8, vb);
#pragma unroll
            for (int j = 0; j < 8; j++) va[j] *= vb[j];
            st8(out, g * 8, va);
        }
    } else {
        GRID_LOOP(i, n) st(out, i, ld(a, i) * ld(b, i));
    }
}

// Σx² of one tensor added into *acc (double, so many tensors and many blocks sum without fp32 loss).
template <typename T>
__device__ void sumsqImpl(double* acc, const T* x, long n, int vec) {
    float s = 0.f;
    if (vec) {
        GRID_LOOP(g, n / 8) {
            float v[8]; ld8(x, g * 8, v);
#pragma unroll
            for (int j = 0; j < 8; j++) s = fmaf(v[j], v[j], s);
        }
    } else {
        GRID_LOOP(i, n) { float v = ld(x, i); s = fmaf(v, v, s); }
    }
    s = blockSum(s);
    if (threadIdx.x == 0) atomicAdd(acc, (double)s);
}

// The dropout mask of element i, the CPU backend's rule: splitmix64's mix of
// seed·γ + i·c1 + c2, top 24 bits as a uniform u in [0,1); the element is kept when u >= p.
__device__ __forceinline__ float dropoutUniform(unsigned long long seed, long i) {
    unsigned long long z = seed * 0x9E3779B97F4A7C15ull + (unsigned long long)i * 0xBF58476D1CE4E5B9ull + 0x94D049BB133111EBull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

// A standard normal sample for element i (CounterRng.normal on the host): the same 64-bit mix as
// dropoutUniform, u1 in (0,1] from its top 24 bits, u2 in [0,1) from the next 24, Box–Muller.
template <typename T>
__device__ void randnImpl(T* t, long n, unsigned long long seed, float mean, float sd) {
    GRID_LOOP(i, n) {
        unsigned long long z = seed * 0x9E3779B97F4A7C15ull + (unsigned long long)i * 0xBF58476D1CE4E5B9ull + 0x94D049BB133111EBull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        float u1 = (float)((z >> 40) + 1) * (1.0f / 16777216.0f);
        float u2 = (float)((z >> 16) & 0xFFFFFFull) * (1.0f / 16777216.0f);
        st(t, i, mean + sd * (sqrtf(-2.0f * logf(u1)) * cosf(6.2831855f * u2)));
    }
}

template <typename TO, typename TI>
__device__ void dropoutImpl(TO* out, const TI* x, float p, unsigned long long seed, long n) {
    float inv = 1.f / (1.f - p);
    GRID_LOOP(i, n) st(out, i, dropoutUniform(seed, i) >= p ? ld(x, i) * inv : 0.f);
}

__device__ __forceinline__ float sigmoidf(float g) { return 1.f / (1.f + __expf(-g)); }

template <typename T>
__device__ void swigluImpl(T* out, const T* gate, const T* up, long n, int vec) {
    if (vec) {
        GRID_LOOP(gi, n / 8) {
            float g[8], u[8];
            ld8(gate, gi * 8, g); ld8(up, gi * 8, u);
#pragma unroll
            for (int j = 0; j < 8; j++) g[j] = g[j] * sigmoidf(g[j]) * u[j];
            st8(out, gi * 8, g);
        }
    } else {
        GRID_LOOP(i, n) { float g = ld(gate, i); st(out, i, g * sigmoidf(g) * ld(up, i)); }
    }
}

// d/dg silu(g) = σ(g)·(1 + g·(1−σ(g))). dgate/dup may alias gate/up: each element is read before written.
template <typename T>
__device__ void swigluBwdImpl(T* dgate, T* dup, const T* dout, const T* gate, const T* up, long n, int vec) {
    if (vec) {
        GRID_LOOP(gi, n / 8) {
            float g[8], u[8], d[8], dg[8], du[8];
            ld8(gate, gi * 8, g); ld8(up, gi * 8, u); ld8(dout, gi * 8, d);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float s = sigmoidf(g[j]);
                du[j] = d[j] * g[j] * s;
                dg[j] = d[j] * u[j] * s * (1.f + g[j] * (1.f - s));
            }
            st8(dgate, gi * 8, dg); st8(dup, gi * 8, du);
        }
    } else {
        GRID_LOOP(i, n) {
            float g = ld(gate, i), u = ld(up, i), d = ld(dout, i), s = sigmoidf(g);
            st(dup, i, d * g * s);
            st(dgate, i, d * u * s * (1.f + g * (1.f - s)));
        }
    }
}

#define FOR_2TYPES(M) M(f32, f32, float, float) M(f32, bf16, float, bf16) M(bf16, f32, bf16, float) M(bf16, bf16, bf16, bf16)

#define COPY(SO, SI, TO, TI) extern "C" __global__ void copy_##SO##_##SI(TO* d, const TI* s, long n, int vec) { copyImpl(d, s, n, vec); }
FOR_2TYPES(COPY)
#define AXPY(SO, SI, TO, TI) extern "C" __global__ void axpy_##SO##_##SI(TO* y, float a, const TI* x, long n, int vec) { axpyImpl(y, a, x, n, vec); }
FOR_2TYPES(AXPY)
#define DROPOUT(SO, SI, TO, TI) extern "C" __global__ void dropout_##SO##_##SI(TO* o, const TI* x, float p, unsigned long long seed, long n) { dropoutImpl(o, x, p, seed, n); }
FOR_2TYPES(DROPOUT)

extern "C" __global__ void randn_f32(float* t, long n, unsigned long long seed, float mean, float sd) { randnImpl(t, n, seed, mean, sd); }
extern "C" __global__ void randn_bf16(bf16* t, long n, unsigned long long seed, float mean, float sd) { randnImpl(t, n, seed, mean, sd); }
extern "C" __global__ void scale_f32(float* t, float s, long n, int vec) { scaleImpl(t, s, n, vec); }
extern "C" __global__ void scale_bf16(bf16* t, float s, long n, int vec) { scaleImpl(t, s, n, vec); }
extern "C" __global__ void sumsq_f32(double* acc, const float* x, long n, int vec) { sumsqImpl(acc, x, n, vec); }
extern "C" __global__ void sumsq_bf16(double* acc, const bf16* x, long n, int vec) { sumsqImpl(acc, x, n, vec); }
extern "C" __global__ void swiglu_f32(float* o, const float* g, const float* u, long n, int vec) { swigluImpl(o, g, u, n, vec); }
extern "C" __global__ void swiglu_bf16(bf16* o, const bf16* g, const bf16* u, long n, int vec) { swigluImpl(o, g, u, n, vec); }
extern "C" __global__ void swiglu_bwd_f32(float* dg, float* du, const float* d, const float* g, const float* u, long n, int vec) { swigluBwdImpl(dg, du, d, g, u, n, vec); }
extern "C" __global__ void swiglu_bwd_bf16(bf16* dg, bf16* du, const bf16* d, const bf16* g, const bf16* u, long n, int vec) { swigluBwdImpl(dg, du, d, g, u, n, vec); }

#define MUL(SO, SA, SB, TO, TA, TB) extern "C" __global__ void mul_##SO##_##SA##_##SB(TO* o, const TA* a, const TB* b, long n, int vec) { mulImpl(o, a, b, n, vec); }
MUL(f32, f32, f32, float, float, float) MUL(f32, f32, bf16, float, float, bf16) MUL(f32, bf16, f32, float, bf16, float) MUL(f32, bf16, bf16, float, bf16, bf16)
MUL(bf16, f32, f32, bf16, float, float) MUL(bf16, f32, bf16, bf16, float, bf16) MUL(bf16, bf16, f32, bf16, bf16, float) MUL(bf16, bf16, bf16, bf16, bf16, bf16)

// ---- the full-width sparse MLP's joined passes (Backend.swigluJoin / swigluBackwardJoin)

// The value v as stored in T (so a sum written back and used in the same pass is used as stored).
__device__ __forceinline__ float asStored(const float*, float v) { return v; }
__device__ __forceinline__ float asStored(const bf16*, float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// Row slot i < nAdd is row addRows[i] (its rows in addG/addU/hAdd are row i), slot nAdd + i is
// plainRows[i] (row i of keptG/keptU/hKept, whose column j is row column keptCols[j]). With k > 0 kept
// columns each block first builds, in shared memory, the inverse of keptCols (pos[c] = 1 + the
// position of column c, 0 = not kept; C 16-bit entries, so C ≤ 24K on the default 48 KiB), and a
// plain row's 8 elements then look their positions up with one 16-byte shared load. vec: C % 8 == 0
// and every pointer 16-byte aligned; a thread then owns 8 consecutive elements of one row (without
// vec, one). hAdd may be addG and hKept keptG: each thread reads its elements before writing them.
extern "C" __constant__ int swiglu_join_smem_entry_bytes = sizeof(unsigned short);  // per column of the kept map (host: Kernels.constant)
__device__ __forceinline__ unsigned short* keptMap(const int* keptCols, int k, int C) {
    extern __shared__ __align__(16) unsigned char smemRaw[];
    unsigned short* pos = reinterpret_cast<unsigned short*>(smemRaw);
    if (k > 0) {
        for (int c = threadIdx.x; c < C; c += blockDim.x) pos[c] = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < k; j += blockDim.x) { int c = keptCols[j]; if (c >= 0 && c < C) pos[c] = (unsigned short)(j + 1); }
        __syncthreads();
    }
    return pos;
}

__device__ __forceinline__ void keptPositions(const unsigned short* pos, int c0, int vec, int* p) {
    if (vec) {
        uint4 pk = *reinterpret_cast<const uint4*>(pos + c0);
        const unsigned short* p8 = reinterpret_cast<const unsigned short*>(&pk);
#pragma unroll
        for (int j = 0; j < 8; j++) p[j] = p8[j];
    } else {
        p[0] = pos[c0];
    }
}

// W consecutive elements (W = 8: one 16-byte access; W = 1: one element), fixed at compile time so
// the per-thread arrays stay in registers.
template <int W, typename T> __device__ __forceinline__ void ldW(const T* p, long i, float* v) {
    if constexpr (W == 8) ld8(p, i, v); else v[0] = ld(p, i);
}
template <int W, typename T> __device__ __forceinline__ void stW(T* p, long i, const float* v) {
    if constexpr (W == 8) st8(p, i, v); else st(p, i, v[0]);
}

// Unit e of a joined pass (per units a row slot, W elements a unit): its slot i, first column c0,
// whether it is an add row, and the row r of g/u the slot names (addRows[i], or plainRows[i - nAdd]);
// false when r is outside [0, R) (the unit is skipped). E is the unit counter's type: long in the
// W = 1 paths, int in the 8-wide ones (whose unit count the host checks fits).
template <int W, typename E>
__device__ __forceinline__ bool joinUnit(E e, int per, int nAdd, const int* addRows, const int* plainRows, int R,
                                         int& i, int& c0, bool& add, int& r) {
    i = (int)(e / per);
    c0 = (int)(e - (E)i * per) * W;
    add = i < nAdd;
    r = add ? addRows[i] : plainRows[i - nAdd];
    return r >= 0 && r < R;
}

template <typename T, int W>
__device__ void swigluJoinImpl(T* h, T* g, T* u, const T* addG, const T* addU, const int* addRows, T* hAdd,
                               const int* plainRows, const T* keptG, const T* keptU, const int* keptCols, T* hKept,
                               int nAdd, int nPlain, int k, int R, int C) {
    const unsigned short* pos = keptMap(keptCols, k, C);
    const int per = C / W, w = W, vec = W == 8;
    GRID_LOOP(e, (long)(nAdd + nPlain) * per) {
        int i, c0, r;
        bool add;
        if (!joinUnit<W>(e, per, nAdd, addRows, plainRows, R, i, c0, add, r)) continue;
        int ip = i - nAdd;
        long o = (long)r * C + c0, a = (long)i * C + c0, kr = (long)ip * k;
        float gv[8], uv[8], hv[8];
        int p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        ldW<W>(g, o, gv); ldW<W>(u, o, uv);
        bool wrote = false;
        if (add) {
            float ag[8], au[8];
            ldW<W>(addG, a, ag); ldW<W>(addU, a, au);
#pragma unroll
            for (int j = 0; j < w; j++) { gv[j] = asStored(g, gv[j] + ag[j]); uv[j] = asStored(u, uv[j] + au[j]); }
            wrote = true;
        } else if (k > 0) {
            keptPositions(pos, c0, vec, p);
#pragma unroll
            for (int j = 0; j < w; j++)
                if (p[j]) {
                    gv[j] = asStored(g, gv[j] + ld(keptG, kr + p[j] - 1));
                    uv[j] = asStored(u, uv[j] + ld(keptU, kr + p[j] - 1));
                    wrote = true;
                }
        }
#pragma unroll
        for (int j = 0; j < w; j++) hv[j] = gv[j] * sigmoidf(gv[j]) * uv[j];
        if (wrote) { stW<W>(g, o, gv); stW<W>(u, o, uv); }
        stW<W>(h, o, hv);
        if (add) stW<W>(hAdd, a, hv);
        if (hKept != nullptr) {
#pragma unroll
            for (int j = 0; j < w; j++) if (p[j]) st(hKept, kr + p[j] - 1, hv[j]);
        }
    }
}

// Backward: d = dh[r] plus addDh[i] (add rows) or keptDh at the kept columns (plain rows; keptDh may
// be null), as stored; then swiglu's backward. The add rows' dg/du also go to dgAdd/duAdd row i, the
// plain rows' kept columns to dgKept/duKept (may be null). dh is only read.
template <typename T, int W>
__device__ void swigluBwdJoinImpl(T* dg, T* du, const T* dh, const T* g, const T* u, const T* addDh, const int* addRows,
                                  T* dgAdd, T* duAdd, const int* plainRows, const T* keptDh, const int* keptCols,
                                  T* dgKept, T* duKept, int nAdd, int nPlain, int k, int R, int C) {
    const unsigned short* pos = keptMap(keptCols, k, C);
    const int per = C / W, w = W, vec = W == 8;
    GRID_LOOP(e, (long)(nAdd + nPlain) * per) {
        int i, c0, r;
        bool add;
        if (!joinUnit<W>(e, per, nAdd, addRows, plainRows, R, i, c0, add, r)) continue;
        int ip = i - nAdd;
        long o = (long)r * C + c0, a = (long)i * C + c0, kr = (long)ip * k;
        float gv[8], uv[8], d[8], dgv[8], duv[8];
        int p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        ldW<W>(g, o, gv); ldW<W>(u, o, uv); ldW<W>(dh, o, d);
        if (add) {
            float ad[8];
            ldW<W>(addDh, a, ad);
#pragma unroll
            for (int j = 0; j < w; j++) d[j] = asStored(dh, d[j] + ad[j]);
        } else if (k > 0) {
            keptPositions(pos, c0, vec, p);
            if (keptDh != nullptr) {
#pragma unroll
                for (int j = 0; j < w; j++) if (p[j]) d[j] = asStored(dh, d[j] + ld(keptDh, kr + p[j] - 1));
            }
        }
#pragma unroll
        for (int j = 0; j < w; j++) {
            float s = sigmoidf(gv[j]);
            duv[j] = d[j] * gv[j] * s;
            dgv[j] = d[j] * uv[j] * s * (1.f + gv[j] * (1.f - s));
        }
        stW<W>(dg, o, dgv); stW<W>(du, o, duv);
        if (add) { stW<W>(dgAdd, a, dgv); stW<W>(duAdd, a, duv); }
        if (dgKept != nullptr) {
#pragma unroll
            for (int j = 0; j < w; j++)
                if (p[j]) { st(dgKept, kr + p[j] - 1, dgv[j]); st(duKept, kr + p[j] - 1, duv[j]); }
        }
    }
}

// The 8-wide paths of the two joined kernels, written to keep few registers live: 8 elements stay
// packed as stored (bf16: one 16-byte register quad) and are unpacked one at a time; indices are
// 32-bit (the host checks that the unit count fits). Same semantics as the W = 1 paths above.
// Measured on the H200 (8B shape, 28 sparse layers, synced per op): 6.2 / 6.8 ms per step for the
// forward / backward join against 6.4 / 6.3 ms for the first (unpacked, 56/64-register) version;
// whole step 141.5 vs 142.1 ms, within run-to-run noise. Both move 0.5 / 0.7 GB per call at
// ~2.3 / ~3 TB/s: the forward is the one with headroom left.
template <typename T> struct Pack8;
template <> struct Pack8<bf16> {
    uint4 r;
    __device__ __forceinline__ void load(const bf16* p, long i) { r = *reinterpret_cast<const uint4*>(p + i); }
    __device__ __forceinline__ void store(bf16* p, long i) const { *reinterpret_cast<uint4*>(p + i) = r; }
    __device__ __forceinline__ float get(int j) const { return __bfloat162float(reinterpret_cast<const bf16*>(&r)[j]); }
    __device__ __forceinline__ void set(int j, float v) { reinterpret_cast<bf16*>(&r)[j] = __float2bfloat16_rn(v); }
};
template <> struct Pack8<float> {
    float4 a, b;
    __device__ __forceinline__ void load(const float* p, long i) { a = *reinterpret_cast<const float4*>(p + i); b = *reinterpret_cast<const float4*>(p + i + 4); }
    __device__ __forceinline__ void store(float* p, long i) const { *reinterpret_cast<float4*>(p + i) = a; *reinterpret_cast<float4*>(p + i + 4) = b; }
    __device__ __forceinline__ float get(int j) const { return j < 4 ? (&a.x)[j] : (&b.x)[j - 4]; }
    __device__ __forceinline__ void set(int j, float v) { if (j < 4) (&a.x)[j] = v; else (&b.x)[j - 4] = v; }
};

__device__ __forceinline__ bool anyKept(const uint4& pk) { return (pk.x | pk.y | pk.z | pk.w) != 0u; }

template <typename T>
__device__ void swigluJoinVec(T* h, T* g, T* u, const T* addG, const T* addU, const int* addRows, T* hAdd,
                              const int* plainRows, const T* keptG, const T* keptU, const int* keptCols, T* hKept,
                              int nAdd, int nPlain, int k, int R, int C) {
    const unsigned short* pos = keptMap(keptCols, k, C);
    const int per = C >> 3, units = (nAdd + nPlain) * per, stride = gridDim.x * blockDim.x;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < units; e += stride) {
        int i, c0, r;
        bool add;
        if (!joinUnit<8>(e, per, nAdd, addRows, plainRows, R, i, c0, add, r)) continue;
        long o = (long)r * C + c0;
        Pack8<T> gp, up, hp;
        gp.load(g, o); up.load(u, o);
        if (add) {
            long a = (long)i * C + c0;
            Pack8<T> ap, bp;
            ap.load(addG, a); bp.load(addU, a);
#pragma unroll
            for (int j = 0; j < 8; j++) { gp.set(j, gp.get(j) + ap.get(j)); up.set(j, up.get(j) + bp.get(j)); }
            gp.store(g, o); up.store(u, o);
#pragma unroll
            for (int j = 0; j < 8; j++) { float gv = gp.get(j); hp.set(j, gv * sigmoidf(gv) * up.get(j)); }
            hp.store(h, o);
            hp.store(hAdd, a);
            continue;
        }
        uint4 pk = make_uint4(0u, 0u, 0u, 0u);
        if (k > 0) pk = *reinterpret_cast<const uint4*>(pos + c0);
        const unsigned short* p8 = reinterpret_cast<const unsigned short*>(&pk);
        long kr = (long)(i - nAdd) * k - 1;                   // row i's kept value at 1-based position p: kr + p
        bool any = anyKept(pk);
        if (any) {
#pragma unroll
            for (int j = 0; j < 8; j++)
                if (p8[j]) { gp.set(j, gp.get(j) + ld(keptG, kr + p8[j])); up.set(j, up.get(j) + ld(keptU, kr + p8[j])); }
            gp.store(g, o); up.store(u, o);
        }
#pragma unroll
        for (int j = 0; j < 8; j++) { float gv = gp.get(j); hp.set(j, gv * sigmoidf(gv) * up.get(j)); }
        hp.store(h, o);
        if (any && hKept != nullptr) {
#pragma unroll
            for (int j = 0; j < 8; j++) if (p8[j]) st(hKept, kr + p8[j], hp.get(j));
        }
    }
}

template <typename T>
__device__ void swigluBwdJoinVec(T* dg, T* du, const T* dh, const T* g, const T* u, const T* addDh, const int* addRows,
                                 T* dgAdd, T* duAdd, const int* plainRows, const T* keptDh, const int* keptCols,
                                 T* dgKept, T* duKept, int nAdd, int nPlain, int k, int R, int C) {
    const unsigned short* pos = keptMap(keptCols, k, C);
    const int per = C >> 3, units = (nAdd + nPlain) * per, stride = gridDim.x * blockDim.x;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < units; e += stride) {
        int i, c0, r;
        bool add;
        if (!joinUnit<8>(e, per, nAdd, addRows, plainRows, R, i, c0, add, r)) continue;
        long o = (long)r * C + c0, a = (long)i * C + c0, kr = (long)(i - nAdd) * k - 1;
        Pack8<T> gp, up, dp, gq, uq;
        gp.load(g, o); up.load(u, o); dp.load(dh, o);
        uint4 pk = make_uint4(0u, 0u, 0u, 0u);
        if (add) {
            Pack8<T> ap;
            ap.load(addDh, a);
#pragma unroll
            for (int j = 0; j < 8; j++) dp.set(j, dp.get(j) + ap.get(j));
        } else if (k > 0) {
            pk = *reinterpret_cast<const uint4*>(pos + c0);
        }
        const unsigned short* p8 = reinterpret_cast<const unsigned short*>(&pk);
        bool any = anyKept(pk);
        if (any && keptDh != nullptr) {
#pragma unroll
            for (int j = 0; j < 8; j++) if (p8[j]) dp.set(j, dp.get(j) + ld(keptDh, kr + p8[j]));
        }
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float gv = gp.get(j), uv = up.get(j), d = dp.get(j), s = sigmoidf(gv);
            uq.set(j, d * gv * s);
            gq.set(j, d * uv * s * (1.f + gv * (1.f - s)));
        }
        gq.store(dg, o); uq.store(du, o);
        if (add) { gq.store(dgAdd, a); uq.store(duAdd, a); }
        else if (any && dgKept != nullptr) {
#pragma unroll
            for (int j = 0; j < 8; j++) if (p8[j]) { st(dgKept, kr + p8[j], gq.get(j)); st(duKept, kr + p8[j], uq.get(j)); }
        }
    }
}

#define SWIGLU_JOIN(S, T) \
    extern "C" __global__ void swiglu_join_##S(T* h, T* g, T* u, const T* ag, const T* au, const int* ar, T* ha, const int* pr, \
                                               const T* kg, const T* ku, const int* kc, T* hk, int nAdd, int nPlain, int k, int R, int C, int vec) { \
        if (vec) swigluJoinVec<T>(h, g, u, ag, au, ar, ha, pr, kg, ku, kc, hk, nAdd, nPlain, k, R, C); \
        else swigluJoinImpl<T, 1>(h, g, u, ag, au, ar, ha, pr, kg, ku, kc, hk, nAdd, nPlain, k, R, C); } \
    extern "C" __global__ void swiglu_bwd_join_##S(T* dg, T* du, const T* dh, const T* g, const T* u, const T* ad, const int* ar, T* dga, T* dua, \
                                                   const int* pr, const T* kd, const int* kc, T* dgk, T* duk, int nAdd, int nPlain, int k, int R, int C, int vec) { \
        if (vec) swigluBwdJoinVec<T>(dg, du, dh, g, u, ad, ar, dga, dua, pr, kd, kc, dgk, duk, nAdd, nPlain, k, R, C); \
        else swigluBwdJoinImpl<T, 1>(dg, du, dh, g, u, ad, ar, dga, dua, pr, kd, kc, dgk, duk, nAdd, nPlain, k, R, C); }
SWIGLU_JOIN(f32, float)
SWIGLU_JOIN(bf16, bf16)
