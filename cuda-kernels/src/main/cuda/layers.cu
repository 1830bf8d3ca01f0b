// Row-wise layer kernels: embedding lookup, RMSNorm (plain and fused with the residual add) and its
// backward, rotary embedding (HF rotate-half layout, both directions) and the fused softmax
// cross-entropy with in-place dlogits. One block per row; rows are read with 16-byte vector loads
// when the host says every row start is 16-byte aligned (`vec`). Statistics are fp32. Then the
// column-wise weight gradients of the norm and the embedding (full-parameter training).
#include "common.cuh"

// out[n,:] = table[ids[n],:]; an id outside [0,V) writes NaN so the mistake is visible downstream.
template <typename TO, typename TT>
__device__ void embeddingImpl(TO* out, const int* ids, const TT* table, int V, int C, int vec) {
    long n = blockIdx.x;
    int id = ids[n];
    TO* o = out + n * (long)C;
    if (id < 0 || id >= V) {
        for (int c = threadIdx.x; c < C; c += blockDim.x) st(o, c, __int_as_float(0x7fc00000));
        return;
    }
    const TT* t = table + (long)id * C;
    if (vec) {
        for (int g = threadIdx.x; g < C / 8; g += blockDim.x) { float v[8]; ld8(t, g * 8, v); st8(o, g * 8, v); }
    } else {
        for (int c = threadIdx.x; c < C; c += blockDim.x) st(o, c, ld(t, c));
    }
}

// rstd = 1/sqrt(mean(x²)+eps); out = x·rstd·w. With `delta` non-null the residual is first updated
// (x = xin + delta, rounded to its storage type; xin null = x itself, in place) and the norm reads the
// rounded value, so the stored residual and the normalised output agree exactly.
template <typename T, typename TW>
__device__ void rmsnormImpl(T* out, float* rstd, T* x, const T* xin, const T* delta, const TW* w, int C, float eps, int vec) {
    long row = blockIdx.x;
    T* xr = x + row * C;
    const T* xi = (xin ? xin : x) + row * C;
    T* orow = out + row * C;
    const T* dr = delta ? delta + row * C : nullptr;
    float s = 0.f;
    constexpr int NG = 4;  // row cached in registers when it fits: x is read from memory once
    if (vec && C / 8 <= NG * (int)blockDim.x) {
        float v[NG][8];
#pragma unroll
        for (int gi = 0; gi < NG; gi++) {
            int g = threadIdx.x + gi * blockDim.x;
            if (g < C / 8) {
                ld8(xi, g * 8, v[gi]);
                if (dr) {
                    float d[8]; ld8(dr, g * 8, d);
#pragma unroll
                    for (int j = 0; j < 8; j++) v[gi][j] += d[j];
                    st8(xr, g * 8, v[gi]);
#pragma unroll
                    for (int j = 0; j < 8; j++) v[gi][j] = ld(xr, g * 8 + j);  // the rounded value (this thread's own store)
                }
#pragma unroll
                for (int j = 0; j < 8; j++) s = fmaf(v[gi][j], v[gi][j], s);
            }
        }
        s = blockSum(s);
        float r = rsqrtf(s / C + eps);
        if (threadIdx.x == 0) rstd[row] = r;
#pragma unroll
        for (int gi = 0; gi < NG; gi++) {
            int g = threadIdx.x + gi * blockDim.x;
            if (g < C / 8) {
                float wv[8]; ld8(w, g * 8, wv);
#pragma unroll
                for (int j = 0; j < 8; j++) v[gi][j] = v[gi][j] * r * wv[j];
                st8(orow, g * 8, v[gi]);
            }
        }
        return;
    }
    if (vec) {
        for (int g = threadIdx.x; g < C / 8; g += blockDim.x) {
            float v[8]; ld8(xi, g * 8, v);
            if (dr) {
                float d[8]; ld8(dr, g * 8, d);
#pragma unroll
                for (int j = 0; j < 8; j++) v[j] += d[j];
                st8(xr, g * 8, v);
                ld8(xr, g * 8, v);  // the rounded value
            }
#pragma unroll
            for (int j = 0; j < 8; j++) s = fmaf(v[j], v[j], s);
        }
    } else {
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float v = ld(xi, c);
            if (dr) { st(xr, c, v + ld(dr, c)); v = ld(xr, c); }
            s = fmaf(v, v, s);
        }
    }
    s = blockSum(s);
    float r = rsqrtf(s / C + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    if (vec) {
        for (int g = threadIdx.x; g < C / 8; g += blockDim.x) {
            float v[8], wv[8];
            ld8(xr, g * 8, v); ld8(w, g * 8, wv);
#pragma unroll
            for (int j = 0; j < 8; j++) v[j] = v[j] * r * wv[j];
            st8(orow, g * 8, v);
        }
    } else {
        for (int c = threadIdx.x; c < C; c += blockDim.x) st(orow, c, ld(xr, c) * r * ld(w, c));
    }
}

