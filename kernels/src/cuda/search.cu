// Tessera's GPU search kernels: the CPU pipeline of engine/src/search.rs on the device.
//
// Compiled by NVRTC at first use for the device's architecture (kernels/src/gpu.rs); no
// CUDA headers are included, so the source compiles with NVRTC alone.
//
// Each kernel mirrors one named CPU function (named in its comment) and, where the CPU's
// arithmetic is a fixed sequence of IEEE operations, performs the same operations in the
// same order with the rounding intrinsics (__fadd_rn, __fmul_rn: never fused into an FMA),
// so that it produces the same bits: the int8 centroid scores, the byte table, the postings
// estimate, the centroid-code estimate and the compressed exact scores through the residual
// table. Where the CPU's order is a blocked matrix product (f32 centroid scores without
// VNNI, decompression + GEMM at 8 bits or large tables), the sums differ by float rounding
// only (gpu.rs, "Parity").
//
// Data on the device (see storage/FORMAT.md, "Device layout"):
//   * codec: centroids f32[K, dim], the residual byte table f32[n_bytes * 256 * per_byte]
//     (ResidualCodec::byte_weights), and when the host scores centroids in int8 (VNNI) the
//     quantised centroids i8[K, dim4] with their scales (Int8Centroids);
//   * per segment, the stored bytes as they are: doc offsets u64[n_docs + 1], codes
//     (u16 or u32 per token), packed residuals u8[n_tokens * rb], token norm scales
//     (f16 per token, or absent); IVF postings decoded once at upload into u32 list
//     offsets [K_s + 1] and absolute local document ids;
//   * per snapshot: a segment table (first global document of each segment and the device
//     addresses of its arrays) and one tombstone bitmap over global document ids; per
//     filtered search, a bitmap of the allowed global ids.
// A global document id is the segment's first global id plus the local id, in snapshot
// segment order: the order in which the CPU path enumerates candidates.

typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned short u16;
typedef unsigned char u8;
typedef signed char i8;

#define FULL_MASK 0xffffffffu
#define NO_ID 0xffffffffu
// Query tokens per lane group of the CPU's tables (kernels/src/compressed.rs, LANES).
#define CPU_LANES 16u

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

// IEEE half to float (exact), without cuda_fp16.h.
__device__ __forceinline__ float half_to_float(u16 h) {
    const u32 sign = (u32)(h & 0x8000u) << 16;
    const u32 exp = (h >> 10) & 0x1fu;
    const u32 man = h & 0x3ffu;
    if (exp == 0) {
        // Zero or subnormal: man * 2^-24, exact in f32.
        const float v = __fmul_rn((float)man, 5.9604644775390625e-8f);
        return __uint_as_float(__float_as_uint(v) | sign);
    }
    if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (man << 13));
    return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// Whether global document g may be returned: in the filter's bitmap when there is one,
// else not tombstoned.
__device__ __forceinline__ u32 live_word(const u32* __restrict__ allow,
                                         const u32* __restrict__ tomb, u32 w) {
    return allow ? allow[w] : ~tomb[w];
}

// ---------------------------------------------------------------------------------------
// Stage 1: centroid scores. Layout: centroid-major s_cm[c * T + t] and token-major
// s_tm[t * K + c], T the batch's query tokens (token t of query b is q_off[b] + i).

// Mirrors tessera_kernels::matmul_nt as QueryTables::new calls it when the host has no
// VNNI: f32 dot products (in a different order: equal up to float rounding). Block (32, 8)
// computes a 32 x 32 tile; grid.x walks centroids, grid.y query tokens.
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

// Mirrors Int8Centroids::scores_and_bytes (kernels/src/int8.rs, `finish`): the exact
// integer dot product of the i8 codes, converted to f32 and multiplied by `a * b` (that
// product rounded first, no FMA), so the same bits as every CPU path. c8 is [K, dim4] and
// q8 [T, dim4] (dim4 = dim rounded up to 4, zero padded), read as packed 4-byte words.
// Block (32, 8): lanes walk query tokens, rows centroids.
extern "C" __global__ void centroid_scores_i8(const int* __restrict__ c8,
                                              const float* __restrict__ c_scale,
                                              const int* __restrict__ q8,
                                              const float* __restrict__ q_scale, u32 K, u32 T,
                                              u32 words, float* __restrict__ s_cm,
                                              float* __restrict__ s_tm) {
    const u32 t = blockIdx.y * 32 + threadIdx.x;
    const u32 c = blockIdx.x * 8 + threadIdx.y;
    if (t >= T || c >= K) return;
    const int* cr = c8 + (u64)c * words;
    const int* qr = q8 + (u64)t * words;
    int dot = 0;
    for (u32 w = 0; w < words; ++w) dot = __dp4a(cr[w], qr[w], dot);
    const float v = __fmul_rn(__int2float_rn(dot), __fmul_rn(c_scale[c], q_scale[t]));
    s_cm[(u64)c * T + t] = v;
    s_tm[(u64)t * K + c] = v;
}

