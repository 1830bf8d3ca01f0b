// Causal GQA attention, forward and backward, in two implementations selected by
// GpuBackend.AttentionKernel, plus a plain kernel for generation against a KV cache.
// GEMM path (any dtype, any head size): layout changes between the token-major activations (N, H·D)
// and the head-major (B, H, T, D) bf16 layout the cuBLAS strided-batched GEMMs read (in it the G
// query heads of one KV group are one contiguous (G·T, D) matrix, so one GEMM batch entry serves a
// whole group), the fused masked softmax (causal + left-padding via keyStart, lse stash, rows with
// no visible key output 0) and its backward. FLASH_PIPELINED (bf16, D = 32/64/128; the default where
// it applies): fused kernels that never write a score matrix, in the second half of this file.
// (Two earlier fused implementations, FLASH_WMMA and FLASH_MMA, measured slower and were removed;
// their timings stay in benchmarks/gpu/NOTES.md.)
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

// Generation: n new query tokens at slots [pos0, pos0+n) of each of B sequences decoded in lockstep,
// against time-major caches (maxT, B, Hkv·D) holding slots [0, pos0+n): slot j of sequence b is row
// j·B + b, and token i of sequence b is q/out row i·B + b. keyStart (B) is each sequence's first real
// slot (left padding before it is masked; null: none); a token before it sees no key and outputs 0.
// B = 1 with no keyStart is the one-sequence layout. One block per (token i, head h, sequence b);
// scores in dynamic shared memory: the query row (D floats) then one score per slot up to the token's,
// attn_cached_smem_entry_bytes each.
// Launch constants the host reads from this module's PTX (Kernels.constant): each is a __constant__
// int with C linkage, so its name and value appear verbatim in the PTX text.
extern "C" __constant__ int attn_cached_smem_entry_bytes = sizeof(float);
template <typename T>
__device__ void attnCachedImpl(T* out, const T* q, const T* kc, const T* vc, const int* keyStart, int pos0, int Hq, int Hkv, int D, float scale) {
    extern __shared__ __align__(128) unsigned char smemRaw[];
    float* smem = reinterpret_cast<float*>(smemRaw);
    int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, B = gridDim.z;
    int g = h / (Hq / Hkv);
    int L = pos0 + i + 1;                        // slots [first, L) are visible
    int first = keyStart ? keyStart[b] : 0;
    long row = (long)i * B + b;
    T* o = out + row * Hq * D + (long)h * D;
    if (first >= L) {                            // a padding slot (uniform over the block: no barrier skipped)
        for (int d = threadIdx.x; d < D; d += blockDim.x) st(o, d, 0.f);
        return;
    }
    float* qs = smem;       // D
    float* sc = smem + D;   // L - first
    const T* qr = q + row * Hq * D + (long)h * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = ld(qr, d);
    __syncthreads();
    long kvStride = (long)B * Hkv * D;           // one slot of every sequence
    const T* kb = kc + (long)b * Hkv * D + (long)g * D;
    const T* vb = vc + (long)b * Hkv * D + (long)g * D;
    float m = -INFINITY;
    for (int s = first + threadIdx.x; s < L; s += blockDim.x) {
        const T* kr = kb + s * kvStride;
        float a = 0.f;
        for (int d = 0; d < D; d++) a = fmaf(qs[d], ld(kr, d), a);
        a *= scale;
        sc[s - first] = a;
        m = fmaxf(m, a);
    }
    m = blockMax(m);
    float sum = 0.f;
    for (int s = threadIdx.x; s < L - first; s += blockDim.x) { float e = __expf(sc[s] - m); sc[s] = e; sum += e; }
    sum = blockSum(sum);  // its barriers also publish sc[]
    float inv = 1.f / sum;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float a = 0.f;
        for (int s = first; s < L; s++) a = fmaf(sc[s - first], ld(vb, s * kvStride + d), a);
        st(o, d, a * inv);
    }
}

