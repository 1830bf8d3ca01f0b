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

// One block per score row (b, h, t) of S (B·H·T, T) fp32 (already scaled), for long rows. Visible
// keys: keyStart[b] <= s <= t. P (bf16) = softmax over visible keys, 0 elsewhere; lse = log Σ exp
// (−inf for a row with no visible key, whose P row is all 0). Masked scores are never read.
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

// The same softmax with one warp per row and the row held in registers (NPL = values per lane,
// T <= 32·NPL): S is read once (visible part only) and P written once.
template <int NPL>
__device__ void softmaxWarpImpl(bf16* P, float* lse, const float* S, const int* keyStart, int H, int T, long rows) {
    long row = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    int t = (int)(row % T);
    int b = (int)(row / ((long)H * T));
    int ks = keyStart[b];
    const float* s = S + row * T;
    bf16* p = P + row * T;
    float v[NPL];
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        int j = i * 32 + lane;
        v[i] = (j >= ks && j <= t) ? s[j] : -INFINITY;
        m = fmaxf(m, v[i]);
    }
    m = warpMax(m);
    if (m == -INFINITY) {
#pragma unroll
        for (int i = 0; i < NPL; i++) { int j = i * 32 + lane; if (j < T) p[j] = __float2bfloat16_rn(0.f); }
        if (lane == 0) lse[row] = -INFINITY;
        return;
    }
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < NPL; i++) { v[i] = __expf(v[i] - m); sum += v[i]; }  // exp(−inf) = 0 for masked keys
    sum = warpSum(sum);
    float inv = 1.f / sum;
    if (lane == 0) lse[row] = m + logf(sum);
#pragma unroll
    for (int i = 0; i < NPL; i++) { int j = i * 32 + lane; if (j < T) p[j] = __float2bfloat16_rn(v[i] * inv); }
}

extern "C" __global__ void attn_softmax_w8(bf16* P, float* lse, const float* S, const int* ks, int H, int T, long rows) { softmaxWarpImpl<8>(P, lse, S, ks, H, T, rows); }
extern "C" __global__ void attn_softmax_w16(bf16* P, float* lse, const float* S, const int* ks, int H, int T, long rows) { softmaxWarpImpl<16>(P, lse, S, ks, H, T, rows); }
extern "C" __global__ void attn_softmax_w32(bf16* P, float* lse, const float* S, const int* ks, int H, int T, long rows) { softmaxWarpImpl<32>(P, lse, S, ks, H, T, rows); }

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
        bool vis = j >= ks && j <= t && l != -INFINITY;  // masked scores (half the square) are not read
        float p = vis ? __expf(s[j] - l) : 0.f;
        P[row * T + j] = __float2bfloat16_rn(p);
        dS[row * T + j] = __float2bfloat16_rn(vis ? p * (dp[j] - dr) * scale : 0.f);
    }
}

// Generation: n new query tokens at positions [pos0, pos0+n) of one sequence against caches holding
// positions [0, pos0+n). One block per (token i, head h); scores in dynamic shared memory.
template <typename T>
__device__ void attnCachedImpl(T* out, const T* q, const T* kc, const T* vc, int pos0, int Hq, int Hkv, int D, float scale) {
    extern __shared__ __align__(128) unsigned char smemRaw[];
    float* smem = reinterpret_cast<float*>(smemRaw);
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

// ---------------------------------------------------------------------------------------------
// Fused causal GQA attention forward (flash style) for bf16 q, k, v in token-major layout: the
// scores never reach device memory. One block of 4 warps per (64-query tile, query head, sequence);
// warp w owns query rows 16w..16w+15. Per 64-key tile: S = Q·Kᵀ on the tensor cores (wmma bf16,
// fp32 accumulate) into shared memory, an online softmax per row (running max m and sum l; the
// fp32 output accumulator O in shared memory is rescaled by exp(m_old − m_new)), then O += P·V.
// Key tiles wholly after the tile's last query (causal) or before keyStart (left padding) are
// skipped. Same semantics as attn_softmax + the GEMMs: lse = m + log l (−inf when no key is
// visible, and then the output row is 0).
#include <mma.h>
using namespace nvcuda;

#define FA_BQ 64
#define FA_BK 64

template <int D>
struct FaSmem {
    static constexpr int QS = D + 8;     // bf16 row stride of the Q/K/V tiles (multiple of 8; rows 32-byte aligned)
    static constexpr int SS = FA_BK + 4; // f32 row stride of S
    static constexpr int PS = FA_BK + 8; // bf16 row stride of P
    static constexpr int OS = D + 4;     // f32 row stride of O
    static constexpr int Q = 0;
    static constexpr int K = Q + FA_BQ * QS * 2;
    static constexpr int V = K + FA_BK * QS * 2;
    static constexpr int S = V + FA_BK * QS * 2;
    static constexpr int P = S + FA_BQ * SS * 4;
    static constexpr int O = P + FA_BQ * PS * 2;
    static constexpr int M = O + FA_BQ * OS * 4;
    static constexpr int L = M + FA_BQ * 4;
    static constexpr int BYTES = L + FA_BQ * 4;
};

// Copies `rows` rows of D bf16 (global row stride `ld` elements) into a shared tile, 16 bytes per
// thread-step; rows past `valid` are zero.
template <int D>
__device__ __forceinline__ void faLoadTile(bf16* dst, const bf16* src, long ld, int valid) {
    constexpr int VPR = D / 8;  // uint4 per row
    for (int e = threadIdx.x; e < FA_BQ * VPR; e += blockDim.x) {
        int r = e / VPR, c = (e % VPR) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < valid) v = *reinterpret_cast<const uint4*>(src + r * ld + c);
        *reinterpret_cast<uint4*>(dst + r * FaSmem<D>::QS + c) = v;
    }
}

template <int D>
__device__ void flashFwdImpl(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* keyStart,
                             int T, int Hq, int Hkv, float scale) {
    extern __shared__ __align__(128) unsigned char smemRaw[];
    unsigned char* smem = smemRaw;
    using L = FaSmem<D>;
    bf16* Qs = reinterpret_cast<bf16*>(smem + L::Q);
    bf16* Ks = reinterpret_cast<bf16*>(smem + L::K);
    bf16* Vs = reinterpret_cast<bf16*>(smem + L::V);
    float* Ss = reinterpret_cast<float*>(smem + L::S);
    bf16* Ps = reinterpret_cast<bf16*>(smem + L::P);
    float* Os = reinterpret_cast<float*>(smem + L::O);
    float* Ms = reinterpret_cast<float*>(smem + L::M);
    float* Ls = reinterpret_cast<float*>(smem + L::L);

    const int q0 = blockIdx.x * FA_BQ, h = blockIdx.y, b = blockIdx.z;
    const int g = h / (Hq / Hkv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int ks = keyStart[b];
    const long qld = (long)Hq * D, kld = (long)Hkv * D;
    const bf16* qb = q + ((long)b * T + q0) * qld + (long)h * D;
    const bf16* kb = k + (long)b * T * kld + (long)g * D;
    const bf16* vb = v + (long)b * T * kld + (long)g * D;

    faLoadTile<D>(Qs, qb, qld, min(FA_BQ, T - q0));
    for (int e = threadIdx.x; e < FA_BQ * L::OS; e += blockDim.x) Os[e] = 0.f;
    for (int e = threadIdx.x; e < FA_BQ; e += blockDim.x) { Ms[e] = -INFINITY; Ls[e] = 0.f; }

    const int kEnd = min(T, q0 + FA_BQ);          // keys after the tile's last query are masked for all its rows
    const int kBegin = (max(0, ks) / FA_BK) * FA_BK;  // tiles wholly before keyStart are masked
    // The softmax step: lane pair (2r, 2r+1) handles row r of this warp's 16, 32 columns each.
    const int r = lane >> 1, half = lane & 1;
    const int rowInTile = warp * 16 + r;
    const int tq = q0 + rowInTile;

    for (int k0 = kBegin; k0 < kEnd; k0 += FA_BK) {
        __syncthreads();  // every warp is done with the previous K/V tiles
        faLoadTile<D>(Ks, kb + (long)k0 * kld, kld, min(FA_BK, T - k0));
        faLoadTile<D>(Vs, vb + (long)k0 * kld, kld, min(FA_BK, T - k0));
        __syncthreads();

        // S (16 × 64 for this warp) = Q_w · Kᵀ
        {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FA_BK / 16];
#pragma unroll
            for (int j = 0; j < FA_BK / 16; j++) wmma::fill_fragment(acc[j], 0.f);
#pragma unroll
            for (int kk = 0; kk < D; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
                wmma::load_matrix_sync(a, Qs + warp * 16 * L::QS + kk, L::QS);
#pragma unroll
                for (int j = 0; j < FA_BK / 16; j++) {
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> bfr;
                    wmma::load_matrix_sync(bfr, Ks + j * 16 * L::QS + kk, L::QS);
                    wmma::mma_sync(acc[j], a, bfr, acc[j]);
                }
            }
#pragma unroll
            for (int j = 0; j < FA_BK / 16; j++)
                wmma::store_matrix_sync(Ss + warp * 16 * L::SS + j * 16, acc[j], L::SS, wmma::mem_row_major);
        }
        __syncwarp();

        // online softmax of row rowInTile over this key tile
        {
            float sv[32];
            float mloc = -INFINITY;
#pragma unroll
            for (int c = 0; c < 32; c++) {
                int col = half * 32 + c, j = k0 + col;
                bool vis = j >= ks && j <= tq && j < T && tq < T;
                sv[c] = vis ? Ss[rowInTile * L::SS + col] * scale : -INFINITY;
                mloc = fmaxf(mloc, sv[c]);
            }
            mloc = fmaxf(mloc, __shfl_xor_sync(0xffffffffu, mloc, 1));
            float mOld = Ms[rowInTile];
            float mNew = fmaxf(mOld, mloc);
            float alpha = mNew == -INFINITY ? 1.f : __expf(mOld - mNew);  // mOld = −inf -> 0 (O and l are 0 then)
            float lsum = 0.f;
#pragma unroll
            for (int c = 0; c < 32; c++) {
                float p = mNew == -INFINITY ? 0.f : __expf(sv[c] - mNew);
                lsum += p;
                Ps[rowInTile * L::PS + half * 32 + c] = __float2bfloat16_rn(p);
            }
            lsum += __shfl_xor_sync(0xffffffffu, lsum, 1);
            __syncwarp();  // both lanes of the pair have read Ms before it is updated
            if (half == 0) { Ms[rowInTile] = mNew; Ls[rowInTile] = Ls[rowInTile] * alpha + lsum; }
            if (alpha != 1.f) {
                float* orow = Os + rowInTile * L::OS + half * (D / 2);
#pragma unroll 8
                for (int c = 0; c < D / 2; c++) orow[c] *= alpha;
            }
        }
        __syncwarp();

        // O_w (16 × D) += P_w (16 × 64) · V (64 × D)
#pragma unroll
        for (int n = 0; n < D / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
            wmma::load_matrix_sync(o, Os + warp * 16 * L::OS + n * 16, L::OS, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < FA_BK; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> bfr;
                wmma::load_matrix_sync(a, Ps + warp * 16 * L::PS + kk, L::PS);
                wmma::load_matrix_sync(bfr, Vs + kk * L::QS + n * 16, L::QS);
                wmma::mma_sync(o, a, bfr, o);
            }
            wmma::store_matrix_sync(Os + warp * 16 * L::OS + n * 16, o, L::OS, wmma::mem_row_major);
        }
        __syncwarp();
    }
    __syncthreads();

    // out = O / l (0 for rows with no visible key), lse = m + log l
    for (int e = threadIdx.x; e < FA_BQ * (D / 8); e += blockDim.x) {
        int rr = e / (D / 8), c = (e % (D / 8)) * 8;
        int t = q0 + rr;
        if (t >= T) continue;
        float l = Ls[rr];
        float inv = l > 0.f ? 1.f / l : 0.f;
        float o8[8];
#pragma unroll
        for (int j = 0; j < 8; j++) o8[j] = Os[rr * L::OS + c + j] * inv;
        st8(out, ((long)b * T + t) * qld + (long)h * D + c, o8);
    }
    for (int rr = threadIdx.x; rr < FA_BQ; rr += blockDim.x) {
        int t = q0 + rr;
        if (t >= T) continue;
        float l = Ls[rr];
        lse[((long)b * Hq + h) * T + t] = l > 0.f ? Ms[rr] + logf(l) : -INFINITY;
    }
}

