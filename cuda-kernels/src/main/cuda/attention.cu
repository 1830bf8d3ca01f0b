// Causal GQA attention pieces around cuBLAS: layout changes between the token-major activations
// (N, H·D) and the head-major (B, H, T, D) bf16 layout the strided-batched GEMMs read (in it the G
// query heads of one KV group are one contiguous (G·T, D) matrix, so one GEMM batch entry serves a
// whole group), the fused masked softmax (causal + left-padding via keyStart, lse stash, rows with
// no visible key output 0), its backward, and a plain kernel for generation against a KV cache.
#include "common.cuh"

// dst (B,H,T,D) bf16 <- src (B·T, H·D). vec: D % 8 == 0 and both 16-byte aligned.
template <typename TI>
__device__ void toHeadsImpl(bf16* dst, const TI* src, int B, int T, int H, int D, int vec) {
    int w = vec ? 8 : 1;
    long total = (long)B * T * H * D / w;
    GRID_LOOP(e, total) {
        long i = e * w;                    // element index in src order (b, t, h, d)
        int d = (int)(i % D);
        long r = i / D;
        int h = (int)(r % H);
        long bt = r / H;
        long b = bt / T, t = bt % T;
        long o = ((b * H + h) * T + t) * D + d;
        if (vec) { float v[8]; ld8(src, i, v); st8(dst, o, v); }
        else st(dst, o, ld(src, i));
    }
}

// dst (B·T, H·D) <- src (B,H,T,D) bf16.
template <typename TO>
__device__ void fromHeadsImpl(TO* dst, const bf16* src, int B, int T, int H, int D, int vec) {
    int w = vec ? 8 : 1;
    long total = (long)B * T * H * D / w;
    GRID_LOOP(e, total) {
        long i = e * w;
        int d = (int)(i % D);
        long r = i / D;
        int h = (int)(r % H);
        long bt = r / H;
        long b = bt / T, t = bt % T;
        long o = ((b * H + h) * T + t) * D + d;
        if (vec) { float v[8]; ld8(src, o, v); st8(dst, i, v); }
        else st(dst, i, ld(src, o));
    }
}

// One block per score row (b, h, t) of S (B·H·T, T) fp32 (already scaled). Visible keys:
// keyStart[b] <= s <= t. P (bf16) = softmax over visible keys, 0 elsewhere; lse = log Σ exp
// (−inf for a row with no visible key, whose P row is all 0).
extern "C" __global__ void attn_softmax(bf16* P, float* lse, const float* S, const int* keyStart, int H, int T) {
    long row = blockIdx.x;
    int t = (int)(row % T);
    int b = (int)(row / ((long)H * T));
    int ks = keyStart[b];
    const float* s = S + row * T;
    bf16* p = P + row * T;
    float m = -INFINITY;
    for (int j = ks + threadIdx.x; j <= t; j += blockDim.x) m = fmaxf(m, s[j]);
    m = blockMax(m);
    if (m == -INFINITY) {  // no visible key (or a padding query row)
        for (int j = threadIdx.x; j < T; j += blockDim.x) p[j] = __float2bfloat16_rn(0.f);
        if (threadIdx.x == 0) lse[row] = -INFINITY;
        return;
    }
    float sum = 0.f;
    for (int j = ks + threadIdx.x; j <= t; j += blockDim.x) sum += __expf(s[j] - m);
    sum = blockSum(sum);
    float l = m + logf(sum);
    if (threadIdx.x == 0) lse[row] = l;
    for (int j = threadIdx.x; j < T; j += blockDim.x)
        p[j] = __float2bfloat16_rn(j >= ks && j <= t ? __expf(s[j] - l) : 0.f);
}

// Drow[(b,h,t)] = Σ_d dout[n, h·D+d]·out[n, h·D+d], one warp per row (token-major inputs).
template <typename T>
__device__ void rowDotImpl(float* Drow, const T* dout, const T* out, int B, int Tn, int H, int D) {
    long warp = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    long rows = (long)B * H * Tn;
    if (warp >= rows) return;
    int t = (int)(warp % Tn);
    long bh = warp / Tn;
    int h = (int)(bh % H);
    long b = bh / H;
    long base = (b * Tn + t) * (long)H * D + (long)h * D;
    float s = 0.f;
    for (int d = lane; d < D; d += 32) s = fmaf(ld(dout, base + d), ld(out, base + d), s);
    s = warpSum(s);
    if (lane == 0) Drow[warp] = s;
}