// dx = r·g − x·r³·mean(g·x), g = dout ⊙ w (w frozen: no dweight). dx may alias dout.
template <typename T, typename TW>
__device__ void rmsnormBwdImpl(T* dx, const T* dout, const T* x, const TW* w, const float* rstd, int C, int acc, int vec) {
    long row = blockIdx.x;
    const T* xr = x + row * C;
    const T* dr = dout + row * C;
    T* dxr = dx + row * C;
    float r = rstd[row];
    float dot = 0.f;
    constexpr int NG = 4;
    if (vec && C / 8 <= NG * (int)blockDim.x) {  // x and dout·w cached in registers: one read of each
        float xv[NG][8], gv[NG][8];
#pragma unroll
        for (int gi = 0; gi < NG; gi++) {
            int g = threadIdx.x + gi * blockDim.x;
            if (g < C / 8) {
                float wv[8];
                ld8(xr, g * 8, xv[gi]); ld8(dr, g * 8, gv[gi]); ld8(w, g * 8, wv);
#pragma unroll
                for (int j = 0; j < 8; j++) { gv[gi][j] *= wv[j]; dot = fmaf(gv[gi][j], xv[gi][j], dot); }
            }
        }
        dot = blockSum(dot);
        float k = r * r * r * dot / C;
#pragma unroll
        for (int gi = 0; gi < NG; gi++) {
            int g = threadIdx.x + gi * blockDim.x;
            if (g < C / 8) {
                float o[8];
                if (acc) ld8(dxr, g * 8, o);
#pragma unroll
                for (int j = 0; j < 8; j++) o[j] = (acc ? o[j] : 0.f) + r * gv[gi][j] - xv[gi][j] * k;
                st8(dxr, g * 8, o);
            }
        }
        return;
    }
    if (vec) {
        for (int g = threadIdx.x; g < C / 8; g += blockDim.x) {
            float xv[8], dv[8], wv[8];
            ld8(xr, g * 8, xv); ld8(dr, g * 8, dv); ld8(w, g * 8, wv);
#pragma unroll
            for (int j = 0; j < 8; j++) dot = fmaf(dv[j] * wv[j], xv[j], dot);
        }
    } else {
        for (int c = threadIdx.x; c < C; c += blockDim.x) dot = fmaf(ld(dr, c) * ld(w, c), ld(xr, c), dot);
    }
    dot = blockSum(dot);  // ends with a barrier-protected read: every thread has read dout before any write below
    float k = r * r * r * dot / C;
    if (vec) {
        for (int g = threadIdx.x; g < C / 8; g += blockDim.x) {
            float xv[8], dv[8], wv[8], o[8];
            ld8(xr, g * 8, xv); ld8(dr, g * 8, dv); ld8(w, g * 8, wv);
            if (acc) ld8(dxr, g * 8, o);
#pragma unroll
            for (int j = 0; j < 8; j++) o[j] = (acc ? o[j] : 0.f) + r * dv[j] * wv[j] - xv[j] * k;
            st8(dxr, g * 8, o);
        }
    } else {
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float v = r * ld(dr, c) * ld(w, c) - ld(xr, c) * k;
            st(dxr, c, acc ? ld(dxr, c) + v : v);
        }
    }
}