extern "C" __global__ void __launch_bounds__(128) flash_fwd_d64(bf16* o, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* ks, int T, int Hq, int Hkv, float sc) { flashFwdImpl<64>(o, lse, q, k, v, ks, T, Hq, Hkv, sc); }
extern "C" __global__ void __launch_bounds__(128) flash_fwd_d128(bf16* o, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* ks, int T, int Hq, int Hkv, float sc) { flashFwdImpl<128>(o, lse, q, k, v, ks, T, Hq, Hkv, sc); }
extern "C" __global__ void __launch_bounds__(128) flash_fwd_d32(bf16* o, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* ks, int T, int Hq, int Hkv, float sc) { flashFwdImpl<32>(o, lse, q, k, v, ks, T, Hq, Hkv, sc); }

// ---------------------------------------------------------------------------------------------
// Fused attention backward for bf16, in two kernels that never write a score matrix and need no
// atomics: flash_bwd_dkdv (one block per (64-key tile, kv head, sequence): loops over the query
// heads of the group and the query tiles at or after the keys, accumulating dK = Σ dSᵀ·Q and
// dV = Σ Pᵀ·dO in shared memory) and flash_bwd_dq (one block per (64-query tile, query head,
// sequence): dQ = Σ dS·K over the visible key tiles). Both recompute S = Q·Kᵀ on the tensor cores
// and P = exp(scale·S − lse) from the forward's lse stash; dS = P ⊙ (dP − Drow)·scale with
// dP = dO·Vᵀ and Drow = rowsum(dO ⊙ O) (attn_rowdot). P and dS are rounded to bf16 for the GEMMs,
// as in the unfused path.

template <int D>
struct FbSmem {
    static constexpr int QS = D + 8, SS = 64 + 4, PS = 64 + 8, AS = D + 4;
    static constexpr int K = 0;
    static constexpr int V = K + 64 * QS * 2;
    static constexpr int Q = V + 64 * QS * 2;
    static constexpr int DO = Q + 64 * QS * 2;
    static constexpr int S = DO + 64 * QS * 2;
    static constexpr int P = S + 64 * SS * 4;
    static constexpr int DS = P + 64 * PS * 2;
    static constexpr int LSE = DS + 64 * PS * 2;
    static constexpr int DR = LSE + 64 * 4;
    static constexpr int ACC1 = DR + 64 * 4;        // dK (dkdv) or dQ (dq), f32
    static constexpr int ACC2 = ACC1 + 64 * AS * 4; // dV (dkdv only)
    static constexpr int BYTES_DQ = ACC2;
    static constexpr int BYTES_DKDV = ACC2 + 64 * AS * 4;
};

// rows 16w.. of C (16 × 64, f32, into Cs) = A_w (16 × D, from As) · Bᵀ (B is 64 × D, from Bs)
template <int D>
__device__ __forceinline__ void fbRowsTimesT(float* Cs, const bf16* As, const bf16* Bs, int warp) {
    using L = FbSmem<D>;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4];
#pragma unroll
    for (int j = 0; j < 4; j++) wmma::fill_fragment(acc[j], 0.f);
#pragma unroll
    for (int kk = 0; kk < D; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::load_matrix_sync(a, As + warp * 16 * L::QS + kk, L::QS);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
            wmma::load_matrix_sync(b, Bs + j * 16 * L::QS + kk, L::QS);
            wmma::mma_sync(acc[j], a, b, acc[j]);
        }
    }
#pragma unroll
    for (int j = 0; j < 4; j++) wmma::store_matrix_sync(Cs + warp * 16 * L::SS + j * 16, acc[j], L::SS, wmma::mem_row_major);
}

// Acc rows 16w.. (16 × D, f32 in shared) += op(X)(16 × 64) · Y (64 × D, bf16 row-major, stride QS).
// transX: X is stored 64 × 64 (stride PS) and the warp's rows are its columns 16w.. (Xᵀ).
template <int D, bool transX>
__device__ __forceinline__ void fbAccumulate(float* Acc, const bf16* Xs, const bf16* Ys, int warp) {
    using L = FbSmem<D>;
#pragma unroll
    for (int n = 0; n < D / 16; n++) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
        wmma::load_matrix_sync(o, Acc + warp * 16 * L::AS + n * 16, L::AS, wmma::mem_row_major);
#pragma unroll
        for (int kk = 0; kk < 64; kk += 16) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
            wmma::load_matrix_sync(b, Ys + kk * L::QS + n * 16, L::QS);
            if (transX) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major> a;
                wmma::load_matrix_sync(a, Xs + kk * L::PS + warp * 16, L::PS);
                wmma::mma_sync(o, a, b, o);
            } else {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
                wmma::load_matrix_sync(a, Xs + warp * 16 * L::PS + kk, L::PS);
                wmma::mma_sync(o, a, b, o);
            }
        }
        wmma::store_matrix_sync(Acc + warp * 16 * L::AS + n * 16, o, L::AS, wmma::mem_row_major);
    }
}

// For this warp's 16 query rows (q0 + 16w + r) against keys k0..k0+63: P = exp(scale·S − lse)
// on visible keys (S in Ss), then, once dP has replaced S in Ss (the caller computes it between
// the two calls), dS = P·(dP − Drow)·scale. Lane pair (2r, 2r+1) takes row r, 32 columns each.
template <int D>
__device__ __forceinline__ void fbProbs(bf16* Ps, const float* Ss, const float* lseS, int q0, int k0, int ks, int T, float scale, int warp, int lane) {
    using L = FbSmem<D>;
    int r = lane >> 1, half = lane & 1, row = warp * 16 + r, tq = q0 + row;
    float l = lseS[row];
#pragma unroll 8
    for (int c = 0; c < 32; c++) {
        int col = half * 32 + c, j = k0 + col;
        bool vis = tq < T && j >= ks && j <= tq && l != -INFINITY;
        Ps[row * L::PS + col] = __float2bfloat16_rn(vis ? __expf(Ss[row * L::SS + col] * scale - l) : 0.f);
    }
}

template <int D>
__device__ __forceinline__ void fbDs(bf16* dSs, const bf16* Ps, const float* dPs, const float* drS, float scale, int warp, int lane) {
    using L = FbSmem<D>;
    int r = lane >> 1, half = lane & 1, row = warp * 16 + r;
    float dr = drS[row];
#pragma unroll 8
    for (int c = 0; c < 32; c++) {
        int col = half * 32 + c;
        float p = __bfloat162float(Ps[row * L::PS + col]);
        dSs[row * L::PS + col] = __float2bfloat16_rn(p * (dPs[row * L::SS + col] - dr) * scale);
    }
}

template <int D>
__device__ __forceinline__ void fbLoadRowStats(float* lseS, float* drS, const float* lse, const float* Drow, long base, int q0, int T) {
    for (int e = threadIdx.x; e < 64; e += blockDim.x) {
        bool ok = q0 + e < T;
        lseS[e] = ok ? lse[base + q0 + e] : -INFINITY;
        drS[e] = ok ? Drow[base + q0 + e] : 0.f;
    }
}

template <typename TO, int D>
__device__ __forceinline__ void fbStoreRows(TO* dst, long ld, const float* Acc, int valid) {
    using L = FbSmem<D>;
    for (int e = threadIdx.x; e < 64 * (D / 8); e += blockDim.x) {
        int rr = e / (D / 8), c = (e % (D / 8)) * 8;
        if (rr >= valid) continue;
        float v8[8];
#pragma unroll
        for (int j = 0; j < 8; j++) v8[j] = Acc[rr * L::AS + c + j];
        st8(dst, rr * ld + c, v8);
    }
}