// Backward of the masked softmax, one block per row: P = exp(S − lse) on visible keys (0 else),
// dS = P ⊙ (dP − Drow) · scale. Writes P (for dV = Pᵀ·dO) and dS (for dQ, dK), both bf16.
extern "C" __global__ void attn_softmax_bwd(bf16* P, bf16* dS, const float* S, const float* dP, const float* lse,
                                            const float* Drow, const int* keyStart, int H, int T, float scale) {
    long row = blockIdx.x;
    int t = (int)(row % T);
    int b = (int)(row / ((long)H * T));
    int ks = keyStart[b];
    float l = lse[row], dr = Drow[row];
    const float* s = S + row * T;
    const float* dp = dP + row * T;
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        bool vis = j >= ks && j <= t && l != -INFINITY;
        float p = vis ? __expf(s[j] - l) : 0.f;
        P[row * T + j] = __float2bfloat16_rn(p);
        dS[row * T + j] = __float2bfloat16_rn(vis ? p * (dp[j] - dr) * scale : 0.f);
    }
}

// Generation: n new query tokens at positions [pos0, pos0+n) of one sequence against caches holding
// positions [0, pos0+n). One block per (token i, head h); scores in dynamic shared memory.
template <typename T>
__device__ void attnCachedImpl(T* out, const T* q, const T* kc, const T* vc, int pos0, int Hq, int Hkv, int D, float scale) {
    extern __shared__ float smem[];
    int i = blockIdx.x, h = blockIdx.y;
    int g = h / (Hq / Hkv);
    int L = pos0 + i + 1;
    float* qs = smem;       // D
    float* sc = smem + D;   // L
    const T* qr = q + (long)i * Hq * D + (long)h * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = ld(qr, d);
    __syncthreads();
    long kvStride = (long)Hkv * D;
    float m = -INFINITY;
    for (int s = threadIdx.x; s < L; s += blockDim.x) {
        const T* kr = kc + s * kvStride + (long)g * D;
        float a = 0.f;
        for (int d = 0; d < D; d++) a = fmaf(qs[d], ld(kr, d), a);
        a *= scale;
        sc[s] = a;
        m = fmaxf(m, a);
    }
    m = blockMax(m);
    float sum = 0.f;
    for (int s = threadIdx.x; s < L; s += blockDim.x) { float e = __expf(sc[s] - m); sc[s] = e; sum += e; }
    sum = blockSum(sum);  // its barriers also publish sc[]
    float inv = 1.f / sum;
    T* o = out + (long)i * Hq * D + (long)h * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float a = 0.f;
        for (int s = 0; s < L; s++) a = fmaf(sc[s], ld(vc, s * kvStride + (long)g * D + d), a);
        st(o, d, a * inv);
    }
}

extern "C" __global__ void to_heads_f32(bf16* d, const float* s, int B, int T, int H, int D, int vec) { toHeadsImpl(d, s, B, T, H, D, vec); }
extern "C" __global__ void to_heads_bf16(bf16* d, const bf16* s, int B, int T, int H, int D, int vec) { toHeadsImpl(d, s, B, T, H, D, vec); }
extern "C" __global__ void from_heads_f32(float* d, const bf16* s, int B, int T, int H, int D, int vec) { fromHeadsImpl(d, s, B, T, H, D, vec); }
extern "C" __global__ void from_heads_bf16(bf16* d, const bf16* s, int B, int T, int H, int D, int vec) { fromHeadsImpl(d, s, B, T, H, D, vec); }
extern "C" __global__ void attn_rowdot_f32(float* r, const float* d, const float* o, int B, int T, int H, int D) { rowDotImpl(r, d, o, B, T, H, D); }
extern "C" __global__ void attn_rowdot_bf16(float* r, const bf16* d, const bf16* o, int B, int T, int H, int D) { rowDotImpl(r, d, o, B, T, H, D); }
extern "C" __global__ void attn_cached_f32(float* o, const float* q, const float* k, const float* v, int p0, int Hq, int Hkv, int D, float sc) { attnCachedImpl(o, q, k, v, p0, Hq, Hkv, D, sc); }
extern "C" __global__ void attn_cached_bf16(bf16* o, const bf16* q, const bf16* k, const bf16* v, int p0, int Hq, int Hkv, int D, float sc) { attnCachedImpl(o, q, k, v, p0, Hq, Hkv, D, sc); }