// The byte table's map per query (CentroidScores8::rebuild when the host has no VNNI):
// lo, hi = min and max of the query's scores, 0 included when the CPU's table has padding
// columns (nq not a multiple of 16); step = (hi - lo) / 255 (1 when hi == lo); writes
// (lo, step, 1 / step). One block per query. With VNNI the host computes the map from the
// Cauchy-Schwarz bound (Int8Centroids::scores_and_bytes) and this kernel is not launched.
extern "C" __global__ void byte_map_range(const float* __restrict__ s_cm, u32 K, u32 T,
                                          const u32* __restrict__ q_off,
                                          float* __restrict__ map) {
    __shared__ float s_lo[256], s_hi[256];
    const u32 b = blockIdx.x, tid = threadIdx.x;
    const u32 qo = q_off[b], nq = q_off[b + 1] - qo;
    float lo = __int_as_float(0x7f800000), hi = neg_inf();
    if (nq % CPU_LANES != 0) { lo = 0.f; hi = 0.f; }
    const u64 n = (u64)K * nq;
    for (u64 e = tid; e < n; e += blockDim.x) {
        const u64 c = e / nq;
        const float v = s_cm[c * T + qo + (e - c * nq)];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    s_lo[tid] = lo;
    s_hi[tid] = hi;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) {
            s_lo[tid] = fminf(s_lo[tid], s_lo[tid + s]);
            s_hi[tid] = fmaxf(s_hi[tid], s_hi[tid + s]);
        }
        __syncthreads();
    }
    if (tid == 0) {
        const float l = s_lo[0], h = s_hi[0];
        const float step = h > l ? __fdiv_rn(__fsub_rn(h, l), 255.f) : 1.f;
        map[3 * b] = l;
        map[3 * b + 1] = step;
        map[3 * b + 2] = __fdiv_rn(1.f, step);
    }
}

// Mirrors quantize_bytes_body (kernels/src/approx.rs): round((s - lo) * inv) by adding one
// half and truncating, saturated to 0..=255. One thread per (centroid, token).
extern "C" __global__ void quantize_scores(const float* __restrict__ s_cm, u32 K, u32 T,
                                           const u32* __restrict__ tok_query,
                                           const float* __restrict__ map,
                                           u8* __restrict__ bytes) {
    const u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (u64)K * T) return;
    const u32 t = (u32)(e % T);
    const u32 b = tok_query[t];
    float x = __fadd_rn(__fmul_rn(__fsub_rn(s_cm[e], map[3 * b]), map[3 * b + 2]), 0.5f);
    x = x < 255.f ? x : 255.f;
    x = x > 0.f ? x : 0.f;
    bytes[e] = (u8)(int)x;
}

// ---------------------------------------------------------------------------------------
// Selection.

// Top-r of each row by (score descending, tie key ascending), one block per row, by radix
// selection on the order-preserving keys (4 passes of 8 bits), then, when the r-th key is
// tied, a second radix selection on the tie keys of the tied elements (12 passes over a
// 96-bit key). The tie key of element j with id g is g itself, or, with `touch` (indexed
// row * touch_stride + g), (segment of g, touch, local id of g): the CPU's first-touch
// order of the postings walk (see postings_estimate). With `cut_count`, a row uses the
// touch order only when cut_count[row] <= cut_limit: the CPU's candidates stay in touch
// order unless the prefilter cut them, after which they are in global order. Elements
// scoring -inf are never selected. Output is unordered; slots past the selected count
// get NO_ID / -inf; `out_touch` (optional) receives each selected element's touch value
// (0 without touch order).
// `ids == 0` means the id of element j is j. `totals` (optional) receives the number of
// valid (finite) elements of each row.
struct TieKey {
    u64 hi;
    u32 lo;
};

__device__ __forceinline__ TieKey tie_key(u32 g, const u32* touch_row,
                                          const u32* __restrict__ seg_base, u32 n_seg) {
    TieKey k;
    if (!touch_row) {
        k.hi = 0;
        k.lo = g;
        return k;
    }
    const u32 s = find_segment(seg_base, n_seg, g);
    k.hi = ((u64)s << 32) | touch_row[g];
    k.lo = g - seg_base[s];
    return k;
}

__device__ __forceinline__ u32 tie_byte(TieKey k, int pass) {
    return pass < 8 ? (u32)(k.hi >> (56 - 8 * pass)) & 255u : (k.lo >> (24 - 8 * (pass - 8))) & 255u;
}