template <int D>
__device__ void flashBwdDkDvImpl(bf16* dk, bf16* dv, const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                                 const float* lse, const float* Drow, const int* keyStart, int T, int Hq, int Hkv, float scale) {
    extern __shared__ __align__(128) unsigned char smemRaw[];
    using L = FbSmem<D>;
    bf16* Ks = reinterpret_cast<bf16*>(smemRaw + L::K);
    bf16* Vs = reinterpret_cast<bf16*>(smemRaw + L::V);
    bf16* Qs = reinterpret_cast<bf16*>(smemRaw + L::Q);
    bf16* dOs = reinterpret_cast<bf16*>(smemRaw + L::DO);
    float* Ss = reinterpret_cast<float*>(smemRaw + L::S);
    bf16* Ps = reinterpret_cast<bf16*>(smemRaw + L::P);
    bf16* dSs = reinterpret_cast<bf16*>(smemRaw + L::DS);
    float* lseS = reinterpret_cast<float*>(smemRaw + L::LSE);
    float* drS = reinterpret_cast<float*>(smemRaw + L::DR);
    float* dKs = reinterpret_cast<float*>(smemRaw + L::ACC1);
    float* dVs = reinterpret_cast<float*>(smemRaw + L::ACC2);

    const int k0 = blockIdx.x * 64, g = blockIdx.y, b = blockIdx.z, G = Hq / Hkv;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int ks = keyStart[b];
    const long qld = (long)Hq * D, kld = (long)Hkv * D;
    const int kValid = min(64, T - k0);

    faLoadTile<D>(Ks, k + ((long)b * T + k0) * kld + (long)g * D, kld, kValid);
    faLoadTile<D>(Vs, v + ((long)b * T + k0) * kld + (long)g * D, kld, kValid);
    for (int e = threadIdx.x; e < 64 * L::AS; e += blockDim.x) { dKs[e] = 0.f; dVs[e] = 0.f; }

    if (k0 + 64 > ks) {  // otherwise every key of the tile is left padding: dK = dV = 0
        for (int hh = 0; hh < G; hh++) {
            int h = g * G + hh;
            long statBase = ((long)b * Hq + h) * T;
            for (int q0 = (k0 / 64) * 64; q0 < T; q0 += 64) {
                __syncthreads();  // the previous iteration is done with Q, dO, P, dS
                int qValid = min(64, T - q0);
                faLoadTile<D>(Qs, q + ((long)b * T + q0) * qld + (long)h * D, qld, qValid);
                faLoadTile<D>(dOs, dout + ((long)b * T + q0) * qld + (long)h * D, qld, qValid);
                fbLoadRowStats<D>(lseS, drS, lse, Drow, statBase, q0, T);
                __syncthreads();
                fbRowsTimesT<D>(Ss, Qs, Ks, warp);          // S rows of this warp
                __syncwarp();
                fbProbs<D>(Ps, Ss, lseS, q0, k0, ks, T, scale, warp, lane);
                __syncwarp();
                fbRowsTimesT<D>(Ss, dOs, Vs, warp);         // dP rows of this warp (S no longer needed)
                __syncwarp();
                fbDs<D>(dSs, Ps, Ss, drS, scale, warp, lane);
                __syncthreads();                            // all P and dS rows are in place
                fbAccumulate<D, true>(dVs, Ps, dOs, warp);  // dV rows 16w.. += Pᵀ·dO
                fbAccumulate<D, true>(dKs, dSs, Qs, warp);  // dK rows 16w.. += dSᵀ·Q
            }
        }
    }
    __syncthreads();
    fbStoreRows<bf16, D>(dk + ((long)b * T + k0) * kld + (long)g * D, kld, dKs, kValid);
    fbStoreRows<bf16, D>(dv + ((long)b * T + k0) * kld + (long)g * D, kld, dVs, kValid);
}

template <int D>
__device__ void flashBwdDqImpl(bf16* dq, const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                               const float* lse, const float* Drow, const int* keyStart, int T, int Hq, int Hkv, float scale) {
    extern __shared__ __align__(128) unsigned char smemRaw[];
    using L = FbSmem<D>;
    bf16* Ks = reinterpret_cast<bf16*>(smemRaw + L::K);
    bf16* Vs = reinterpret_cast<bf16*>(smemRaw + L::V);
    bf16* Qs = reinterpret_cast<bf16*>(smemRaw + L::Q);
    bf16* dOs = reinterpret_cast<bf16*>(smemRaw + L::DO);
    float* Ss = reinterpret_cast<float*>(smemRaw + L::S);
    bf16* Ps = reinterpret_cast<bf16*>(smemRaw + L::P);
    bf16* dSs = reinterpret_cast<bf16*>(smemRaw + L::DS);
    float* lseS = reinterpret_cast<float*>(smemRaw + L::LSE);
    float* drS = reinterpret_cast<float*>(smemRaw + L::DR);
    float* dQs = reinterpret_cast<float*>(smemRaw + L::ACC1);

    const int q0 = blockIdx.x * 64, h = blockIdx.y, b = blockIdx.z;
    const int g = h / (Hq / Hkv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int ks = keyStart[b];
    const long qld = (long)Hq * D, kld = (long)Hkv * D;
    const int qValid = min(64, T - q0);

    faLoadTile<D>(Qs, q + ((long)b * T + q0) * qld + (long)h * D, qld, qValid);
    faLoadTile<D>(dOs, dout + ((long)b * T + q0) * qld + (long)h * D, qld, qValid);
    fbLoadRowStats<D>(lseS, drS, lse, Drow, ((long)b * Hq + h) * T, q0, T);
    for (int e = threadIdx.x; e < 64 * L::AS; e += blockDim.x) dQs[e] = 0.f;

    const int kEnd = min(T, q0 + 64);
    const int kBegin = (max(0, ks) / 64) * 64;
    for (int k0 = kBegin; k0 < kEnd; k0 += 64) {
        __syncthreads();  // every warp is done with the previous K/V tiles
        int kValid = min(64, T - k0);
        faLoadTile<D>(Ks, k + ((long)b * T + k0) * kld + (long)g * D, kld, kValid);
        faLoadTile<D>(Vs, v + ((long)b * T + k0) * kld + (long)g * D, kld, kValid);
        __syncthreads();
        fbRowsTimesT<D>(Ss, Qs, Ks, warp);
        __syncwarp();
        fbProbs<D>(Ps, Ss, lseS, q0, k0, ks, T, scale, warp, lane);
        __syncwarp();
        fbRowsTimesT<D>(Ss, dOs, Vs, warp);
        __syncwarp();
        fbDs<D>(dSs, Ps, Ss, drS, scale, warp, lane);
        __syncwarp();
        fbAccumulate<D, false>(dQs, dSs, Ks, warp);  // dQ rows 16w.. += dS·K
    }
    __syncthreads();
    fbStoreRows<bf16, D>(dq + ((long)b * T + q0) * qld + (long)h * D, qld, dQs, qValid);
}

#define FLASH_BWD(DD) \
    extern "C" __global__ void __launch_bounds__(128) flash_bwd_dkdv_d##DD(bf16* dk, bf16* dv, const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* Drow, const int* ks, int T, int Hq, int Hkv, float sc) \
        { flashBwdDkDvImpl<DD>(dk, dv, q, k, v, dout, lse, Drow, ks, T, Hq, Hkv, sc); } \
    extern "C" __global__ void __launch_bounds__(128) flash_bwd_dq_d##DD(bf16* dq, const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* Drow, const int* ks, int T, int Hq, int Hkv, float sc) \
        { flashBwdDqImpl<DD>(dq, q, k, v, dout, lse, Drow, ks, T, Hq, Hkv, sc); }
FLASH_BWD(32)
FLASH_BWD(64)
FLASH_BWD(128)

// ---------------------------------------------------------------------------------------------
// Flash attention forward on register fragments (FlashAttention-2 layout) for bf16: mma.sync
// m16n8k16 with the scores, probabilities and output accumulator in registers; shared memory
// holds only the Q tile (read once into fragments), the K tile and Vᵀ (so every B fragment is one
// 32-bit shared load). One block of 4 warps per (64 queries, query head, sequence), warp w owns 16
// query rows; per 64-key tile S = Q·Kᵀ (8 n-tiles of 8 keys), online softmax on the fragments
// (rows g and g+8 of the warp, reduced over the 4 lanes of a quad), P re-packed in place as the A
// operand of O += P·V. Same semantics as flash_fwd (lse, masking, zero rows).

__device__ __forceinline__ void mma16816(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned packBf16(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}

__device__ __forceinline__ unsigned lds32(const bf16* p) { return *reinterpret_cast<const unsigned*>(p); }

template <int D>
struct F2Smem {
    static constexpr int QS = D + 8;   // row stride (elements) of Q and K tiles: rows 4 banks apart
    static constexpr int VS = 64 + 8;  // row stride of Vᵀ (D rows of 64 keys)
    static constexpr int Q = 0;
    static constexpr int K = Q + 64 * QS * 2;
    static constexpr int V = K + 64 * QS * 2;
    static constexpr int BYTES = V + D * VS * 2;
};

template <int D>
__device__ void flash2FwdImpl(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* keyStart,
                              int T, int Hq, int Hkv, float scale) {
    extern __shared__ __align__(128) unsigned char smemRaw[];
    using L = F2Smem<D>;
    bf16* Qs = reinterpret_cast<bf16*>(smemRaw + L::Q);
    bf16* Ks = reinterpret_cast<bf16*>(smemRaw + L::K);
    bf16* Vt = reinterpret_cast<bf16*>(smemRaw + L::V);

    const int q0 = blockIdx.x * 64, h = blockIdx.y, b = blockIdx.z;
    const int g = h / (Hq / Hkv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gid = lane >> 2, tid = lane & 3;
    const int ks = keyStart[b];
    const long qld = (long)Hq * D, kld = (long)Hkv * D;
    const bf16* kb = k + (long)b * T * kld + (long)g * D;
    const bf16* vb = v + (long)b * T * kld + (long)g * D;

    faLoadTile<D>(Qs, q + ((long)b * T + q0) * qld + (long)h * D, qld, min(64, T - q0));
    __syncthreads();
    // Q fragments of this warp's 16 rows, all D/16 k-steps
    unsigned qf[D / 16][4];
    const bf16* qw = Qs + warp * 16 * L::QS;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        qf[kk][0] = lds32(qw + gid * L::QS + kk * 16 + tid * 2);
        qf[kk][1] = lds32(qw + (gid + 8) * L::QS + kk * 16 + tid * 2);
        qf[kk][2] = lds32(qw + gid * L::QS + kk * 16 + 8 + tid * 2);
        qf[kk][3] = lds32(qw + (gid + 8) * L::QS + kk * 16 + 8 + tid * 2);
    }
    float o[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // rows gid and gid+8 (l: this lane's partial)
    const int t0 = q0 + warp * 16 + gid, t1 = t0 + 8;

    const int kEnd = min(T, q0 + 64);
    const int kBegin = (max(0, ks) / 64) * 64;
    for (int k0 = kBegin; k0 < kEnd; k0 += 64) {
        __syncthreads();  // all warps are done with the previous K and Vᵀ
        int valid = min(64, T - k0);
        faLoadTile<D>(Ks, kb + (long)k0 * kld, kld, valid);
        for (int e = threadIdx.x; e < 64 * (D / 8); e += blockDim.x) {  // Vᵀ[d][key]
            int r = e % 64, c = (e / 64) * 8;  // a warp covers 32 consecutive keys: conflict-free transposed stores
            uint4 u = make_uint4(0, 0, 0, 0);
            if (r < valid) u = *reinterpret_cast<const uint4*>(vb + (long)(k0 + r) * kld + c);
            const bf16* hv = reinterpret_cast<const bf16*>(&u);
#pragma unroll
            for (int j = 0; j < 8; j++) Vt[(c + j) * L::VS + r] = hv[j];
        }
        __syncthreads();

        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const bf16* kr = Ks + (j * 8 + gid) * L::QS + kk * 16 + tid * 2;
                mma16816(s[j], qf[kk], lds32(kr), lds32(kr + 8));
            }
        }
        // mask + scale, row maxima
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; j++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int key = k0 + j * 8 + tid * 2 + e;
                bool ok = key >= ks && key < T;
                s[j][e] = (ok && key <= t0 && t0 < T) ? s[j][e] * scale : -INFINITY;
                s[j][2 + e] = (ok && key <= t1 && t1 < T) ? s[j][2 + e] * scale : -INFINITY;
                mx0 = fmaxf(mx0, s[j][e]);
                mx1 = fmaxf(mx1, s[j][2 + e]);
            }
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
        float a0 = m0 == -INFINITY ? 0.f : __expf(m0 - n0), a1 = m1 == -INFINITY ? 0.f : __expf(m1 - n1);
        m0 = n0; m1 = n1;
        float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
        for (int j = 0; j < 8; j++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float p0 = s[j][e] == -INFINITY ? 0.f : __expf(s[j][e] - n0);
                float p1 = s[j][2 + e] == -INFINITY ? 0.f : __expf(s[j][2 + e] - n1);
                s[j][e] = p0; s[j][2 + e] = p1;
                ps0 += p0; ps1 += p1;
            }
        }
        l0 = l0 * a0 + ps0;
        l1 = l1 * a1 + ps1;
#pragma unroll
        for (int j = 0; j < D / 8; j++) { o[j][0] *= a0; o[j][1] *= a0; o[j][2] *= a1; o[j][3] *= a1; }
        // O += P·V: key k-steps of 16 (n-tiles 2ks', 2ks'+1 of S form the A fragment)
#pragma unroll
        for (int kq = 0; kq < 4; kq++) {
            unsigned pa[4] = {packBf16(s[2 * kq][0], s[2 * kq][1]), packBf16(s[2 * kq][2], s[2 * kq][3]),
                              packBf16(s[2 * kq + 1][0], s[2 * kq + 1][1]), packBf16(s[2 * kq + 1][2], s[2 * kq + 1][3])};
#pragma unroll
            for (int j = 0; j < D / 8; j++) {
                const bf16* vr = Vt + (j * 8 + gid) * L::VS + kq * 16 + tid * 2;
                mma16816(o[j], pa, lds32(vr), lds32(vr + 8));
            }
        }
    }
    // full row sums over the quad
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    float i0 = l0 > 0.f ? 1.f / l0 : 0.f, i1 = l1 > 0.f ? 1.f / l1 : 0.f;
    if (t0 < T) {
        bf16* orow = out + ((long)b * T + t0) * qld + (long)h * D;
#pragma unroll
        for (int j = 0; j < D / 8; j++) *reinterpret_cast<unsigned*>(orow + j * 8 + tid * 2) = packBf16(o[j][0] * i0, o[j][1] * i0);
        if (tid == 0) lse[((long)b * Hq + h) * T + t0] = l0 > 0.f ? m0 + logf(l0) : -INFINITY;
    }
    if (t1 < T) {
        bf16* orow = out + ((long)b * T + t1) * qld + (long)h * D;
#pragma unroll
        for (int j = 0; j < D / 8; j++) *reinterpret_cast<unsigned*>(orow + j * 8 + tid * 2) = packBf16(o[j][2] * i1, o[j][3] * i1);
        if (tid == 0) lse[((long)b * Hq + h) * T + t1] = l1 > 0.f ? m1 + logf(l1) : -INFINITY;
    }
}

