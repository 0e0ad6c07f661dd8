// Tessera's GPU search kernels (PLAID pipeline on the device).
//
// Compiled by NVRTC at first use for the device's architecture (kernels/src/gpu.rs); no
// CUDA headers are included, so the source compiles with NVRTC alone.
//
// Data on the device (see storage/FORMAT.md, "Device layout"):
//   * codec: centroids f32[K, dim] and bucket weights f32[dim, 2^nbits], as stored;
//   * per segment, the stored bytes as they are: doc offsets u64[n_docs + 1], codes
//     (u16 or u32 per token), packed residuals u8[n_tokens * rb]; IVF postings decoded once
//     at upload into u32 list offsets [K_s + 1] and absolute local document ids;
//   * per snapshot: a segment table (first global document of each segment and the device
//     addresses of its arrays) and one tombstone bitmap over global document ids.
// A global document id is the segment's first global id plus the local id, in snapshot
// segment order: the order in which the CPU path enumerates candidates, so ties broken by
// the lower global id agree with the CPU's index-order tie-breaking.

typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned short u16;
typedef unsigned char u8;

#define FULL_MASK 0xffffffffu
#define NO_ID 0xffffffffu

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// Order-preserving map of a float to an unsigned key: a < b  <=>  key(a) < key(b).
__device__ __forceinline__ u32 float_key(float f) {
    u32 b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Key of -infinity: every valid score has a larger key.
#define NEG_INF_KEY 0x007fffffu

// Segment of global document `g`: the largest s with base[s] <= g.
__device__ __forceinline__ u32 find_segment(const u32* __restrict__ base, u32 n_seg, u32 g) {
    u32 lo = 0, hi = n_seg;
    while (hi - lo > 1) {
        u32 mid = (lo + hi) >> 1;
        if (base[mid] <= g) lo = mid; else hi = mid;
    }
    return lo;
}

__device__ __forceinline__ u32 load_code(const u8* codes, u32 width, u64 t) {
    return width == 2 ? (u32)((const u16*)codes)[t] : ((const u32*)codes)[t];
}

// Query x centroid scores, written twice: centroid-major s_cm[c * T + t] (read by the
// approximate scorer, whose lanes walk query tokens) and token-major s_tm[t * K + c] (read by
// the probe selection, one row per query token). Block (32, 8) computes a 32 x 32 tile;
// grid.x walks centroids (up to 2^24 of them), grid.y query tokens.
extern "C" __global__ void centroid_scores(const float* __restrict__ cent,
                                           const float* __restrict__ q, u32 K, u32 T, u32 dim,
                                           float* __restrict__ s_cm, float* __restrict__ s_tm) {
    __shared__ float tc[32][33];
    __shared__ float tq[32][33];
    const u32 tx = threadIdx.x, ty = threadIdx.y;
    const u32 c0 = blockIdx.x * 32, t0 = blockIdx.y * 32;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (u32 d0 = 0; d0 < dim; d0 += 32) {
        for (u32 r = ty; r < 32; r += 8) {
            const u32 c = c0 + r, t = t0 + r, d = d0 + tx;
            tc[r][tx] = (c < K && d < dim) ? cent[(u64)c * dim + d] : 0.f;
            tq[r][tx] = (t < T && d < dim) ? q[(u64)t * dim + d] : 0.f;
        }
        __syncthreads();
#pragma unroll 8
        for (u32 j = 0; j < 32; ++j) {
            const float qv = tq[tx][j];
#pragma unroll
            for (u32 i = 0; i < 4; ++i) acc[i] = fmaf(tc[ty + 8 * i][j], qv, acc[i]);
        }
        __syncthreads();
    }
    const u32 t = t0 + tx;
#pragma unroll
    for (u32 i = 0; i < 4; ++i) {
        const u32 c = c0 + ty + 8 * i;
        if (c < K && t < T) {
            s_cm[(u64)c * T + t] = acc[i];
            s_tm[(u64)t * K + c] = acc[i];
        }
    }
}

// Top-r of each row by (score descending, id ascending), one block per row, by radix
// selection on the order-preserving keys (4 passes of 8 bits), then, when the r-th key is
// tied, a second radix selection on the ids of the tied elements. Elements scoring -inf are
// never selected. Output is unordered; slots past the selected count get NO_ID / -inf.
// `ids == 0` means the id of element j is j. `totals` (optional) receives the number of
// valid (finite) elements of each row.
extern "C" __global__ void select_topk(const float* __restrict__ scores, u64 row_stride,
                                       u64 elem_stride, const u32* __restrict__ ids,
                                       u64 ids_row_stride, u32 n, u32 r,
                                       u32* __restrict__ out_ids, float* __restrict__ out_scores,
                                       u32 out_stride, u32* __restrict__ out_count,
                                       u32* __restrict__ totals) {
    __shared__ u32 hist[256];
    __shared__ u32 s_total, s_count, s_prefix, s_need, s_tie;
    const u32 tid = threadIdx.x, nt = blockDim.x, row = blockIdx.x;
    const float* rs = scores + (u64)row * row_stride;
    const u32* rid = ids ? ids + (u64)row * ids_row_stride : 0;
    if (tid == 0) { s_total = 0; s_count = 0; }
    __syncthreads();
    u32 local = 0;
    for (u32 j = tid; j < n; j += nt) local += float_key(rs[(u64)j * elem_stride]) > NEG_INF_KEY;
    atomicAdd(&s_total, local);
    __syncthreads();
    const u32 total = s_total;
    const bool take_all = total <= r;
    u32 kth = NEG_INF_KEY, idk = NO_ID;
    if (!take_all) {
        u32 prefix = 0, mask = 0, need = r;
        for (int pass = 0; pass < 4; ++pass) {
            const u32 shift = 24 - 8 * pass;
            for (u32 b = tid; b < 256; b += nt) hist[b] = 0;
            __syncthreads();
            for (u32 j = tid; j < n; j += nt) {
                const u32 k = float_key(rs[(u64)j * elem_stride]);
                if (k > NEG_INF_KEY && (k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (tid == 0) {
                u32 cum = 0;
                for (int b = 255; b >= 0; --b) {
                    if (cum + hist[b] >= need) {
                        s_prefix = prefix | ((u32)b << shift);
                        s_need = need - cum;
                        s_tie = hist[b];
                        break;
                    }
                    cum += hist[b];
                }
            }
            __syncthreads();
            prefix = s_prefix;
            need = s_need;
            mask |= 255u << shift;
        }
        kth = prefix;
        const u32 tie = s_tie;
        if (need < tie) {
            // The `need` smallest ids among the elements whose key is exactly `kth`.
            u32 ip = 0, im = 0, in = need;
            __syncthreads();
            for (int pass = 0; pass < 4; ++pass) {
                const u32 shift = 24 - 8 * pass;
                for (u32 b = tid; b < 256; b += nt) hist[b] = 0;
                __syncthreads();
                for (u32 j = tid; j < n; j += nt) {
                    if (float_key(rs[(u64)j * elem_stride]) != kth) continue;
                    const u32 id = rid ? rid[j] : j;
                    if ((id & im) == ip) atomicAdd(&hist[(id >> shift) & 255u], 1u);
                }
                __syncthreads();
                if (tid == 0) {
                    u32 cum = 0;
                    for (int b = 0; b < 256; ++b) {
                        if (cum + hist[b] >= in) {
                            s_prefix = ip | ((u32)b << shift);
                            s_need = in - cum;
                            break;
                        }
                        cum += hist[b];
                    }
                }
                __syncthreads();
                ip = s_prefix;
                in = s_need;
                im |= 255u << shift;
            }
            idk = ip;
        }
    }
    __syncthreads();
    for (u32 j = tid; j < n; j += nt) {
        const float s = rs[(u64)j * elem_stride];
        const u32 k = float_key(s);
        if (k <= NEG_INF_KEY) continue;
        const u32 id = rid ? rid[j] : j;
        if (take_all || k > kth || (k == kth && id <= idk)) {
            const u32 pos = atomicAdd(&s_count, 1u);
            out_ids[(u64)row * out_stride + pos] = id;
            out_scores[(u64)row * out_stride + pos] = s;
        }
    }
    __syncthreads();
    const u32 count = s_count;
    for (u32 p = count + tid; p < r; p += nt) {
        out_ids[(u64)row * out_stride + p] = NO_ID;
        out_scores[(u64)row * out_stride + p] = neg_inf();
    }
    if (tid == 0) {
        if (out_count) out_count[row] = count;
        if (totals) totals[row] = total;
    }
}

// Candidate marking: block (slot, segment) walks the posting list of probe `slot` (query
// token t = slot / P, probe p = slot % P) in that segment and sets the documents' bits in
// the query's bitmap. `probes == 0` probes every centroid (P = K). Repeated centroids set
// the same bits, so the union needs no deduplication.
extern "C" __global__ void mark_candidates(const u32* __restrict__ probes, u32 P,
                                           const u32* __restrict__ tok_query,
                                           const u64* __restrict__ seg_post_off,
                                           const u64* __restrict__ seg_post_docs,
                                           const u32* __restrict__ seg_ncent,
                                           const u32* __restrict__ seg_base,
                                           u32* __restrict__ bitmap, u32 words) {
    const u32 slot = blockIdx.x, s = blockIdx.y;
    const u32 t = slot / P, p = slot - t * P;
    const u32 c = probes ? probes[(u64)t * P + p] : p;
    if (c == NO_ID || c >= seg_ncent[s]) return;
    const u32* off = (const u32*)seg_post_off[s];
    const u32* docs = (const u32*)seg_post_docs[s];
    const u32 base = seg_base[s];
    u32* bm = bitmap + (u64)tok_query[t] * words;
    for (u32 i = off[c] + threadIdx.x; i < off[c + 1]; i += blockDim.x) {
        const u32 g = base + docs[i];
        atomicOr(&bm[g >> 5], 1u << (g & 31));
    }
}

// Approximate scores from centroid codes: one warp per 32-document word of a query's
// candidate bitmap (minus tombstones); for each candidate, lane i keeps the running max of
// S[code, i] over the document's tokens, and the per-token maxima are summed left to right
// (the CPU's order). Non-candidates get -inf, so the array is dense over global ids.
extern "C" __global__ void approx_scores(const u32* __restrict__ bitmap, u32 words,
                                         const u32* __restrict__ tomb,
                                         const float* __restrict__ s_cm, u32 T,
                                         const u32* __restrict__ q_off,
                                         const u32* __restrict__ seg_base, u32 n_seg,
                                         const u64* __restrict__ seg_offsets,
                                         const u64* __restrict__ seg_codes,
                                         const u32* __restrict__ seg_code_width, u32 N,
                                         float* __restrict__ approx) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const u32 word = blockIdx.x * (blockDim.x >> 5) + warp;
    if (word >= words) return;
    const u32 b = blockIdx.y;
    u32 bits = bitmap[(u64)b * words + word] & ~tomb[word];
    float* out = approx + (u64)b * N;
    const u32 mine = word * 32 + lane;
    if (mine < N && !((bits >> lane) & 1u)) out[mine] = neg_inf();
    const u32 qo = q_off[b], nq = q_off[b + 1] - qo;
    while (bits) {
        const u32 bit = __ffs(bits) - 1;
        bits &= bits - 1;
        const u32 g = word * 32 + bit;
        const u32 s = find_segment(seg_base, n_seg, g);
        const u32 local = g - seg_base[s];
        const u64* offs = (const u64*)seg_offsets[s];
        const u8* codes = (const u8*)seg_codes[s];
        const u32 width = seg_code_width[s];
        const u64 lo = offs[local], hi = offs[local + 1];
        float total = 0.f;
        for (u32 i0 = 0; i0 < nq; i0 += 32) {
            const u32 i = i0 + lane;
            float m = neg_inf();
            if (i < nq) {
                const float* col = s_cm + qo + i;
                for (u64 t = lo; t < hi; ++t) m = fmaxf(m, col[(u64)load_code(codes, width, t) * T]);
            }
            const u32 lanes = min(32u, nq - i0);
            for (u32 l = 0; l < lanes; ++l) total += __shfl_sync(FULL_MASK, m, l);
        }
        if (lane == 0) out[g] = total;
    }
}

// Fused residual decompression + MaxSim. Block (r, b) scores survivor r of query b: tiles of
// the document's tokens are reconstructed (centroid + bucket weight, exactly the CPU's f32
// add) into shared memory only; each warp takes query tokens, holds the query row in
// registers (J floats per lane, dim <= 32 J), and keeps the max dot product over the tile's
// tokens; thread 0 sums the per-token maxima left to right. `surv == 0` scores every
// document (exhaustive search, r = global id). Tombstoned or absent survivors get -inf.
template <int J>
__device__ void rerank_impl(const float* __restrict__ q, const u32* __restrict__ q_off,
                            u32 dim, const u32* __restrict__ surv, u32 R,
                            const u32* __restrict__ tomb, u32 N,
                            const u32* __restrict__ seg_base, u32 n_seg,
                            const u64* __restrict__ seg_offsets, const u64* __restrict__ seg_codes,
                            const u32* __restrict__ seg_code_width,
                            const u64* __restrict__ seg_resid, const float* __restrict__ cent,
                            const float* __restrict__ weights, u32 nbits, u32 rb,
                            u32 tile_tokens, float* __restrict__ out,
                            u32* __restrict__ out_ids) {
    extern __shared__ float smem[];
    const u32 b = blockIdx.y, r = blockIdx.x, tid = threadIdx.x;
    const u32 lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
    const u64 slot = (u64)b * R + r;
    const u32 g = surv ? surv[slot] : r;
    if (g == NO_ID || g >= N || ((tomb[g >> 5] >> (g & 31)) & 1u)) {
        if (tid == 0) { out[slot] = neg_inf(); out_ids[slot] = NO_ID; }
        return;
    }
    float* tile = smem;
    float* best = smem + (u64)tile_tokens * dim;
    const u32 qo = q_off[b], nq = q_off[b + 1] - qo;
    for (u32 i = tid; i < nq; i += blockDim.x) best[i] = neg_inf();
    const u32 s = find_segment(seg_base, n_seg, g);
    const u32 local = g - seg_base[s];
    const u64* offs = (const u64*)seg_offsets[s];
    const u8* codes = (const u8*)seg_codes[s];
    const u8* resid = (const u8*)seg_resid[s];
    const u32 width = seg_code_width[s];
    const u64 lo = offs[local], hi = offs[local + 1];
    const u32 nb = 1u << nbits, bmask = nb - 1;
    for (u64 t0 = lo; t0 < hi; t0 += tile_tokens) {
        const u32 ntok = (u32)min((u64)tile_tokens, hi - t0);
        __syncthreads();
        for (u32 e = tid; e < ntok * dim; e += blockDim.x) {
            const u32 tt = e / dim, d = e - tt * dim;
            const u64 tok = t0 + tt;
            const u32 code = load_code(codes, width, tok);
            const u32 bit = d * nbits;
            const u32 bucket = (resid[tok * rb + (bit >> 3)] >> (bit & 7)) & bmask;
            tile[e] = cent[(u64)code * dim + d] + weights[d * nb + bucket];
        }
        __syncthreads();
        for (u32 i = warp; i < nq; i += nwarps) {
            float qr[J];
            const float* qrow = q + (u64)(qo + i) * dim;
#pragma unroll
            for (int j = 0; j < J; ++j) {
                const u32 d = lane + 32 * j;
                qr[j] = d < dim ? qrow[d] : 0.f;
            }
            float m = best[i];
            for (u32 tt = 0; tt < ntok; ++tt) {
                const float* row = tile + tt * dim;
                float p = 0.f;
#pragma unroll
                for (int j = 0; j < J; ++j) {
                    const u32 d = lane + 32 * j;
                    if (d < dim) p = fmaf(qr[j], row[d], p);
                }
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) p += __shfl_xor_sync(FULL_MASK, p, o);
                m = fmaxf(m, p);
            }
            if (lane == 0) best[i] = m;
        }
    }
    __syncthreads();
    if (tid == 0) {
        float total = 0.f;
        for (u32 i = 0; i < nq; ++i) total += best[i];
        out[slot] = total;
        out_ids[slot] = g;
    }
}

#define RERANK_ENTRY(NAME, J)                                                                  \
    extern "C" __global__ void NAME(                                                           \
        const float* __restrict__ q, const u32* __restrict__ q_off, u32 dim,                   \
        const u32* __restrict__ surv, u32 R, const u32* __restrict__ tomb, u32 N,              \
        const u32* __restrict__ seg_base, u32 n_seg, const u64* __restrict__ seg_offsets,      \
        const u64* __restrict__ seg_codes, const u32* __restrict__ seg_code_width,             \
        const u64* __restrict__ seg_resid, const float* __restrict__ cent,                     \
        const float* __restrict__ weights, u32 nbits, u32 rb, u32 tile_tokens,                 \
        float* __restrict__ out, u32* __restrict__ out_ids) {                                  \
        rerank_impl<J>(q, q_off, dim, surv, R, tomb, N, seg_base, n_seg, seg_offsets,          \
                       seg_codes, seg_code_width, seg_resid, cent, weights, nbits, rb,         \
                       tile_tokens, out, out_ids);                                             \
    }

// One entry point per register budget for the query row: dim <= 128, 256, 512, 1024.
RERANK_ENTRY(rerank_maxsim_d128, 4)
RERANK_ENTRY(rerank_maxsim_d256, 8)
RERANK_ENTRY(rerank_maxsim_d512, 16)
RERANK_ENTRY(rerank_maxsim_d1024, 32)