extern "C" __global__ void to_heads_f32(bf16* d, const float* s, int B, int T, int H, int D, int vec) { toHeadsImpl(d, s, B, T, H, D, vec); }
extern "C" __global__ void to_heads_bf16(bf16* d, const bf16* s, int B, int T, int H, int D, int vec) { toHeadsImpl(d, s, B, T, H, D, vec); }
extern "C" __global__ void from_heads_f32(float* d, const bf16* s, int B, int T, int H, int D, int vec) { fromHeadsImpl(d, s, B, T, H, D, vec); }
extern "C" __global__ void from_heads_bf16(bf16* d, const bf16* s, int B, int T, int H, int D, int vec) { fromHeadsImpl(d, s, B, T, H, D, vec); }
extern "C" __global__ void attn_rowdot_f32(float* r, const float* d, const float* o, int B, int T, int H, int D) { rowDotImpl(r, d, o, B, T, H, D); }
extern "C" __global__ void attn_rowdot_bf16(float* r, const bf16* d, const bf16* o, int B, int T, int H, int D) { rowDotImpl(r, d, o, B, T, H, D); }
extern "C" __global__ void attn_cached_f32(float* o, const float* q, const float* k, const float* v, int p0, int Hq, int Hkv, int D, float sc) { attnCachedImpl(o, q, k, v, (const int*)nullptr, p0, Hq, Hkv, D, sc); }
extern "C" __global__ void attn_cached_bf16(bf16* o, const bf16* q, const bf16* k, const bf16* v, int p0, int Hq, int Hkv, int D, float sc) { attnCachedImpl(o, q, k, v, (const int*)nullptr, p0, Hq, Hkv, D, sc); }
extern "C" __global__ void attn_cached_batch_f32(float* o, const float* q, const float* k, const float* v, const int* ks, int p0, int Hq, int Hkv, int D, float sc) { attnCachedImpl(o, q, k, v, ks, p0, Hq, Hkv, D, sc); }
extern "C" __global__ void attn_cached_batch_bf16(bf16* o, const bf16* q, const bf16* k, const bf16* v, const int* ks, int p0, int Hq, int Hkv, int D, float sc) { attnCachedImpl(o, q, k, v, ks, p0, Hq, Hkv, D, sc); }

// ---------------------------------------------------------------------------------------------
// FLASH_PIPELINED: FlashAttention-2-style kernels for bf16 with the loads overlapped with the math.
// Tiles move global -> shared with cp.async (16 bytes per thread-step, zero-filled past T), double
// buffered so the next K/V (forward) or Q/dO (backward) tile lands while the tensor cores work on
// this one; every mma.sync operand comes from shared memory through ldmatrix (x4, .trans for the
// operands whose reduction dimension runs down the rows: V in P·V, dO/Q/K in the backward), with
// row strides of D+8 elements so the eight 16-byte rows of each 8×8 matrix hit distinct banks.
// Softmax runs in base 2: scores are scaled by scale·log2(e) once and exponentiated with ex2.approx.
// Causal and left-padding tiles that are wholly masked are skipped; the per-element mask is applied
// only on tiles that straddle the diagonal, keyStart or T. Same function as the GEMM path: lse =
// log Σ exp over the visible keys (−inf when a row sees none, and then its output row is 0); P and
// dS are rounded to bf16 before their products, as the GEMM path's bf16 P and dS are.
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

// C (16 × 8, fp32, 4 per lane) += A (16 × 16 bf16, 4 registers) · B (16 × 8 bf16, 2 registers):
// the m16n8k16 tensor-core step every product below is built from.
__device__ __forceinline__ void mma16816(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as one bf16 pair (lo in the low half): an accumulator fragment re-packed as an A operand.
__device__ __forceinline__ unsigned packBf16(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}

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

// The host sizes the launch from NAME_threads, NAME_rows (queries per block) and NAME_smem_bytes.
#define FLASH3_FWD(NAME, DD, MT, MINB) \
    extern "C" __constant__ int NAME##_threads = 256 / MT; \
    extern "C" __constant__ int NAME##_rows = F3Smem<DD>::BQ; \
    extern "C" __constant__ int NAME##_smem_bytes = F3Smem<DD>::BYTES; \
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

// The host sizes the launch from NAME_threads, NAME_rows (keys per block) and NAME_smem_bytes.
#define FLASH3_BWD(NAME, DD, NW, MINB) \
    extern "C" __constant__ int NAME##_threads = 32 * NW; \
    extern "C" __constant__ int NAME##_rows = B3Smem<DD, NW>::BK; \
    extern "C" __constant__ int NAME##_smem_bytes = B3Smem<DD, NW>::BYTES; \
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
