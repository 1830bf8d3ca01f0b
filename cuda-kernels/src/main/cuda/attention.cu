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