extern "C" __global__ void __launch_bounds__(128) flash2_fwd_d32(bf16* o, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* ks, int T, int Hq, int Hkv, float sc) { flash2FwdImpl<32>(o, lse, q, k, v, ks, T, Hq, Hkv, sc); }
extern "C" __global__ void __launch_bounds__(128) flash2_fwd_d64(bf16* o, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* ks, int T, int Hq, int Hkv, float sc) { flash2FwdImpl<64>(o, lse, q, k, v, ks, T, Hq, Hkv, sc); }
extern "C" __global__ void __launch_bounds__(128) flash2_fwd_d128(bf16* o, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* ks, int T, int Hq, int Hkv, float sc) { flash2FwdImpl<128>(o, lse, q, k, v, ks, T, Hq, Hkv, sc); }

// ---------------------------------------------------------------------------------------------
// Flash attention backward on register fragments (mma.sync m16n8k16), two kernels as in the wmma
// version (flash2_bwd_dkdv per key tile, flash2_bwd_dq per query tile; no atomics, no score matrix).
// dkdv computes the transposed blocks directly: Sᵀ = K_w·Qᵀ and dPᵀ = V_w·dOᵀ for the warp's 16
// keys, so Pᵀ and dSᵀ are already A fragments for dV += Pᵀ·dO and dK += dSᵀ·Q. Operands are read
// from shared tiles (row-major for the B fragments of Qᵀ/dOᵀ products, transposed copies for the
// B fragments of the ·dO / ·Q / ·K products), always as 32-bit loads.

template <int D>
struct B2Smem {
    static constexpr int QS = D + 8, VS = 64 + 8;
    static constexpr int T0 = 0;                       // four row tiles (64 × QS)
    static constexpr int T1 = T0 + 64 * QS * 2;
    static constexpr int T2 = T1 + 64 * QS * 2;
    static constexpr int T3 = T2 + 64 * QS * 2;
    static constexpr int X0 = T3 + 64 * QS * 2;        // transposed tiles (D × VS)
    static constexpr int X1 = X0 + D * VS * 2;
    static constexpr int BYTES_DQ = X1;                // dq uses T0..T3 and X0
    static constexpr int BYTES_DKDV = X1 + D * VS * 2; // dkdv uses T0..T3, X0, X1
};

// rows [0, valid) of a 64 × D tile (global row stride ld) into a transposed shared tile dst[d][row]
template <int D>
__device__ __forceinline__ void loadTransposed(bf16* dst, const bf16* src, long ld, int valid) {
    for (int e = threadIdx.x; e < 64 * (D / 8); e += blockDim.x) {
        int r = e % 64, c = (e / 64) * 8;
        uint4 u = make_uint4(0, 0, 0, 0);
        if (r < valid) u = *reinterpret_cast<const uint4*>(src + r * ld + c);
        const bf16* hv = reinterpret_cast<const bf16*>(&u);
#pragma unroll
        for (int j = 0; j < 8; j++) dst[(c + j) * B2Smem<D>::VS + r] = hv[j];
    }
}

// acc[8][4] (16 rows × 64 cols) = A_w (16 × D, rows 16w.. of row tile As) · Bᵀ (B = 64 × D row tile)
template <int D>
__device__ __forceinline__ void rowsTimesRowsT(float (*acc)[4], const bf16* As, const bf16* Bs, int warp, int gid, int tid) {
    constexpr int QS = B2Smem<D>::QS;
#pragma unroll
    for (int j = 0; j < 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    const bf16* aw = As + warp * 16 * QS;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        unsigned a[4] = {lds32(aw + gid * QS + kk * 16 + tid * 2), lds32(aw + (gid + 8) * QS + kk * 16 + tid * 2),
                         lds32(aw + gid * QS + kk * 16 + 8 + tid * 2), lds32(aw + (gid + 8) * QS + kk * 16 + 8 + tid * 2)};
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const bf16* br = Bs + (j * 8 + gid) * QS + kk * 16 + tid * 2;
            mma16816(acc[j], a, lds32(br), lds32(br + 8));
        }
    }
}