// In-place rotation of x (N, H·D): pair (i, i+D/2) of each head rotated by ±θ(pos, i).
template <typename T>
__device__ void ropeImpl(T* x, const int* pos, const float* cosT, const float* sinT, int N, int H, int D, int inverse) {
    int half = D / 2;
    long total = (long)N * H * half;
    GRID_LOOP(t, total) {
        int i = (int)(t % half);
        long nh = t / half;
        long n = nh / H;
        int h = (int)(nh % H);
        long base = n * (long)H * D + (long)h * D;
        long p = pos[n];
        float c = cosT[p * half + i], s = sinT[p * half + i];
        if (inverse) s = -s;
        float x1 = ld(x, base + i), x2 = ld(x, base + i + half);
        st(x, base + i, x1 * c - x2 * s);
        st(x, base + i + half, x2 * c + x1 * s);
    }
}

// RoPE on a layer's q (N, Hq·D) and k (N, Hkv·D) in one launch: work item (token n, head h of the
// Hq + Hkv heads, 8-pair chunk c), chunk fastest so a warp covers whole head halves with 16-byte
// accesses. vec (D % 16 == 0, q, k, cos, sin 16-byte aligned): each thread moves x[i..i+8) and
// x[i+D/2..i+D/2+8) and the 8 matching cos/sin entries as vectors; otherwise one pair per item.
// Arithmetic is ropeImpl's, so the result matches two rope calls.
template <typename T>
__device__ void ropeQkImpl(T* q, T* k, const int* pos, const float* cosT, const float* sinT, int N, int Hq, int Hkv, int D,
                           int inverse, int vec) {
    int half = D / 2, H = Hq + Hkv, per = vec ? half / 8 : half;
    long total = (long)N * H * per;
    GRID_LOOP(t, total) {
        int c = (int)(t % per);
        long nh = t / per;
        int h = (int)(nh % H);
        long n = nh / H;
        T* row = h < Hq ? q + (n * Hq + h) * (long)D : k + (n * Hkv + (h - Hq)) * (long)D;
        long p = pos[n];
        if (vec) {
            int i = c * 8;
            float x1[8], x2[8], cs[8], sn[8];
            ld8(row, i, x1); ld8(row, i + half, x2);
            ld8(cosT, p * half + i, cs); ld8(sinT, p * half + i, sn);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float s = inverse ? -sn[j] : sn[j], a = x1[j], b = x2[j];
                x1[j] = a * cs[j] - b * s;
                x2[j] = b * cs[j] + a * s;
            }
            st8(row, i, x1); st8(row, i + half, x2);
        } else {
            float cv = cosT[p * half + c], s = sinT[p * half + c];
            if (inverse) s = -s;
            float a = ld(row, c), b = ld(row, c + half);
            st(row, c, a * cv - b * s);
            st(row, c + half, b * cv + a * s);
        }
    }
}