__device__ __forceinline__ bool tie_prefix_matches(TieKey k, TieKey p, int passes) {
    for (int pass = 0; pass < passes; ++pass)
        if (tie_byte(k, pass) != tie_byte(p, pass)) return false;
    return true;
}

__device__ __forceinline__ bool tie_le(TieKey a, TieKey b) {
    return a.hi < b.hi || (a.hi == b.hi && a.lo <= b.lo);
}

extern "C" __global__ void select_topk(const float* __restrict__ scores, u64 row_stride,
                                       u64 elem_stride, const u32* __restrict__ ids,
                                       u64 ids_row_stride, const u32* __restrict__ row_n, u32 n,
                                       u32 r, const u32* __restrict__ touch, u64 touch_stride,
                                       const u32* __restrict__ cut_count, u32 cut_limit,
                                       const u32* __restrict__ seg_base, u32 n_seg,
                                       u32* __restrict__ out_ids, float* __restrict__ out_scores,
                                       u32* __restrict__ out_touch,
                                       u32 out_stride, u32* __restrict__ out_count,
                                       u32* __restrict__ totals) {
    __shared__ u32 hist[256];
    __shared__ u32 s_total, s_count, s_prefix, s_need, s_tie;
    __shared__ TieKey s_tkey;
    const u32 tid = threadIdx.x, nt = blockDim.x, row = blockIdx.x;
    const float* rs = scores + (u64)row * row_stride;
    const u32* rid = ids ? ids + (u64)row * ids_row_stride : 0;
    const bool use_touch = touch && (!cut_count || cut_count[row] <= cut_limit);
    const u32* trow = use_touch ? touch + (u64)row * touch_stride : 0;
    if (row_n) n = min(n, row_n[row]);
    if (tid == 0) { s_total = 0; s_count = 0; }
    __syncthreads();
    u32 local = 0;
    for (u32 j = tid; j < n; j += nt) local += float_key(rs[(u64)j * elem_stride]) > NEG_INF_KEY;
    atomicAdd(&s_total, local);
    __syncthreads();
    const u32 total = s_total;
    const bool take_all = total <= r;
    u32 kth = NEG_INF_KEY;
    bool tie_cut = false;
    TieKey tk;
    tk.hi = ~0ull;
    tk.lo = ~0u;
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
            // The `need` smallest tie keys among the elements whose key is exactly `kth`.
            tie_cut = true;
            TieKey p;
            p.hi = 0;
            p.lo = 0;
            u32 in = need;
            // Bytes that are zero in every key need no pass: without touch order the high
            // 64 bits are zero, and a segment index below 2^8 (2^16) fills one (two) bytes.
            const int first = trow ? (n_seg <= 256u ? 3 : (n_seg <= 65536u ? 2 : 0)) : 8;
            for (int pass = first; pass < 12; ++pass) {
                __syncthreads();
                for (u32 b = tid; b < 256; b += nt) hist[b] = 0;
                __syncthreads();
                for (u32 j = tid; j < n; j += nt) {
                    if (float_key(rs[(u64)j * elem_stride]) != kth) continue;
                    const TieKey k = tie_key(rid ? rid[j] : j, trow, seg_base, n_seg);
                    if (tie_prefix_matches(k, p, pass)) atomicAdd(&hist[tie_byte(k, pass)], 1u);
                }
                __syncthreads();
                if (tid == 0) {
                    u32 cum = 0;
                    for (int b = 0; b < 256; ++b) {
                        if (cum + hist[b] >= in) {
                            if (pass < 8) p.hi |= (u64)b << (56 - 8 * pass);
                            else p.lo |= (u32)b << (24 - 8 * (pass - 8));
                            s_tkey = p;
                            s_need = in - cum;
                            break;
                        }
                        cum += hist[b];
                    }
                }
                __syncthreads();
                p = s_tkey;
                in = s_need;
            }
            tk = p;
        }
    }
    __syncthreads();
    for (u32 j = tid; j < n; j += nt) {
        const float s = rs[(u64)j * elem_stride];
        const u32 k = float_key(s);
        if (k <= NEG_INF_KEY) continue;
        const u32 id = rid ? rid[j] : j;
        bool keep = take_all || k > kth;
        if (!keep && k == kth) keep = !tie_cut || tie_le(tie_key(id, trow, seg_base, n_seg), tk);
        if (keep) {
            const u32 pos = atomicAdd(&s_count, 1u);
            out_ids[(u64)row * out_stride + pos] = id;
            out_scores[(u64)row * out_stride + pos] = s;
            if (out_touch) out_touch[(u64)row * out_stride + pos] = trow ? trow[id] : 0;
        }
    }
    __syncthreads();
    const u32 count = s_count;
    for (u32 p = count + tid; p < r; p += nt) {
        out_ids[(u64)row * out_stride + p] = NO_ID;
        out_scores[(u64)row * out_stride + p] = neg_inf();
        if (out_touch) out_touch[(u64)row * out_stride + p] = 0;
    }
    if (tid == 0) {
        if (out_count) out_count[row] = count;
        if (totals) totals[row] = total;
    }
}