// out[D/8][4] (16 × D) += X (16 × 64, given as fragments x[8][4] in the C layout) · Y, where Y
// (64 × D) is supplied transposed in shared memory (Yt[d][row], stride VS).
template <int D>
__device__ __forceinline__ void fragsTimesTile(float (*out)[4], float (*x)[4], const bf16* Yt, int gid, int tid) {
    constexpr int VS = B2Smem<D>::VS;
#pragma unroll
    for (int kq = 0; kq < 4; kq++) {
        unsigned a[4] = {packBf16(x[2 * kq][0], x[2 * kq][1]), packBf16(x[2 * kq][2], x[2 * kq][3]),
                         packBf16(x[2 * kq + 1][0], x[2 * kq + 1][1]), packBf16(x[2 * kq + 1][2], x[2 * kq + 1][3])};
#pragma unroll
        for (int j = 0; j < D / 8; j++) {
            const bf16* yr = Yt + (j * 8 + gid) * VS + kq * 16 + tid * 2;
            mma16816(out[j], a, lds32(yr), lds32(yr + 8));
        }
    }
}

template <int D>
__device__ __forceinline__ void storeFragRows(bf16* base, long ld, float (*acc)[4], int r0, int r1, int T, int gid, int tid) {
    if (r0 < T) {
#pragma unroll
        for (int j = 0; j < D / 8; j++) *reinterpret_cast<unsigned*>(base + r0 * ld + j * 8 + tid * 2) = packBf16(acc[j][0], acc[j][1]);
    }
    if (r1 < T) {
#pragma unroll
        for (int j = 0; j < D / 8; j++) *reinterpret_cast<unsigned*>(base + r1 * ld + j * 8 + tid * 2) = packBf16(acc[j][2], acc[j][3]);
    }
}

template <int D>
__device__ void flash2BwdDkDvImpl(bf16* dk, bf16* dv, const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                                  const float* lse, const float* Drow, const int* keyStart, int T, int Hq, int Hkv, float scale) {
    extern __shared__ __align__(128) unsigned char smemRaw[];
    using L = B2Smem<D>;
    bf16* Ks = reinterpret_cast<bf16*>(smemRaw + L::T0);
    bf16* Vs = reinterpret_cast<bf16*>(smemRaw + L::T1);
    bf16* Qs = reinterpret_cast<bf16*>(smemRaw + L::T2);
    bf16* dOs = reinterpret_cast<bf16*>(smemRaw + L::T3);
    bf16* Qt = reinterpret_cast<bf16*>(smemRaw + L::X0);
    bf16* dOt = reinterpret_cast<bf16*>(smemRaw + L::X1);
    __shared__ float lseS[64], drS[64];

    const int k0 = blockIdx.x * 64, g = blockIdx.y, b = blockIdx.z, G = Hq / Hkv;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tid = lane & 3;
    const int ks = keyStart[b];
    const long qld = (long)Hq * D, kld = (long)Hkv * D;
    const int kValid = min(64, T - k0);
    const int key0 = k0 + warp * 16 + gid, key1 = key0 + 8;

    faLoadTile<D>(Ks, k + ((long)b * T + k0) * kld + (long)g * D, kld, kValid);
    faLoadTile<D>(Vs, v + ((long)b * T + k0) * kld + (long)g * D, kld, kValid);
    float dkA[D / 8][4], dvA[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; j++) { dkA[j][0] = dkA[j][1] = dkA[j][2] = dkA[j][3] = 0.f; dvA[j][0] = dvA[j][1] = dvA[j][2] = dvA[j][3] = 0.f; }

    if (k0 + 64 > ks) {  // otherwise every key of the tile is left padding: dK = dV = 0
        for (int hh = 0; hh < G; hh++) {
            int h = g * G + hh;
            long statBase = ((long)b * Hq + h) * T;
            for (int q0 = k0; q0 < T; q0 += 64) {
                __syncthreads();  // every warp is done with the previous query tiles
                int qValid = min(64, T - q0);
                const bf16* qsrc = q + ((long)b * T + q0) * qld + (long)h * D;
                const bf16* dsrc = dout + ((long)b * T + q0) * qld + (long)h * D;
                faLoadTile<D>(Qs, qsrc, qld, qValid);
                faLoadTile<D>(dOs, dsrc, qld, qValid);
                loadTransposed<D>(Qt, qsrc, qld, qValid);
                loadTransposed<D>(dOt, dsrc, qld, qValid);
                for (int e = threadIdx.x; e < 64; e += blockDim.x) {
                    bool ok = q0 + e < T;
                    lseS[e] = ok ? lse[statBase + q0 + e] : -INFINITY;
                    drS[e] = ok ? Drow[statBase + q0 + e] : 0.f;
                }
                __syncthreads();
                float st[8][4], dpt[8][4];
                rowsTimesRowsT<D>(st, Ks, Qs, warp, gid, tid);    // Sᵀ rows = this warp's keys
                rowsTimesRowsT<D>(dpt, Vs, dOs, warp, gid, tid);  // dPᵀ
#pragma unroll
                for (int j = 0; j < 8; j++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int key = e < 2 ? key0 : key1;
                        int qi = j * 8 + tid * 2 + (e & 1), query = q0 + qi;
                        float l = lseS[qi];
                        bool vis = query < T && key >= ks && key <= query && l != -INFINITY;
                        float p = vis ? __expf(st[j][e] * scale - l) : 0.f;
                        p = __bfloat162float(__float2bfloat16_rn(p));  // the bf16 P that dV's GEMM sees
                        st[j][e] = p;
                        dpt[j][e] = p * (dpt[j][e] - drS[qi]) * scale;
                    }
                }
                fragsTimesTile<D>(dvA, st, dOt, gid, tid);   // dV += Pᵀ·dO
                fragsTimesTile<D>(dkA, dpt, Qt, gid, tid);   // dK += dSᵀ·Q
            }
        }
    }
    storeFragRows<D>(dk + (long)b * T * kld + (long)g * D, kld, dkA, key0, key1, T, gid, tid);
    storeFragRows<D>(dv + (long)b * T * kld + (long)g * D, kld, dvA, key0, key1, T, gid, tid);
}

template <int D>
__device__ void flash2BwdDqImpl(bf16* dq, const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                                const float* lse, const float* Drow, const int* keyStart, int T, int Hq, int Hkv, float scale) {
    extern __shared__ __align__(128) unsigned char smemRaw[];
    using L = B2Smem<D>;
    bf16* Qs = reinterpret_cast<bf16*>(smemRaw + L::T0);
    bf16* dOs = reinterpret_cast<bf16*>(smemRaw + L::T1);
    bf16* Ks = reinterpret_cast<bf16*>(smemRaw + L::T2);
    bf16* Vs = reinterpret_cast<bf16*>(smemRaw + L::T3);
    bf16* Kt = reinterpret_cast<bf16*>(smemRaw + L::X0);

    const int q0 = blockIdx.x * 64, h = blockIdx.y, b = blockIdx.z;
    const int g = h / (Hq / Hkv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tid = lane & 3;
    const int ks = keyStart[b];
    const long qld = (long)Hq * D, kld = (long)Hkv * D;
    const int qValid = min(64, T - q0);
    const int t0 = q0 + warp * 16 + gid, t1 = t0 + 8;
    const long statBase = ((long)b * Hq + h) * T;
    const float l0 = t0 < T ? lse[statBase + t0] : -INFINITY, l1 = t1 < T ? lse[statBase + t1] : -INFINITY;
    const float r0 = t0 < T ? Drow[statBase + t0] : 0.f, r1 = t1 < T ? Drow[statBase + t1] : 0.f;

    faLoadTile<D>(Qs, q + ((long)b * T + q0) * qld + (long)h * D, qld, qValid);
    faLoadTile<D>(dOs, dout + ((long)b * T + q0) * qld + (long)h * D, qld, qValid);
    float dqA[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; j++) dqA[j][0] = dqA[j][1] = dqA[j][2] = dqA[j][3] = 0.f;

    const int kEnd = min(T, q0 + 64);
    const int kBegin = (max(0, ks) / 64) * 64;
    for (int k0 = kBegin; k0 < kEnd; k0 += 64) {
        __syncthreads();  // every warp is done with the previous key tiles
        int kValid = min(64, T - k0);
        const bf16* ksrc = k + ((long)b * T + k0) * kld + (long)g * D;
        faLoadTile<D>(Ks, ksrc, kld, kValid);
        faLoadTile<D>(Vs, v + ((long)b * T + k0) * kld + (long)g * D, kld, kValid);
        loadTransposed<D>(Kt, ksrc, kld, kValid);
        __syncthreads();
        float s[8][4], dp[8][4];
        rowsTimesRowsT<D>(s, Qs, Ks, warp, gid, tid);
        rowsTimesRowsT<D>(dp, dOs, Vs, warp, gid, tid);
#pragma unroll
        for (int j = 0; j < 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = k0 + j * 8 + tid * 2 + (e & 1);
                int query = e < 2 ? t0 : t1;
                float l = e < 2 ? l0 : l1, dr = e < 2 ? r0 : r1;
                bool vis = query < T && key >= ks && key <= query && l != -INFINITY;
                float p = vis ? __expf(s[j][e] * scale - l) : 0.f;
                p = __bfloat162float(__float2bfloat16_rn(p));
                dp[j][e] = p * (dp[j][e] - dr) * scale;
            }
        }
        fragsTimesTile<D>(dqA, dp, Kt, gid, tid);  // dQ += dS·K
    }
    storeFragRows<D>(dq + (long)b * T * qld + (long)h * D, qld, dqA, t0, t1, T, gid, tid);
}

#define FLASH2_BWD(DD) \
    extern "C" __global__ void __launch_bounds__(128) flash2_bwd_dkdv_d##DD(bf16* dk, bf16* dv, const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* Drow, const int* ks, int T, int Hq, int Hkv, float sc) \
        { flash2BwdDkDvImpl<DD>(dk, dv, q, k, v, dout, lse, Drow, ks, T, Hq, Hkv, sc); } \
    extern "C" __global__ void __launch_bounds__(128) flash2_bwd_dq_d##DD(bf16* dq, const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* Drow, const int* ks, int T, int Hq, int Hkv, float sc) \
        { flash2BwdDqImpl<DD>(dq, q, k, v, dout, lse, Drow, ks, T, Hq, Hkv, sc); }