// One row of logits per block: lse by max + Σexp, loss = lse − logit[target],
// dlogits = gradScale·(softmax − onehot). target −100: loss 0 and a zero row; another target outside
// [0,V): loss NaN. dlogits may be the logits buffer itself (each element is read, then written, by
// the same thread after the reductions).
template <typename TL, typename TD>
__device__ void crossEntropyImpl(float* losses, TD* dlogits, const TL* logits, const int* targets, int V, float gradScale, int vec) {
    long row = blockIdx.x;
    const TL* l = logits + row * (long)V;
    TD* d = dlogits + row * (long)V;
    int tgt = targets[row];
    if (tgt == -100) {
        if (vec) {
            float z[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int g = threadIdx.x; g < V / 8; g += blockDim.x) st8(d, g * 8, z);
        } else {
            for (int c = threadIdx.x; c < V; c += blockDim.x) st(d, c, 0.f);
        }
        if (threadIdx.x == 0) losses[row] = 0.f;
        return;
    }
    // one pass: each thread keeps a running max m and a sum s of exp(x − m) (online softmax)
    float m = -INFINITY, s = 0.f;
    if (vec) {
        for (int g = threadIdx.x; g < V / 8; g += blockDim.x) {
            float v[8]; ld8(l, g * 8, v);
            float m8 = v[0];
#pragma unroll
            for (int j = 1; j < 8; j++) m8 = fmaxf(m8, v[j]);
            if (m8 > m) { s *= __expf(m - m8); m = m8; }
#pragma unroll
            for (int j = 0; j < 8; j++) s += __expf(v[j] - m);
        }
    } else {
        for (int c = threadIdx.x; c < V; c += blockDim.x) {
            float v = ld(l, c);
            if (v > m) { s *= __expf(m - v); m = v; }
            s += __expf(v - m);
        }
    }
    float mThread = m;
    m = blockMax(m);
    s = blockSum(mThread == -INFINITY ? 0.f : s * __expf(mThread - m));
    float lse = m + logf(s);
    bool valid = tgt >= 0 && tgt < V;
    float tl = valid ? ld(l, tgt) : 0.f;
    __syncthreads();  // the target logit is read by all before any thread overwrites it in place
    if (threadIdx.x == 0) losses[row] = valid ? lse - tl : __int_as_float(0x7fc00000);
    if (vec) {
        for (int g = threadIdx.x; g < V / 8; g += blockDim.x) {
            float v[8]; ld8(l, g * 8, v);
#pragma unroll
            for (int j = 0; j < 8; j++) v[j] = gradScale * (__expf(v[j] - lse) - (g * 8 + j == tgt ? 1.f : 0.f));
            st8(d, g * 8, v);
        }
    } else {
        for (int c = threadIdx.x; c < V; c += blockDim.x)
            st(d, c, gradScale * (__expf(ld(l, c) - lse) - (c == tgt ? 1.f : 0.f)));
    }
}

// Full-parameter training's weight gradients, deterministic (no atomics: each output element has
// one owning thread and a fixed summation order, so a replayed step gives the same bits).

// dw[c] += Σ_n dout[n,c]·x[n,c]·rstd[n] (the norm weight's gradient; dw F32). A block owns 32
// columns: 32 row lanes (threadIdx.x >> 5) walk the rows with a stride of 32, each summing its rows in
// order, then lane 0 adds the 32 partial sums in lane order. Warps read 32 adjacent columns of a row.
template <typename T>
__device__ void rmsnormWgradImpl(float* dw, const T* dout, const T* x, const float* rstd, int N, int C) {
    __shared__ float part[32][33];
    int tx = threadIdx.x & 31, ty = threadIdx.x >> 5, lanes = blockDim.x >> 5;
    int c = blockIdx.x * 32 + tx;
    float s = 0.f;
    if (c < C)
        for (int n = ty; n < N; n += lanes) s = fmaf(ld(dout, (long)n * C + c) * ld(x, (long)n * C + c), rstd[n], s);
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && c < C) {
        float t = 0.f;
        for (int k = 0; k < lanes; k++) t += part[k][tx];
        dw[c] += t;
    }
}

// dtable[ids[n], c] += dout[n, c] for every n (the lookup's gradient; dtable F32). Sort-free row
// ownership: thread (column c, partition p) owns the elements (id, c) with id ≡ p (mod P), P =
// gridDim.y · (blockDim.x / 32), and walks n in order, so repeated ids add in token order (the CPU's
// order). A warp shares its partition: the id test is warp-uniform and its 32 columns are coalesced.
template <typename T>
__device__ void embeddingBwdImpl(float* dtable, const T* dout, const int* ids, int N, int V, int C) {
    int tx = threadIdx.x & 31, lanes = blockDim.x >> 5;
    int P = gridDim.y * lanes, p = blockIdx.y * lanes + (threadIdx.x >> 5);
    int c = blockIdx.x * 32 + tx;
    if (c >= C) return;
    for (int n = 0; n < N; n++) {
        int id = ids[n];
        if (id < 0 || id >= V || id % P != p) continue;   // the host checked the ids; a bad one adds nothing
        long o = (long)id * C + c;
        dtable[o] += ld(dout, (long)n * C + c);
    }
}