// ---------------------------------------------------------------------------------------
// Stage 2: probes and the postings estimate.

// Mirrors the end of `probe` (search.rs): each token's selected probes put best first, by
// (score descending, id descending) as `into_sorted_vec` orders them, and the token's floor
// (its worst probe's score). One block per query token; ranks by counting in shared
// memory when the token has at most PROBE_RANK_MAX probes, else by selection order (then
// documents tied at the prefilter cut may be taken in another order than the CPU's).
#define PROBE_RANK_MAX 2048u
extern "C" __global__ void rank_probes(const u32* __restrict__ ids, const float* __restrict__ sc,
                                       const u32* __restrict__ count, u32 P,
                                       u32* __restrict__ rank, float* __restrict__ floor) {
    __shared__ u32 s_id[PROBE_RANK_MAX];
    __shared__ float s_sc[PROBE_RANK_MAX];
    const u32 t = blockIdx.x, tid = threadIdx.x;
    const u32 n = count[t];
    const u32* rid = ids + (u64)t * P;
    const float* rsc = sc + (u64)t * P;
    if (n > PROBE_RANK_MAX) {
        for (u32 j = tid; j < n; j += blockDim.x) rank[(u64)t * P + j] = j;
        if (tid == 0) {
            float m = __int_as_float(0x7f800000);
            for (u32 j = 0; j < n; ++j) m = fminf(m, rsc[j]);
            floor[t] = m;
        }
        return;
    }
    for (u32 j = tid; j < n; j += blockDim.x) {
        s_id[j] = rid[j];
        s_sc[j] = rsc[j];
    }
    __syncthreads();
    for (u32 j = tid; j < n; j += blockDim.x) {
        u32 r = 0;
        const float v = s_sc[j];
        const u32 c = s_id[j];
        for (u32 o = 0; o < n; ++o) {
            const float w = s_sc[o];
            r += (w > v) || (w == v && s_id[o] > c);
        }
        rank[(u64)t * P + j] = r;
        if (r + 1 == n) floor[t] = v;
    }
}

// Per query and centroid: which of the query's tokens probe it (a bit mask of MW words)
// and its first-touch key: the smallest (token << 20 | rank of the centroid in that
// token's probes), stored inverted (0 = not probed) so that atomicMax finds it. One thread
// per (token, probe).
extern "C" __global__ void probe_tables(const u32* __restrict__ ids, const u32* __restrict__ rank,
                                        const u32* __restrict__ count, u32 P,
                                        const u32* __restrict__ tok_query,
                                        const u32* __restrict__ q_off, u32 K, u32 MW,
                                        u32* __restrict__ mask, u32* __restrict__ key_inv) {
    const u32 t = blockIdx.y;
    const u32 j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= count[t]) return;
    const u32 c = ids[(u64)t * P + j];
    if (c >= K) return;
    const u32 b = tok_query[t], i = t - q_off[b];
    const u32 r = min(rank[(u64)t * P + j], (1u << 20) - 1);
    atomicOr(&mask[((u64)b * K + c) * MW + (i >> 5)], 1u << (i & 31));
    atomicMax(&key_inv[(u64)b * K + c], ~((i << 20) | r));
}

// Candidate marking (the postings walk of approximate_candidates, as a union): block
// (slot, segment) walks the posting list of probe `slot` (query token t = slot / P, probe
// p = slot % P) in that segment and sets the documents' bits in the query's bitmap.
// Queries flagged in `scan_all` (a filter ranks every match, rank_allowed) are skipped.
extern "C" __global__ void mark_candidates(const u32* __restrict__ probes,
                                           const u32* __restrict__ probe_count, u32 P,
                                           const u32* __restrict__ tok_query,
                                           const u8* __restrict__ scan_all,
                                           const u64* __restrict__ seg_post_off,
                                           const u64* __restrict__ seg_post_docs,
                                           const u32* __restrict__ seg_ncent,
                                           const u32* __restrict__ seg_base,
                                           u32* __restrict__ bitmap, u32 words) {
    const u32 slot = blockIdx.x, s = blockIdx.y;
    const u32 t = slot / P, p = slot - t * P;
    const u32 b = tok_query[t];
    if (scan_all[b] || p >= probe_count[t]) return;
    const u32 c = probes[(u64)t * P + p];
    if (c == NO_ID || c >= seg_ncent[s]) return;
    const u32* off = (const u32*)seg_post_off[s];
    const u32* docs = (const u32*)seg_post_docs[s];
    const u32 base = seg_base[s];
    u32* bm = bitmap + (u64)b * words;
    for (u32 i = off[c] + threadIdx.x; i < off[c + 1]; i += blockDim.x) {
        const u32 g = base + docs[i];
        atomicOr(&bm[g >> 5], 1u << (g & 31));
    }
}