FLASH2_BWD(32)
FLASH2_BWD(64)
FLASH2_BWD(128)

// ---------------------------------------------------------------------------------------------
// FLASH_PIPELINED: FlashAttention-2-style kernels for bf16 with the loads overlapped with the math.
// Tiles move global -> shared with cp.async (16 bytes per thread-step, zero-filled past T), double
// buffered so the next K/V (forward) or Q/dO (backward) tile lands while the tensor cores work on
// this one; every mma.sync operand comes from shared memory through ldmatrix (x4, .trans for the
// operands whose reduction dimension runs down the rows: V in P·V, dO/Q/K in the backward), with
// row strides of D+8 elements so the eight 16-byte rows of each 8×8 matrix hit distinct banks.
// Softmax runs in base 2: scores are scaled by scale·log2(e) once and exponentiated with ex2.approx.
// Causal and left-padding tiles that are wholly masked are skipped; the per-element mask is applied
// only on tiles that straddle the diagonal, keyStart or T.
//
// Forward: one block per (128 queries, query head, sequence), heaviest query tiles first; each warp
// owns 16·MT query rows (MT = 2 at D = 128: 4 warps; MT = 1 below: 8 warps), S (16·MT × 64) and
// O (16·MT × D) live in registers.
// Backward: flash3_bwd per (64 keys, kv head, sequence), 4 warps, warp w owns 16 keys: for every
// query head of the group and every 32-query tile at or after the keys it forms Sᵀ = K_w·Qᵀ and
// dPᵀ = V_w·dOᵀ, recomputes Pᵀ from the forward's lse, dSᵀ = Pᵀ ⊙ (dPᵀ − Drow)·scale, and
// accumulates dV += Pᵀ·dO and dK += dSᵀ·Q in registers (Pᵀ and dSᵀ are already A fragments). dQ
// needs a sum over key tiles, i.e. over blocks: dSᵀ goes to shared memory, the block forms its
// 32 × D share of dQ = dS·K and adds it into an fp32 accumulator with vector reductions
// (red.global.add.v2.f32); attn_dq_convert rounds that to bf16 afterwards. Drow = rowsum(dO ⊙ O)
// and the cleared accumulator come from attn_bwd_prep before the kernel.

__device__ __forceinline__ unsigned smemAddr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

// 16 bytes global -> shared, asynchronously; zero-filled (nothing read) when !valid.
__device__ __forceinline__ void cpAsync16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smemAddr(dst)), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cpAsyncWaitAll() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Four 8×8 b16 matrices; lane l gives the address of row l%8 of matrix l/8; register i gets
// matrix i (lane: row lane/4, columns 2·(lane%4)+{0,1}); .trans delivers the transposes.
__device__ __forceinline__ void ldsm4(unsigned* r, const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smemAddr(p)) : "memory");
}
__device__ __forceinline__ void ldsm4t(unsigned* r, const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smemAddr(p)) : "memory");
}

__device__ __forceinline__ float ex2(float x) {  // 2^x; 2^−inf = 0
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ void redAdd2(float* p, float a, float b) {
#if __CUDA_ARCH__ >= 900
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(a), "f"(b) : "memory");
#else
    atomicAdd(p, a);
    atomicAdd(p + 1, b);
#endif
}

// ROWS × D bf16 tile (global row stride ld) -> shared (row stride D+8) by cp.async; rows >= valid
// (>= 1) are zero. NT threads take part.
template <int D, int ROWS, int NT>
__device__ __forceinline__ void cpTile(bf16* dst, const bf16* src, long ld, int valid) {
    constexpr int VPR = D / 8;
#pragma unroll
    for (int e = threadIdx.x; e < ROWS * VPR; e += NT) {
        int r = e / VPR, c = (e % VPR) * 8;
        bool ok = r < valid;
        cpAsync16(dst + r * (D + 8) + c, ok ? src + r * ld + c : src, ok);
    }
}

// 16 rows × D of a warp (row stride D+8 in shared) -> global rows r0.. (stride ld), rows >= T
// skipped; one 16-byte store per lane-step so a warp writes whole row segments.
template <int D>
__device__ __forceinline__ void warpRowsOut(bf16* dst, long ld, const bf16* src, int r0, int T, int lane) {
    constexpr int VPR = D / 8;
#pragma unroll
    for (int e = lane; e < 16 * VPR; e += 32) {
        int r = e / VPR, c = (e % VPR) * 8;
        if (r0 + r < T) *reinterpret_cast<uint4*>(dst + (long)(r0 + r) * ld + c) = *reinterpret_cast<const uint4*>(src + r * (D + 8) + c);
    }
}

// C fragments (rows gid / gid+8, 8-column tiles) of a 16 × D accumulator, times f0 / f1, as bf16 into
// shared rows (stride D+8) — the staging for warpRowsOut.
template <int D>
__device__ __forceinline__ void fragsToShared(bf16* dst, float (*acc)[4], float f0, float f1, int gid, int tid) {
#pragma unroll
    for (int j = 0; j < D / 8; j++) {
        *reinterpret_cast<unsigned*>(dst + gid * (D + 8) + j * 8 + tid * 2) = packBf16(acc[j][0] * f0, acc[j][1] * f0);
        *reinterpret_cast<unsigned*>(dst + (gid + 8) * (D + 8) + j * 8 + tid * 2) = packBf16(acc[j][2] * f1, acc[j][3] * f1);
    }
}

template <int D>
struct F3Smem {
    static constexpr int BQ = 128, BK = 64, SS = D + 8;
    static constexpr int Q = 0;
    static constexpr int K = Q + BQ * SS * 2;       // two buffers
    static constexpr int V = K + 2 * BK * SS * 2;   // two buffers
    static constexpr int BYTES = V + 2 * BK * SS * 2;
};