extern "C" __global__ void rmsnorm_wgrad_f32(float* dw, const float* dout, const float* x, const float* r, int N, int C) { rmsnormWgradImpl(dw, dout, x, r, N, C); }
extern "C" __global__ void rmsnorm_wgrad_bf16(float* dw, const bf16* dout, const bf16* x, const float* r, int N, int C) { rmsnormWgradImpl(dw, dout, x, r, N, C); }
extern "C" __global__ void embedding_bwd_f32(float* dt, const float* dout, const int* ids, int N, int V, int C) { embeddingBwdImpl(dt, dout, ids, N, V, C); }
extern "C" __global__ void embedding_bwd_bf16(float* dt, const bf16* dout, const int* ids, int N, int V, int C) { embeddingBwdImpl(dt, dout, ids, N, V, C); }

#define FOR_2TYPES(M) M(f32, f32, float, float) M(f32, bf16, float, bf16) M(bf16, f32, bf16, float) M(bf16, bf16, bf16, bf16)

#define EMB(SO, ST, TO, TT) extern "C" __global__ void embedding_##SO##_##ST(TO* o, const int* ids, const TT* t, int V, int C, int vec) { embeddingImpl(o, ids, t, V, C, vec); }
FOR_2TYPES(EMB)
// name: rmsnorm_<x dtype>_<weight dtype>
#define RMS(S, SW, T, TW) \
    extern "C" __global__ void rmsnorm_##S##_##SW(T* o, float* r, T* x, const TW* w, int C, float eps, int vec) { rmsnormImpl(o, r, x, (const T*)nullptr, (const T*)nullptr, w, C, eps, vec); } \
    extern "C" __global__ void add_rmsnorm_##S##_##SW(T* res, T* o, float* r, const T* d, const TW* w, int C, float eps, int vec) { rmsnormImpl(o, r, res, (const T*)nullptr, d, w, C, eps, vec); } \
    extern "C" __global__ void add_rmsnorm_to_##S##_##SW(T* res, const T* resIn, T* o, float* r, const T* d, const TW* w, int C, float eps, int vec) { rmsnormImpl(o, r, res, resIn, d, w, C, eps, vec); } \
    extern "C" __global__ void rmsnorm_bwd_##S##_##SW(T* dx, const T* dout, const T* x, const TW* w, const float* r, int C, int acc, int vec) { rmsnormBwdImpl(dx, dout, x, w, r, C, acc, vec); }
FOR_2TYPES(RMS)
// name: cross_entropy_<logits dtype>_<dlogits dtype>
#define CE(SL, SD, TL, TD) extern "C" __global__ void cross_entropy_##SL##_##SD(float* loss, TD* d, const TL* l, const int* t, int V, float gs, int vec) { crossEntropyImpl(loss, d, l, t, V, gs, vec); }
FOR_2TYPES(CE)

extern "C" __global__ void rope_f32(float* x, const int* p, const float* c, const float* s, int N, int H, int D, int inv) { ropeImpl(x, p, c, s, N, H, D, inv); }
extern "C" __global__ void rope_bf16(bf16* x, const int* p, const float* c, const float* s, int N, int H, int D, int inv) { ropeImpl(x, p, c, s, N, H, D, inv); }
extern "C" __global__ void rope_qk_f32(float* q, float* k, const int* p, const float* c, const float* s, int N, int Hq, int Hkv, int D, int inv, int vec) { ropeQkImpl(q, k, p, c, s, N, Hq, Hkv, D, inv, vec); }
extern "C" __global__ void rope_qk_bf16(bf16* q, bf16* k, const int* p, const float* c, const float* s, int N, int Hq, int Hkv, int D, int inv, int vec) { ropeQkImpl(q, k, p, c, s, N, Hq, Hkv, D, inv, vec); }