// Mirrors the postings estimate of approximate_candidates (DocMarks): for each candidate
// (a probed posting holds it, and it is live and allowed), per query token i the best
// score among the document's centroids that i probes, minus i's floor, summed over the
// tokens that probe any of them in token order, plus the sum of the floors (in token
// order); and its first-touch key (the
// smallest probe key over its centroids), which orders ties at the prefilter cut as the
// CPU's touch order does. One warp per 32-document word of a query's bitmap; lanes walk
// query tokens. Non-candidates get -inf. `scan_all` queries (rank_allowed) make every
// allowed document a candidate with estimate 0 and key 0 (global order).
extern "C" __global__ void postings_estimate(
    const u32* __restrict__ bitmap, u32 words, const u32* __restrict__ tomb,
    const u32* __restrict__ allow, const u8* __restrict__ scan_all,
    const float* __restrict__ s_cm, u32 T, const u32* __restrict__ q_off,
    const float* __restrict__ floor,
    const u32* __restrict__ mask, const u32* __restrict__ key_inv, u32 K, u32 MW,
    const u32* __restrict__ seg_base, u32 n_seg, const u64* __restrict__ seg_offsets,
    const u64* __restrict__ seg_codes, const u32* __restrict__ seg_code_width, u32 N,
    float* __restrict__ approx, u32* __restrict__ touch, u32* __restrict__ n_cands) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const u32 word = blockIdx.x * (blockDim.x >> 5) + warp;
    if (word >= words) return;
    const u32 b = blockIdx.y;
    const bool all = scan_all[b] != 0;
    const u32 cand = all ? FULL_MASK : bitmap[(u64)b * words + word];
    const u32 in_range = word * 32 + 32 <= N ? FULL_MASK : ((1u << (N & 31)) - 1);
    u32 bits = cand & live_word(allow, tomb, word) & in_range;
    float* out = approx + (u64)b * N;
    u32* tout = touch + (u64)b * N;
    const u32 mine = word * 32 + lane;
    if (mine < N && !((bits >> lane) & 1u)) out[mine] = neg_inf();
    if (lane == 0 && bits) atomicAdd(&n_cands[b], (u32)__popc(bits));
    const u32 qo = q_off[b], nq = q_off[b + 1] - qo;
    const u32* qmask = mask + (u64)b * K * MW;
    const u32* qkey = key_inv + (u64)b * K;
    while (bits) {
        const u32 bit = __ffs(bits) - 1;
        bits &= bits - 1;
        const u32 g = word * 32 + bit;
        if (all) {
            if (lane == 0) { out[g] = 0.f; tout[g] = 0; }
            continue;
        }
        const u32 s = find_segment(seg_base, n_seg, g);
        const u32 local = g - seg_base[s];
        const u64* offs = (const u64*)seg_offsets[s];
        const u8* codes = (const u8*)seg_codes[s];
        const u32 width = seg_code_width[s];
        const u64 lo = offs[local], hi = offs[local + 1];
        // First-touch key: lanes split the document's tokens.
        u32 kmax = 0;
        for (u64 t = lo + lane; t < hi; t += 32) {
            const u32 c = load_code(codes, width, t);
            if (c < K) kmax = max(kmax, qkey[c]);
        }
        for (int o = 16; o > 0; o >>= 1) kmax = max(kmax, __shfl_xor_sync(FULL_MASK, kmax, o));
        float gain = 0.f;
        bool started = false;
        for (u32 i0 = 0; i0 < nq; i0 += 32) {
            const u32 i = i0 + lane;
            float m = neg_inf();
            bool hit = false;
            if (i < nq) {
                for (u64 t = lo; t < hi; ++t) {
                    const u32 c = load_code(codes, width, t);
                    if (c < K && ((qmask[(u64)c * MW + (i >> 5)] >> (i & 31)) & 1u)) {
                        const float v = s_cm[(u64)c * T + qo + i];
                        m = hit ? fmaxf(m, v) : v;
                        hit = true;
                    }
                }
            }
            const float d = hit ? __fsub_rn(m, floor[qo + (i < nq ? i : 0)]) : 0.f;
            const u32 hits = __ballot_sync(FULL_MASK, hit);
            const u32 lanes = min(32u, nq - i0);
            for (u32 l = 0; l < lanes; ++l) {
                const float dl = __shfl_sync(FULL_MASK, d, l);
                if ((hits >> l) & 1u) {
                    gain = started ? __fadd_rn(gain, dl) : dl;
                    started = true;
                }
            }
        }
        if (lane == 0) {
            // The sum of the floors, in token order (`probes.floor.iter().sum()`).
            float base = floor[qo];
            for (u32 i = 1; i < nq; ++i) base = __fadd_rn(base, floor[qo + i]);
            out[g] = __fadd_rn(base, gain);
            tout[g] = ~kmax;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stage 3: the centroid-code estimate.

// Mirrors CentroidScores8::estimate (max_bytes_sum_body): per query token the largest byte
// over the document's codes (0 when it has none), summed as an integer, then
// `sum * step + nq * lo` (two roundings and an add, no FMA); 0 for a document without
// tokens. One warp per listed document (`ids`, row b of stride `stride`, `count[b]` of
// them); lanes walk query tokens.
extern "C" __global__ void code_estimate(const u32* __restrict__ ids, u32 stride,
                                         const u32* __restrict__ count,
                                         const u8* __restrict__ bytes, u32 T,
                                         const u32* __restrict__ q_off,
                                         const float* __restrict__ map,
                                         const u32* __restrict__ seg_base, u32 n_seg,
                                         const u64* __restrict__ seg_offsets,
                                         const u64* __restrict__ seg_codes,
                                         const u32* __restrict__ seg_code_width,
                                         float* __restrict__ est) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const u32 j = blockIdx.x * (blockDim.x >> 5) + warp;
    const u32 b = blockIdx.y;
    if (j >= stride) return;
    const u64 slot = (u64)b * stride + j;
    const u32 g = ids[slot];
    if (j >= count[b] || g == NO_ID) {
        if (lane == 0) est[slot] = neg_inf();
        return;
    }
    const u32 s = find_segment(seg_base, n_seg, g);
    const u32 local = g - seg_base[s];
    const u64* offs = (const u64*)seg_offsets[s];
    const u8* codes = (const u8*)seg_codes[s];
    const u32 width = seg_code_width[s];
    const u64 lo = offs[local], hi = offs[local + 1];
    const u32 qo = q_off[b], nq = q_off[b + 1] - qo;
    u32 sum = 0;
    for (u32 i = lane; i < nq; i += 32) {
        u32 m = 0;
        for (u64 t = lo; t < hi; ++t) m = max(m, (u32)bytes[(u64)load_code(codes, width, t) * T + qo + i]);
        sum += m;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(FULL_MASK, sum, o);
    if (lane == 0) {
        est[slot] = hi == lo ? 0.f
                             : __fadd_rn(__fmul_rn((float)sum, map[3 * b + 1]),
                                         __fmul_rn((float)nq, map[3 * b]));
    }
}

// ---------------------------------------------------------------------------------------
// Stage 4: exact scores over the compressed vectors. Survivors are listed per query
// (`surv`, row b of R, NO_ID for empty slots), or every document when `surv == 0`
// (exhaustive search, r = global id); tombstoned or not-allowed documents get -inf.

__device__ __forceinline__ bool survivor(const u32* surv, u64 slot, u32 r, u32 N,
                                         const u32* allow, const u32* tomb, u32* g) {
    *g = surv ? surv[slot] : r;
    return *g != NO_ID && *g < N && ((live_word(allow, tomb, *g >> 5) >> (*g & 31)) & 1u);
}

// Mirrors QueryLut::rebuild (kernels/src/compressed.rs): entry (row, i) of query b's table
// is the sum over the dimensions of the row's byte half (or whole byte at 8 bits) of
// weight * q_d, accumulated from 0 in dimension order. Half-byte rows: [n_bytes * 32] (16
// low-half values, then 16 high-half values per byte); whole-byte rows: [n_bytes * 256].
// Query b's table starts at lut_off[b] (floats), rows of nq entries; queries with
// lut_off[b] == NO_ID use decompression instead and are skipped.
extern "C" __global__ void build_lut(const float* __restrict__ q, const u32* __restrict__ q_off,
                                     u32 dim, const float* __restrict__ byte_table,
                                     u32 per_byte, u32 n_bytes, const u32* __restrict__ lut_off,
                                     u32 nq_max, float* __restrict__ lut) {
    const u32 b = blockIdx.y;
    if (lut_off[b] == NO_ID) return;
    const u32 qo = q_off[b], nq = q_off[b + 1] - qo;
    const bool nibbles = per_byte >= 2;
    const u32 rows = n_bytes * (nibbles ? 32u : 256u);
    const u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (u64)rows * nq_max) return;
    const u32 row = (u32)(e / nq_max), i = (u32)(e % nq_max);
    if (i >= nq) return;
    u32 p, v, l0, l1;
    if (nibbles) {
        p = row / 32;
        const u32 u = row % 32;
        const u32 half = per_byte / 2;
        if (u < 16) { v = u; l0 = 0; l1 = half; }
        else { v = (u - 16) << 4; l0 = half; l1 = per_byte; }
    } else {
        p = row / 256;
        v = row % 256;
        l0 = 0;
        l1 = per_byte;
    }
    const float* qrow = q + (u64)(qo + i) * dim;
    float acc = 0.f;
    for (u32 l = l0; l < l1; ++l) {
        const u32 d = p * per_byte + l;
        if (d >= dim) break;
        acc = __fadd_rn(acc, __fmul_rn(byte_table[((u64)p * 256 + v) * per_byte + l], qrow[d]));
    }
    lut[(u64)lut_off[b] + (u64)row * nq + i] = acc;
}

// Mirrors QueryLut::maxsim (maxsim_compressed_body): per query token, acc = S[code, i],
// then per residual byte acc += (low half's entry + high half's entry) (or acc += the
// byte's entry at 8 bits), v = acc * scale, best = max; the per-token bests summed in the
// CPU's order: one running sum when the CPU takes its fixed-length body (half-byte tables,
// 16 to 64 query tokens), else per group of 16 tokens added to the total. A document with
// no tokens scores 0. One warp per (survivor, query); lanes walk query tokens.
extern "C" __global__ void lut_maxsim(const u32* __restrict__ surv, u32 R, u32 N,
                                      const u32* __restrict__ allow, const u32* __restrict__ tomb,
                                      const float* __restrict__ s_cm, u32 T,
                                      const u32* __restrict__ q_off, const u32* __restrict__ lut_off,
                                      const float* __restrict__ lut, u32 per_byte, u32 rb,
                                      const u32* __restrict__ seg_base, u32 n_seg,
                                      const u64* __restrict__ seg_offsets,
                                      const u64* __restrict__ seg_codes,
                                      const u32* __restrict__ seg_code_width,
                                      const u64* __restrict__ seg_resid,
                                      const u64* __restrict__ seg_scales,
                                      float* __restrict__ out) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const u32 r = blockIdx.x * (blockDim.x >> 5) + warp;
    const u32 b = blockIdx.y;
    if (r >= R || lut_off[b] == NO_ID) return;
    const u64 slot = (u64)b * R + r;
    u32 g;
    if (!survivor(surv, slot, r, N, allow, tomb, &g)) {
        if (lane == 0) out[slot] = neg_inf();
        return;
    }
    const u32 s = find_segment(seg_base, n_seg, g);
    const u32 local = g - seg_base[s];
    const u64* offs = (const u64*)seg_offsets[s];
    const u8* codes = (const u8*)seg_codes[s];
    const u8* resid = (const u8*)seg_resid[s];
    const u16* scales = (const u16*)seg_scales[s];
    const u32 width = seg_code_width[s];
    const u64 lo = offs[local], hi = offs[local + 1];
    if (hi == lo) {
        if (lane == 0) out[slot] = 0.f;
        return;
    }
    const u32 qo = q_off[b], nq = q_off[b + 1] - qo;
    const float* tab = lut + lut_off[b];
    const bool nibbles = per_byte >= 2;
    const u32 stride = (nq + CPU_LANES - 1) / CPU_LANES * CPU_LANES;
    const bool flat = nibbles && stride >= 16 && stride <= 64;
    float total = 0.f, part = 0.f;
    for (u32 i0 = 0; i0 < nq; i0 += 32) {
        const u32 i = i0 + lane;
        float best = neg_inf();
        if (i < nq) {
            for (u64 t = lo; t < hi; ++t) {
                const u32 c = load_code(codes, width, t);
                float acc = s_cm[(u64)c * T + qo + i];
                const u8* bytes = resid + t * rb;
                if (nibbles) {
                    for (u32 p = 0; p < rb; ++p) {
                        const u32 byte = bytes[p];
                        const float a = tab[(u64)(p * 32 + (byte & 15)) * nq + i];
                        const float h = tab[(u64)(p * 32 + 16 + (byte >> 4)) * nq + i];
                        acc = __fadd_rn(acc, __fadd_rn(a, h));
                    }
                } else {
                    for (u32 p = 0; p < rb; ++p)
                        acc = __fadd_rn(acc, tab[(u64)(p * 256 + bytes[p]) * nq + i]);
                }
                const float sc = scales ? half_to_float(scales[t]) : 1.f;
                const float v = __fmul_rn(acc, sc);
                best = v > best ? v : best;
            }
        }
        const u32 lanes = min(32u, nq - i0);
        for (u32 l = 0; l < lanes; ++l) {
            const float bl = __shfl_sync(FULL_MASK, best, l);
            const u32 ii = i0 + l;
            if (flat) {
                total = ii == 0 ? bl : __fadd_rn(total, bl);
            } else {
                part = ii % CPU_LANES == 0 ? bl : __fadd_rn(part, bl);
                if (ii % CPU_LANES == CPU_LANES - 1 || ii + 1 == nq) total = __fadd_rn(total, part);
            }
        }
    }
    if (lane == 0) out[slot] = total;
}