// MT = 16-row m-tiles per warp: 1 (8 warps, 128 registers) or 2 (4 warps of 32 rows: each K and V
// fragment read from shared memory feeds two m-tiles, at twice the accumulator registers).
template <int D, int MT>
__device__ void flash3FwdImpl(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* keyStart,
                              int T, int Hq, int Hkv, float scaleLog2) {
    extern __shared__ __align__(128) unsigned char smemRaw[];
    using L = F3Smem<D>;
    constexpr int BQ = L::BQ, BK = L::BK, SS = L::SS, NT = 32 * (BQ / (16 * MT)), WR = 16 * MT;
    bf16* Qs = reinterpret_cast<bf16*>(smemRaw + L::Q);
    bf16* Ks = reinterpret_cast<bf16*>(smemRaw + L::K);
    bf16* Vs = reinterpret_cast<bf16*>(smemRaw + L::V);

    const int h = blockIdx.x, b = blockIdx.y, q0 = (gridDim.z - 1 - blockIdx.z) * BQ;  // longest tiles first
    const int g = h / (Hq / Hkv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tid = lane & 3;
    const int ks = max(0, keyStart[b]);
    const long qld = (long)Hq * D, kld = (long)Hkv * D;
    const bf16* kb = k + (long)b * T * kld + (long)g * D;
    const bf16* vb = v + (long)b * T * kld + (long)g * D;
    const int kEnd = min(T, q0 + BQ);                 // keys after the tile's last query are masked for all its rows
    const int kBegin = (min(ks, kEnd) / BK) * BK;     // tiles wholly before keyStart are masked

    cpTile<D, BQ, NT>(Qs, q + ((long)b * T + q0) * qld + (long)h * D, qld, min(BQ, T - q0));
    if (kBegin < kEnd) {
        cpTile<D, BK, NT>(Ks, kb + (long)kBegin * kld, kld, min(BK, T - kBegin));
        cpTile<D, BK, NT>(Vs, vb + (long)kBegin * kld, kld, min(BK, T - kBegin));
    }
    cpAsyncCommit();

    float o[MT][D / 8][4];
    float m[MT][2], l[MT][2];  // rows gid, gid+8 of each m-tile (base-2 max; l: this lane's partial)
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int j = 0; j < D / 8; j++) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.f;
    }
    const int wq0 = q0 + warp * WR;
    const bf16* Qw = Qs + warp * WR * SS;

    int buf = 0;
    for (int k0 = kBegin; k0 < kEnd; k0 += BK, buf ^= 1) {
        cpAsyncWaitAll();
        __syncthreads();  // tile k0 is in buf for everyone; everyone is done with buf^1
        if (k0 + BK < kEnd) {
            int n0 = k0 + BK;
            cpTile<D, BK, NT>(Ks + (buf ^ 1) * BK * SS, kb + (long)n0 * kld, kld, min(BK, T - n0));
            cpTile<D, BK, NT>(Vs + (buf ^ 1) * BK * SS, vb + (long)n0 * kld, kld, min(BK, T - n0));
        }
        cpAsyncCommit();
        if (k0 > wq0 + WR - 1 || wq0 >= T) continue;  // every key after this warp's queries (or no queries)
        const bf16* Kt = Ks + buf * BK * SS;
        const bf16* Vt = Vs + buf * BK * SS;

        float s[MT][8][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < 8; j++) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            unsigned a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) ldsm4(a[mt], Qw + (mt * 16 + (lane & 15)) * SS + kk * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int jp = 0; jp < 4; jp++) {
                unsigned bb[4];
                ldsm4(bb, Kt + (jp * 16 + (lane >> 4) * 8 + (lane & 7)) * SS + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(s[mt][2 * jp], a[mt], bb[0], bb[1]);
                    mma16816(s[mt][2 * jp + 1], a[mt], bb[2], bb[3]);
                }
            }
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int mq0 = wq0 + mt * 16, r0 = mq0 + gid, r1 = r0 + 8;
            const bool full = k0 + BK - 1 <= mq0 && k0 >= ks && k0 + BK <= T;
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int j = 0; j < 8; j++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float x = s[mt][j][e] * scaleLog2;
                    if (!full) {
                        int key = k0 + j * 8 + tid * 2 + (e & 1), row = e < 2 ? r0 : r1;
                        if (key < ks || key > row) x = -INFINITY;
                    }
                    s[mt][j][e] = x;
                }
                mx0 = fmaxf(mx0, fmaxf(s[mt][j][0], s[mt][j][1]));
                mx1 = fmaxf(mx1, fmaxf(s[mt][j][2], s[mt][j][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            const float n0 = fmaxf(m[mt][0], mx0), n1 = fmaxf(m[mt][1], mx1);
            const float z0 = n0 == -INFINITY ? 0.f : n0, z1 = n1 == -INFINITY ? 0.f : n1;  // no key yet: everything stays 0
            const float a0 = ex2(m[mt][0] - z0), a1 = ex2(m[mt][1] - z1);
            m[mt][0] = n0; m[mt][1] = n1;
            float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                s[mt][j][0] = ex2(s[mt][j][0] - z0); s[mt][j][1] = ex2(s[mt][j][1] - z0);
                s[mt][j][2] = ex2(s[mt][j][2] - z1); s[mt][j][3] = ex2(s[mt][j][3] - z1);
                ps0 += s[mt][j][0] + s[mt][j][1];
                ps1 += s[mt][j][2] + s[mt][j][3];
            }
            l[mt][0] = l[mt][0] * a0 + ps0;
            l[mt][1] = l[mt][1] * a1 + ps1;
#pragma unroll
            for (int j = 0; j < D / 8; j++) { o[mt][j][0] *= a0; o[mt][j][1] *= a0; o[mt][j][2] *= a1; o[mt][j][3] *= a1; }
        }
        // O += P·V over four 16-key steps; S n-tiles 2kq, 2kq+1 are the A fragment as they stand
#pragma unroll
        for (int kq = 0; kq < 4; kq++) {
            unsigned pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                pa[mt][0] = packBf16(s[mt][2 * kq][0], s[mt][2 * kq][1]);
                pa[mt][1] = packBf16(s[mt][2 * kq][2], s[mt][2 * kq][3]);
                pa[mt][2] = packBf16(s[mt][2 * kq + 1][0], s[mt][2 * kq + 1][1]);
                pa[mt][3] = packBf16(s[mt][2 * kq + 1][2], s[mt][2 * kq + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                unsigned bb[4];
                ldsm4t(bb, Vt + (kq * 16 + (lane & 15)) * SS + dp * 16 + (lane >> 4) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(o[mt][2 * dp], pa[mt], bb[0], bb[1]);
                    mma16816(o[mt][2 * dp + 1], pa[mt], bb[2], bb[3]);
                }
            }
        }
    }
    // Q rows were loaded by cp.async from every thread: a block that met no key tile (all left
    // padding) has not yet waited on them through a barrier, and the staging below overwrites them
    cpAsyncWaitAll();
    __syncthreads();
    const float LN2 = 0.69314718055994531f;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        float l0 = l[mt][0], l1 = l[mt][1];
        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
        // the warp's own Q rows are free now (only it read them): stage O there, then write whole rows
        bf16* stage = Qs + (warp * WR + mt * 16) * SS;
        fragsToShared<D>(stage, o[mt], l0 > 0.f ? 1.f / l0 : 0.f, l1 > 0.f ? 1.f / l1 : 0.f, gid, tid);
        __syncwarp();
        const int r0 = wq0 + mt * 16 + gid, r1 = r0 + 8;
        warpRowsOut<D>(out + (long)b * T * qld + (long)h * D, qld, stage, wq0 + mt * 16, T, lane);
        if (tid == 0 && r0 < T) lse[((long)b * Hq + h) * T + r0] = l0 > 0.f ? (m[mt][0] + __log2f(l0)) * LN2 : -INFINITY;
        if (tid == 0 && r1 < T) lse[((long)b * Hq + h) * T + r1] = l1 > 0.f ? (m[mt][1] + __log2f(l1)) * LN2 : -INFINITY;
    }
}

#define FLASH3_FWD(NAME, DD, MT, MINB) \
    extern "C" __global__ void __launch_bounds__(256 / MT, MINB) NAME(bf16* o, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* ks, int T, int Hq, int Hkv, float scLog2) \
        { flash3FwdImpl<DD, MT>(o, lse, q, k, v, ks, T, Hq, Hkv, scLog2); }
FLASH3_FWD(flash3_fwd_d32, 32, 1, 2)
FLASH3_FWD(flash3_fwd_d64, 64, 1, 2)
// D = 128: 4 warps of 32 rows, two blocks per SM (255 registers, a few spilled). Measured at B8
// T512 32/8×128 (NOTES.md run 4): 101 µs, against 104 for 8 warps of 16 rows at two blocks per SM
// (128 registers) and 119 for 8 warps of 16 rows at one block per SM.
FLASH3_FWD(flash3_fwd_d128, 128, 2, 2)