// Mirrors decompressed_scores (decompress_into + maxsim_many), the CPU's exact stage when
// the residual table would not stay in cache: tiles of the document's tokens are
// reconstructed exactly as ResidualCodec::decode and the norm scale do (centroid + the byte
// table's weight, then times the token's scale) into shared memory; each warp takes query
// tokens, holds the query row in registers (J floats per lane, dim <= 32 J), and keeps the
// max dot product over the tile's tokens (summed in another order than the CPU's GEMM:
// equal up to float rounding); thread 0 sums the per-token maxima left to right. Block
// (r, b) scores survivor r of query b; queries with a residual table (lut_off[b] != NO_ID)
// are skipped.
template <int J>
__device__ void rerank_impl(const float* __restrict__ q, const u32* __restrict__ q_off,
                            u32 dim, const u32* __restrict__ surv, u32 R,
                            const u32* __restrict__ allow, const u32* __restrict__ tomb, u32 N,
                            const u32* __restrict__ lut_off,
                            const u32* __restrict__ seg_base, u32 n_seg,
                            const u64* __restrict__ seg_offsets, const u64* __restrict__ seg_codes,
                            const u32* __restrict__ seg_code_width,
                            const u64* __restrict__ seg_resid, const u64* __restrict__ seg_scales,
                            const float* __restrict__ cent, const float* __restrict__ byte_table,
                            u32 per_byte, u32 rb, u32 tile_tokens, float* __restrict__ out) {
    extern __shared__ float smem[];
    const u32 b = blockIdx.y, r = blockIdx.x, tid = threadIdx.x;
    const u32 lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
    if (lut_off[b] != NO_ID) return;
    const u64 slot = (u64)b * R + r;
    u32 g;
    if (!survivor(surv, slot, r, N, allow, tomb, &g)) {
        if (tid == 0) out[slot] = neg_inf();
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
    const u16* scales = (const u16*)seg_scales[s];
    const u32 width = seg_code_width[s];
    const u64 lo = offs[local], hi = offs[local + 1];
    for (u64 t0 = lo; t0 < hi; t0 += tile_tokens) {
        const u32 ntok = (u32)min((u64)tile_tokens, hi - t0);
        __syncthreads();
        for (u32 e = tid; e < ntok * dim; e += blockDim.x) {
            const u32 tt = e / dim, d = e - tt * dim;
            const u64 tok = t0 + tt;
            const u32 code = load_code(codes, width, tok);
            const u32 p = d / per_byte, l = d - p * per_byte;
            const u32 byte = resid[tok * rb + p];
            float v = __fadd_rn(cent[(u64)code * dim + d],
                                byte_table[((u64)p * 256 + byte) * per_byte + l]);
            if (scales) v = __fmul_rn(v, half_to_float(scales[tok]));
            tile[e] = v;
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
        out[slot] = hi == lo ? 0.f : total;
    }
}

#define RERANK_ENTRY(NAME, J)                                                                  \
    extern "C" __global__ void NAME(                                                           \
        const float* __restrict__ q, const u32* __restrict__ q_off, u32 dim,                   \
        const u32* __restrict__ surv, u32 R, const u32* __restrict__ allow,                    \
        const u32* __restrict__ tomb, u32 N, const u32* __restrict__ lut_off,                  \
        const u32* __restrict__ seg_base, u32 n_seg, const u64* __restrict__ seg_offsets,      \
        const u64* __restrict__ seg_codes, const u32* __restrict__ seg_code_width,             \
        const u64* __restrict__ seg_resid, const u64* __restrict__ seg_scales,                 \
        const float* __restrict__ cent, const float* __restrict__ byte_table, u32 per_byte,    \
        u32 rb, u32 tile_tokens, float* __restrict__ out) {                                    \
        rerank_impl<J>(q, q_off, dim, surv, R, allow, tomb, N, lut_off, seg_base, n_seg,       \
                       seg_offsets, seg_codes, seg_code_width, seg_resid, seg_scales, cent,    \
                       byte_table, per_byte, rb, tile_tokens, out);                            \
    }

// One entry point per register budget for the query row: dim <= 128, 256, 512, 1024.
RERANK_ENTRY(rerank_maxsim_d128, 4)
RERANK_ENTRY(rerank_maxsim_d256, 8)
RERANK_ENTRY(rerank_maxsim_d512, 16)
RERANK_ENTRY(rerank_maxsim_d1024, 32)