// Before flash3_bwd: Drow[(b,h,t)] = Σ_d dout·out over the row's D elements (bf16, token-major) and
// the fp32 dQ accumulator row zeroed; D/8 lanes per row, 16 bytes per lane (D a multiple of 8, ≤ 256).
extern "C" __global__ void attn_bwd_prep(float* Drow, float* dqAcc, const bf16* dout, const bf16* out, int B, int T, int H, int D) {
    const int lpr = D / 8, rpw = 32 / lpr;  // lanes per row, rows per warp
    const int lane = threadIdx.x & 31;
    const long rows = (long)B * H * T;
    const long row = (((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5) * rpw + lane / lpr;
    const int sub = lane % lpr;
    float s = 0.f;
    if (row < rows) {
        int t = (int)(row % T);
        long bh = row / T;
        int h = (int)(bh % H);
        long b = bh / H;
        long base = (b * T + t) * (long)H * D + (long)h * D + sub * 8;
        float x[8], y[8];
        ld8(dout, base, x);
        ld8(out, base, y);
#pragma unroll
        for (int j = 0; j < 8; j++) s = fmaf(x[j], y[j], s);
        float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
        *reinterpret_cast<float4*>(dqAcc + base) = z;
        *reinterpret_cast<float4*>(dqAcc + base + 4) = z;
    }
    for (int o = lpr / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (row < rows && sub == 0) Drow[row] = s;
}

template <int D, int NW>
struct B3Smem {
    static constexpr int BK = 16 * NW, BQ = 32, SS = D + 8, DSS = BQ + 8;
    static constexpr int K = 0;
    static constexpr int V = K + BK * SS * 2;
    static constexpr int Q = V + BK * SS * 2;       // two buffers
    static constexpr int DO = Q + 2 * BQ * SS * 2;  // two buffers
    static constexpr int DS = DO + 2 * BQ * SS * 2; // dSᵀ (BK × BQ, stride DSS)
    static constexpr int LSE = DS + BK * DSS * 2;   // two buffers of BQ floats (lse·log2 e, +inf: no key)
    static constexpr int DR = LSE + 2 * BQ * 4;     // two buffers of BQ floats
    static constexpr int BYTES = DR + 2 * BQ * 4;
};

template <int D, int NW>
__device__ void flash3BwdImpl(bf16* dk, bf16* dv, float* dqAcc, const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                              const float* lse, const float* Drow, const int* keyStart, int T, int Hq, int Hkv, float scaleLog2, float scale) {
    extern __shared__ __align__(128) unsigned char smemRaw[];
    using L = B3Smem<D, NW>;
    constexpr int NT = 32 * NW;
    constexpr int BK = L::BK, BQ = L::BQ, SS = L::SS, DSS = L::DSS;
    bf16* Ks = reinterpret_cast<bf16*>(smemRaw + L::K);
    bf16* Vs = reinterpret_cast<bf16*>(smemRaw + L::V);
    bf16* Qs = reinterpret_cast<bf16*>(smemRaw + L::Q);
    bf16* dOs = reinterpret_cast<bf16*>(smemRaw + L::DO);
    bf16* dSt = reinterpret_cast<bf16*>(smemRaw + L::DS);
    float* lseS = reinterpret_cast<float*>(smemRaw + L::LSE);
    float* drS = reinterpret_cast<float*>(smemRaw + L::DR);

    const int g = blockIdx.x, b = blockIdx.y, k0 = blockIdx.z * BK;  // key tile 0 (most query tiles) first
    const int G = Hq / Hkv;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tid = lane & 3;
    const int ks = max(0, keyStart[b]);
    const long qld = (long)Hq * D, kld = (long)Hkv * D;
    const int wk0 = k0 + warp * 16, key0 = wk0 + gid, key1 = key0 + 8;

    // query tiles that can see a key of this tile: from k0 (causal) and from keyStart (rows before it
    // see nothing); none at all when the whole key tile is left padding
    const int qStart = max(k0, (ks / BQ) * BQ);
    const int nQT = (k0 + BK <= ks || qStart >= T) ? 0 : (T - qStart + BQ - 1) / BQ;
    const int total = G * nQT;

    auto loadQTile = [&](int it, int bf) {
        int hh = it / nQT, q0 = qStart + (it % nQT) * BQ, h = g * G + hh, valid = min(BQ, T - q0);
        const long off = ((long)b * T + q0) * qld + (long)h * D;
        cpTile<D, BQ, NT>(Qs + bf * BQ * SS, q + off, qld, valid);
        cpTile<D, BQ, NT>(dOs + bf * BQ * SS, dout + off, qld, valid);
        if (threadIdx.x < BQ) {
            int qq = q0 + threadIdx.x;
            float l = qq < T ? lse[((long)b * Hq + h) * T + qq] : -INFINITY;
            lseS[bf * BQ + threadIdx.x] = l == -INFINITY ? INFINITY : l * 1.4426950408889634f;  // 2^(x − inf) = 0
        } else if (threadIdx.x < 2 * BQ) {
            int qq = q0 + threadIdx.x - BQ;
            drS[bf * BQ + threadIdx.x - BQ] = qq < T ? Drow[((long)b * Hq + h) * T + qq] : 0.f;
        }
    };

    float dkA[D / 8][4], dvA[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; j++) {
        dkA[j][0] = dkA[j][1] = dkA[j][2] = dkA[j][3] = 0.f;
        dvA[j][0] = dvA[j][1] = dvA[j][2] = dvA[j][3] = 0.f;
    }
    if (total > 0) {
        const int kValid = min(BK, T - k0);
        cpTile<D, BK, NT>(Ks, k + ((long)b * T + k0) * kld + (long)g * D, kld, kValid);
        cpTile<D, BK, NT>(Vs, v + ((long)b * T + k0) * kld + (long)g * D, kld, kValid);
        loadQTile(0, 0);
        cpAsyncCommit();
    }
    const bf16* Kw = Ks + warp * 16 * SS;
    const bf16* Vw = Vs + warp * 16 * SS;
    // dQ share of this warp: query rows qr..qr+15 of the tile, head-dim columns dc..dc+DW−1
    constexpr int DW = D / (NW / 2);
    static_assert(DW % 16 == 0, "each warp's dQ columns must be whole ldmatrix.x4 pairs");
    const int qr = (warp & 1) * 16, dc = (warp >> 1) * DW;

    int buf = 0;
    for (int it = 0; it < total; it++, buf ^= 1) {
        const int hh = it / nQT, q0 = qStart + (it % nQT) * BQ, h = g * G + hh;
        cpAsyncWaitAll();
        __syncthreads();  // tile it is in buf for everyone; everyone is done with buf^1 and with dSᵀ
        if (it + 1 < total) loadQTile(it + 1, buf ^ 1);
        cpAsyncCommit();
        const bf16* Qb = Qs + buf * BQ * SS;
        const bf16* dOb = dOs + buf * BQ * SS;
        const float* lb = lseS + buf * BQ;
        const float* db = drS + buf * BQ;

        // Sᵀ (16 keys × 32 queries) = K_w·Qᵀ and dPᵀ = V_w·dOᵀ
        float st[4][4], dpt[4][4];
#pragma unroll
        for (int j = 0; j < 4; j++) st[j][0] = st[j][1] = st[j][2] = st[j][3] = dpt[j][0] = dpt[j][1] = dpt[j][2] = dpt[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            unsigned ak[4], av[4];
            ldsm4(ak, Kw + (lane & 15) * SS + kk * 16 + (lane >> 4) * 8);
            ldsm4(av, Vw + (lane & 15) * SS + kk * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int jp = 0; jp < 2; jp++) {
                unsigned bq[4], bo[4];
                const int off = (jp * 16 + (lane >> 4) * 8 + (lane & 7)) * SS + kk * 16 + ((lane >> 3) & 1) * 8;
                ldsm4(bq, Qb + off);
                ldsm4(bo, dOb + off);
                mma16816(st[2 * jp], ak, bq[0], bq[1]);
                mma16816(st[2 * jp + 1], ak, bq[2], bq[3]);
                mma16816(dpt[2 * jp], av, bo[0], bo[1]);
                mma16816(dpt[2 * jp + 1], av, bo[2], bo[3]);
            }
        }
        // Pᵀ = 2^(Sᵀ·scale·log2 e − lse·log2 e) on visible (key, query) pairs, rounded to bf16 as the
        // GEMM path's P; dSᵀ = Pᵀ ⊙ (dPᵀ − Drow)·scale
        const bool full = q0 >= k0 + BK - 1 && k0 >= ks;
#pragma unroll
        for (int j = 0; j < 4; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int qi = j * 8 + tid * 2 + (e & 1);
                float p = ex2(st[j][e] * scaleLog2 - lb[qi]);
                if (!full) {
                    int key = e < 2 ? key0 : key1, query = q0 + qi;
                    if (key < ks || key > query) p = 0.f;
                }
                p = __bfloat162float(__float2bfloat16_rn(p));
                st[j][e] = p;
                dpt[j][e] = p * (dpt[j][e] - db[qi]) * scale;
            }
        }
        // dV += Pᵀ·dO, dK += dSᵀ·Q over two 16-query steps (B operands transposed out of shared)
#pragma unroll
        for (int kq = 0; kq < 2; kq++) {
            unsigned ap[4] = {packBf16(st[2 * kq][0], st[2 * kq][1]), packBf16(st[2 * kq][2], st[2 * kq][3]),
                              packBf16(st[2 * kq + 1][0], st[2 * kq + 1][1]), packBf16(st[2 * kq + 1][2], st[2 * kq + 1][3])};
            unsigned ad[4] = {packBf16(dpt[2 * kq][0], dpt[2 * kq][1]), packBf16(dpt[2 * kq][2], dpt[2 * kq][3]),
                              packBf16(dpt[2 * kq + 1][0], dpt[2 * kq + 1][1]), packBf16(dpt[2 * kq + 1][2], dpt[2 * kq + 1][3])};
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                unsigned bo[4], bq[4];
                const int off = (kq * 16 + (lane & 15)) * SS + dp * 16 + (lane >> 4) * 8;
                ldsm4t(bo, dOb + off);
                ldsm4t(bq, Qb + off);
                mma16816(dvA[2 * dp], ap, bo[0], bo[1]);
                mma16816(dvA[2 * dp + 1], ap, bo[2], bo[3]);
                mma16816(dkA[2 * dp], ad, bq[0], bq[1]);
                mma16816(dkA[2 * dp + 1], ad, bq[2], bq[3]);
            }
        }
        // dSᵀ of the whole block -> shared, then this warp's share of dQ = dS·K
#pragma unroll
        for (int j = 0; j < 4; j++) {
            *reinterpret_cast<unsigned*>(dSt + (warp * 16 + gid) * DSS + j * 8 + tid * 2) = packBf16(dpt[j][0], dpt[j][1]);
            *reinterpret_cast<unsigned*>(dSt + (warp * 16 + gid + 8) * DSS + j * 8 + tid * 2) = packBf16(dpt[j][2], dpt[j][3]);
        }
        __syncthreads();
        float dq[DW / 8][4];
#pragma unroll
        for (int j = 0; j < DW / 8; j++) dq[j][0] = dq[j][1] = dq[j][2] = dq[j][3] = 0.f;
#pragma unroll
        for (int kq = 0; kq < BK / 16; kq++) {
            unsigned a[4];
            ldsm4t(a, dSt + (kq * 16 + (lane >> 4) * 8 + (lane & 7)) * DSS + qr + ((lane >> 3) & 1) * 8);
#pragma unroll
            for (int dp = 0; dp < DW / 16; dp++) {
                unsigned bb[4];
                ldsm4t(bb, Ks + (kq * 16 + (lane & 15)) * SS + dc + dp * 16 + (lane >> 4) * 8);
                mma16816(dq[2 * dp], a, bb[0], bb[1]);
                mma16816(dq[2 * dp + 1], a, bb[2], bb[3]);
            }
        }
        const int t0 = q0 + qr + gid, t1 = t0 + 8;
        float* acc = dqAcc + (long)h * D + dc + tid * 2;
        if (t0 < T) {
            float* row = acc + ((long)b * T + t0) * qld;
#pragma unroll
            for (int j = 0; j < DW / 8; j++) redAdd2(row + j * 8, dq[j][0], dq[j][1]);
        }
        if (t1 < T) {
            float* row = acc + ((long)b * T + t1) * qld;
#pragma unroll
            for (int j = 0; j < DW / 8; j++) redAdd2(row + j * 8, dq[j][2], dq[j][3]);
        }
    }
    cpAsyncWaitAll();
    __syncthreads();  // every warp is done reading K and V: stage dK / dV through the warp's own rows
    bf16* kst = Ks + warp * 16 * SS;
    bf16* vst = Vs + warp * 16 * SS;
    fragsToShared<D>(kst, dkA, 1.f, 1.f, gid, tid);
    fragsToShared<D>(vst, dvA, 1.f, 1.f, gid, tid);
    __syncwarp();
    warpRowsOut<D>(dk + (long)b * T * kld + (long)g * D, kld, kst, wk0, T, lane);
    warpRowsOut<D>(dv + (long)b * T * kld + (long)g * D, kld, vst, wk0, T, lane);
}

#define FLASH3_BWD(NAME, DD, NW, MINB) \
    extern "C" __global__ void __launch_bounds__(32 * NW, MINB) NAME(bf16* dk, bf16* dv, float* dqAcc, const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* Drow, const int* ks, int T, int Hq, int Hkv, float scLog2, float sc) \
        { flash3BwdImpl<DD, NW>(dk, dv, dqAcc, q, k, v, dout, lse, Drow, ks, T, Hq, Hkv, scLog2, sc); }
FLASH3_BWD(flash3_bwd_d32, 32, 4, 4)
FLASH3_BWD(flash3_bwd_d64, 64, 4, 3)
// D = 128: 4 warps per 64 keys. Measured alternatives at B8 T512 32/8×128 (NOTES.md run 4): 8 warps
// per 128 keys (half the Q/dO tile loads and dQ reductions per key) ran the same; warps split into
// dV and dK roles of 32 keys each, with Pᵀ handed over in shared memory (a quarter fewer ldmatrix)
// ran 7% slower (an extra barrier per tile, K warps waiting on the exponentials).
FLASH3_BWD(flash3_bwd_d128, 128, 4, 2)

// dq (bf16) <- the fp32 dQ accumulator, 8 elements per thread-step (n8 = numel / 8, both 16-byte aligned).
extern "C" __global__ void attn_dq_convert(bf16* dq, const float* acc, long n8) {
    GRID_LOOP(e, n8) { float v8[8]; ld8(acc, e * 8, v8); st8(dq, e * 8, v8); }
}
