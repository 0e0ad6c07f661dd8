//! Search dispatch between the CPU pipeline (`search.rs`) and the CUDA kernels
//! (`tessera_kernels::gpu`), and the device-resident copies of collections.
//!
//! Residency: a codec or segment is uploaded the first time a snapshot containing it is
//! searched on a device, then shared by every later snapshot that contains it (a weak map
//! keyed by the host object); each snapshot gets a small device index (segment table and
//! tombstone bitmap) built on its first GPU search. Device memory is released when the
//! last snapshot using it is gone, at the next GPU search (entries are purged then).
//!
//! The device runs the CPU pipeline (`search.rs`), stage by stage, each kernel mirroring
//! one CPU function (`tessera_kernels::gpu`, `cuda/search.cu`): centroid scores (in `i8`
//! when this host scores them so), probes, the postings estimate and the prefilter (ties
//! in the CPU's first-touch order), the byte-quantised centroid-code estimate, and the
//! exact scores over the compressed vectors (through the residual table, or by
//! decompression, as the CPU chooses per query; norm scales applied). Filters go to the
//! device as a bitmap over global ids; the filter's path (scaled probes, every match
//! estimated, or, for few matches, exact scoring over originals on the CPU) is the CPU's
//! decision, made here with the same functions (`Plan`).
//!
//! The host finishes each query with the CPU's own code: it orders the device's
//! survivors as `top_k` does (ties in first-touch order unless the prefilter cut them), replays the exact stage's early stop over their exact scores
//! (the device scored every survivor up to the re-rank limit in parallel; `search::settle`
//! stops at the document the CPU would), then refines and ranks (`search::refine_and_rank`).
//! Why refine on the host: the originals are 7x the index at f16 and would have to be
//! resident to be read on the device, while the refined candidates' originals are a few
//! hundred kilobytes per query that the host reads in place from the memory map; the
//! refine work per query is well under a millisecond of one core (BENCHMARKS.md, "Exact
//! answers"). That is an argument, not a measurement on a device: none has run this yet.
//!
//! Parity. With `i8` centroid scores (hosts with VNNI) and the residual-table exact stage,
//! every number the device computes before the refine stage has the CPU's bits (the
//! kernels' arithmetic is transcribed and checked bit for bit in `tessera_kernels`'s
//! tests), so the same documents reach the refine stage and the answers are identical.
//! With `f32` centroid scores (no VNNI) or the decompression path (8-bit residuals, large
//! tables), sums run in another order: scores differ by float rounding (about 1e-6
//! relative), and a document can change places only with one scored within that of it.
//! Ties at the probe cut (two centroids with the same score for the nprobe-th place) may
//! be broken differently; with more than 2,048 probes per token, documents tied at the
//! prefilter cut too. The parity tests (`tests/gpu.rs`) accept differences only between
//! scores tied within 1e-4.
//!
//! Fallback: `auto` uses the GPU when it works and otherwise the CPU, printing the reason on
//! stderr once per process and reason; `cuda[:N]` turns every such reason into
//! [`Error::Device`]. The CPU path stays the reference: same top-k, scores within 1e-4.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use tessera_kernels::QueryLut;
use tessera_kernels::gpu::{
    self as kg, DeviceCodec, DeviceIndex, DeviceQuery, DeviceSearch, DeviceSegment, Gpu, GpuError,
    SegmentUpload,
};
use tessera_storage::segment::{Codes, SegmentReader};

use crate::codec::Codec;
use crate::document::Hit;
use crate::error::{Error, Result};
use crate::filter::Allowed;
use crate::options::{Device, SearchParams};
use crate::parallel::Workers;
use crate::search::{Cand, EarlyStop, LUT_MAX_BYTES, Scored, SearchStats, refine_and_rank, settle};
use crate::snapshot::SnapshotInner;

/// What a [`Device`] setting resolves to on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolvedDevice {
    /// Searches run on the CPU; `reason` says why when the GPU was wanted but unusable.
    Cpu {
        /// Why `auto` did not pick a GPU (`None` when `cpu` was asked for).
        reason: Option<String>,
    },
    /// Searches run on this CUDA device.
    Cuda {
        /// Device number.
        ordinal: usize,
        /// Device name from the driver.
        name: String,
        /// Architecture the kernels were compiled for.
        arch: String,
        /// Theoretical DRAM bandwidth (bytes/s) from the driver's memory clock and bus
        /// width; 0 when the driver does not report them.
        memory_bandwidth: u64,
    },
}

impl std::fmt::Display for ResolvedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolvedDevice::Cpu { reason: None } => f.write_str("cpu"),
            ResolvedDevice::Cpu {
                reason: Some(reason),
            } => write!(f, "cpu ({reason})"),
            ResolvedDevice::Cuda {
                ordinal,
                name,
                arch,
                ..
            } => write!(f, "cuda:{ordinal} ({name}, {arch})"),
        }
    }
}

/// Resolves `device` on this machine: initialises the CUDA device (once per process) when
/// one is asked for. `cuda[:N]` that cannot be used is an error; `auto` then says `cpu` with
/// the reason.
pub fn resolve_device(device: Device) -> Result<ResolvedDevice> {
    Ok(match route(device)? {
        Some(g) => ResolvedDevice::Cuda {
            ordinal: g.ordinal(),
            name: g.name().to_string(),
            arch: g.arch().to_string(),
            memory_bandwidth: g.peak_bandwidth() as u64,
        },
        None => ResolvedDevice::Cpu {
            reason: match device {
                Device::Cpu => None,
                _ => kg::gpu(0).err().map(|e| e.to_string()),
            },
        },
    })
}

fn device_error(device: Device, e: &GpuError) -> Error {
    Error::Device {
        device: device.to_string(),
        reason: e.to_string(),
    }
}

/// Prints why the GPU is not used, once per process and reason.
fn log_fallback(e: &GpuError) {
    log_reason(e.to_string());
}

/// Prints why a search runs on the CPU, once per process and reason.
fn log_reason(msg: String) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if seen.insert(msg.clone()) {
        eprintln!("tessera: searching on the CPU: {msg}");
    }
}

/// The GPU a search should use, `None` for the CPU.
fn route(device: Device) -> Result<Option<Arc<Gpu>>> {
    match device {
        Device::Cpu => Ok(None),
        Device::Auto => {
            // Decided once per process, so CPU-only searches pay one atomic load for it.
            static AUTO: OnceLock<Option<Arc<Gpu>>> = OnceLock::new();
            Ok(AUTO
                .get_or_init(|| match kg::gpu(0) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        log_fallback(&e);
                        None
                    }
                })
                .clone())
        }
        Device::Cuda(n) => kg::gpu(n).map(Some).map_err(|e| device_error(device, &e)),
    }
}

/// One query's hits and counters.
pub(crate) type Answer = (Vec<Hit>, SearchStats);

/// Searches `queries` on the GPU the parameters ask for, under the filter's `allowed`
/// documents when there is one. `Ok(None)`: use the CPU path (device `cpu`, `auto` with an
/// unusable GPU, or a filter so selective that the CPU scores its matches exactly over
/// their originals with no device stage).
pub(crate) fn search_batch(
    snap: &Arc<SnapshotInner>,
    queries: &[&[f32]],
    k: usize,
    params: &SearchParams,
    allowed: Option<&Allowed>,
) -> Result<Option<Vec<Answer>>> {
    let Some(gpu) = route(params.device)? else {
        return Ok(None);
    };
    let fail = |e: GpuError| {
        if params.device == Device::Auto {
            log_fallback(&e);
            Ok(None)
        } else {
            Err(device_error(params.device, &e))
        }
    };
    let Some(codec) = snap.codec.as_deref() else {
        return Ok(Some(vec![Default::default(); queries.len()]));
    };
    if snap.segments.is_empty() || k == 0 {
        return Ok(Some(vec![Default::default(); queries.len()]));
    }
    // The CPU pipeline's own first decision (search.rs, "Filter hook"): few enough matches
    // are scored exactly over their originals, with no stage the device would run.
    if let Some(a) = allowed
        && a.count <= params.filter_exact_budget() as u64
        && snap.segments.iter().all(|s| s.originals.is_some())
    {
        log_reason(
            "a filter matches few enough documents to score them all over their originals".into(),
        );
        return Ok(None);
    }
    let index = match index_for(snap, &gpu) {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let plan = Plan::new(snap, codec, queries, k, params, allowed);
    let allow = allowed.map(|a| allow_bitmap(&index, a));
    let t = Instant::now();
    let mut ranked: Vec<Option<kg::DeviceRanked>> = vec![None; queries.len()];
    // The device takes a batch whose queries all find candidates the same way.
    for scan_all in [false, true] {
        let picked: Vec<usize> = (0..queries.len())
            .filter(|&i| plan.queries[i].scan_all == scan_all)
            .collect();
        if picked.is_empty() {
            continue;
        }
        let batch: Vec<DeviceQuery<'_>> = picked.iter().map(|&i| plan.queries[i]).collect();
        let (found, traffic) = match index.search(&batch, &plan.device, allow.as_deref()) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        count(batch.len() as u64, &traffic);
        for (i, d) in picked.into_iter().zip(found) {
            ranked[i] = Some(d);
        }
    }
    let per_query_us = t.elapsed().as_micros() as u64 / queries.len().max(1) as u64;
    queries
        .iter()
        .zip(ranked)
        .map(|(query, d)| {
            let d = d.unwrap_or_default();
            finish(snap, query, k, params, allowed, &plan, d, per_query_us)
        })
        .collect::<Result<Vec<Answer>>>()
        .map(Some)
}

/// What the CPU pipeline would decide for this batch, as device parameters.
struct Plan<'q> {
    device: DeviceSearch,
    queries: Vec<DeviceQuery<'q>>,
    stop: EarlyStop,
}

impl<'q> Plan<'q> {
    fn new(
        snap: &SnapshotInner,
        codec: &Codec,
        queries: &[&'q [f32]],
        k: usize,
        params: &SearchParams,
        allowed: Option<&Allowed>,
    ) -> Self {
        let dim = codec.dim();
        let live = allowed.map_or_else(|| snap.live_docs(), |a| a.count);
        let queries = queries
            .iter()
            .map(|q| {
                let nq = q.len() / dim;
                // search_with_tables: a filter ranks every match when `estimate_all` says
                // so (module `filter::depth`).
                let walk = crate::filter::depth::Walk {
                    nprobe: params.nprobe,
                    query_tokens: nq,
                    centroids: codec.n_centroids() as usize,
                };
                let scan_all = allowed.is_some_and(|a| {
                    crate::filter::depth::estimate_all(params, k, a, snap.live_docs(), walk)
                });
                DeviceQuery {
                    tokens: q,
                    lut: QueryLut::table_bytes(codec.residual(), nq) <= LUT_MAX_BYTES,
                    scan_all,
                }
            })
            .collect();
        Plan {
            device: DeviceSearch {
                nprobe: crate::filter::depth::probes(params.nprobe, allowed, snap.live_docs()),
                prefilter: params.prefilter_budget(k, snap.live_docs()),
                rerank: params.rerank_limit(k),
                exhaustive: params.full_scan(k, live),
            },
            queries,
            stop: EarlyStop {
                min: params.rerank_budget(k),
                cut: params.settle_cut(k),
            },
        }
    }
}

/// The allowed documents as a bitmap over the device index's global ids.
fn allow_bitmap(index: &DeviceIndex, a: &Allowed) -> Vec<u32> {
    let bases = index.segment_bases();
    let mut words = vec![0u32; index.bitmap_words()];
    for (si, bm) in a.per_seg.iter().enumerate() {
        for local in bm {
            let g = bases[si] as usize + local as usize;
            if let Some(w) = words.get_mut(g / 32) {
                *w |= 1 << (g % 32);
            }
        }
    }
    words
}

/// The host's part of one query: the survivors in the CPU's order (estimate descending,
/// ties to the lower global id, as `top_k` over candidates in global order), the early
/// stop replayed over their exact scores, then the CPU's refine stage and final ranking.
#[allow(clippy::too_many_arguments)]
fn finish(
    snap: &SnapshotInner,
    query: &[f32],
    k: usize,
    params: &SearchParams,
    allowed: Option<&Allowed>,
    plan: &Plan<'_>,
    d: kg::DeviceRanked,
    per_query_us: u64,
) -> Result<Answer> {
    let mut stats = SearchStats {
        candidates: d.candidates as usize,
        // The device pipeline is timed as a whole (one synchronisation per batch).
        rerank_us: per_query_us,
        ..SearchStats::default()
    };
    let valid = |&(seg, local): &(u32, u32)| {
        snap.segments
            .get(seg as usize)
            .is_some_and(|s| local < s.reader.meta().n_docs)
    };
    let mut order: Vec<usize> = (0..d.docs.len()).filter(|&i| valid(&d.docs[i])).collect();
    let cand = |i: usize| Cand {
        seg: d.docs[i].0,
        local: d.docs[i].1,
    };
    if plan.device.exhaustive {
        // search_with_tables' full scan: every live (allowed) document, in global order.
        let cands: Vec<Cand> = order.iter().map(|&i| cand(i)).collect();
        let scores: Vec<f32> = order.iter().map(|&i| d.exact[i]).collect();
        stats.reranked = cands.len();
        return rank(snap, query, k, params, &cands, &scores, stats);
    }
    // `top_k` breaks ties by the candidates' order: first touch unless the prefilter cut
    // them (then global order).
    let tie = |i: usize| {
        let touch = if d.touch_order { d.touch[i] } else { 0 };
        (d.docs[i].0, touch, d.docs[i].1)
    };
    order.sort_by(|&a, &b| {
        d.estimates[b]
            .total_cmp(&d.estimates[a])
            .then_with(|| tie(a).cmp(&tie(b)))
    });
    if order.len() < k {
        // The probed postings reach fewer documents than asked for: the CPU then scores
        // every live document, and so does this query, with the CPU's code.
        let mut stats = SearchStats::default();
        let hits = crate::search::search(snap, query, k, params, allowed, &mut stats)?;
        return Ok((hits, stats));
    }
    let (done, scores) = settle(order.len(), plan.stop, |r| {
        order[r].iter().map(|&i| d.exact[i]).collect()
    });
    let cands: Vec<Cand> = order[..done].iter().map(|&i| cand(i)).collect();
    stats.reranked = done;
    rank(snap, query, k, params, &cands, &scores, stats)
}

/// The CPU's final stage: refine (on the threads the parameters give the CPU's), then
/// order by score and external id.
fn rank(
    snap: &SnapshotInner,
    query: &[f32],
    k: usize,
    params: &SearchParams,
    cands: &[Cand],
    scores: &[f32],
    mut stats: SearchStats,
) -> Result<Answer> {
    let scored = Scored {
        cands,
        compressed: scores,
    };
    let hits = refine_and_rank(
        snap,
        query,
        &scored,
        k,
        params.refine_count(k),
        &Workers::new(params.threads),
        &mut stats,
    )?;
    Ok((hits, stats))
}

/// Totals over all GPU searches of this process (for benchmarks and monitoring).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuCounters {
    /// Queries answered on a GPU.
    pub queries: u64,
    /// Synchronised launch sequences (chunks of batches).
    pub chunks: u64,
    /// Bytes copied host to device by searches (queries; not the one-time uploads).
    pub h2d_bytes: u64,
    /// Bytes copied device to host (top-k and counts).
    pub d2h_bytes: u64,
    /// Device-memory bytes read and written by the kernels, from the launch code's access
    /// model (an estimate, not a hardware counter).
    pub device_bytes_model: u64,
}

static COUNTERS: Mutex<GpuCounters> = Mutex::new(GpuCounters {
    queries: 0,
    chunks: 0,
    h2d_bytes: 0,
    d2h_bytes: 0,
    device_bytes_model: 0,
});

fn count(queries: u64, t: &kg::DeviceTraffic) {
    let mut c = COUNTERS.lock().unwrap_or_else(|p| p.into_inner());
    c.queries += queries;
    c.chunks += u64::from(t.chunks);
    c.h2d_bytes += t.h2d_bytes;
    c.d2h_bytes += t.d2h_bytes;
    c.device_bytes_model += t.device_bytes_model;
}

/// GPU search totals of this process so far.
pub fn gpu_counters() -> GpuCounters {
    *COUNTERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Host object address + device, the key of the residency maps. The weak reference to the
/// host object keeps its address from being reused while the entry exists.
type Key = (usize, usize);

struct Resident<H, D> {
    host: Weak<H>,
    device: Weak<D>,
}

#[derive(Default)]
struct Residency {
    codecs: HashMap<Key, Resident<Codec, DeviceCodec>>,
    segments: HashMap<Key, Resident<SegmentReader, DeviceSegment>>,
    snapshots: HashMap<Key, (Weak<SnapshotInner>, Arc<DeviceIndex>)>,
}

impl Residency {
    fn purge(&mut self) {
        self.snapshots.retain(|_, (s, _)| s.strong_count() > 0);
        self.codecs
            .retain(|_, r| r.host.strong_count() > 0 && r.device.strong_count() > 0);
        self.segments
            .retain(|_, r| r.host.strong_count() > 0 && r.device.strong_count() > 0);
    }
}

fn residency() -> &'static Mutex<Residency> {
    static R: OnceLock<Mutex<Residency>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Residency::default()))
}

/// The device index of `snap` on `gpu`, uploading what is not resident yet.
fn index_for(snap: &Arc<SnapshotInner>, gpu: &Arc<Gpu>) -> Result<Arc<DeviceIndex>, GpuError> {
    let ord = gpu.ordinal();
    let mut res = residency().lock().unwrap_or_else(|p| p.into_inner());
    res.purge();
    let skey = (ord, Arc::as_ptr(snap) as usize);
    if let Some((_, idx)) = res.snapshots.get(&skey) {
        return Ok(idx.clone());
    }
    let codec = snap
        .codec
        .as_ref()
        .ok_or_else(|| GpuError::Unsupported("the collection has no codec yet".into()))?;
    let ckey = (ord, Arc::as_ptr(codec) as usize);
    let dcodec = match res.codecs.get(&ckey).and_then(|r| r.device.upgrade()) {
        Some(d) => d,
        None => {
            // The device scores centroids as this host does (in i8 with VNNI): same bits.
            let d = Arc::new(gpu.upload_codec(
                codec.centroids(),
                codec.residual(),
                codec.int8_centroids(),
            )?);
            res.codecs.insert(
                ckey,
                Resident {
                    host: Arc::downgrade(codec),
                    device: Arc::downgrade(&d),
                },
            );
            d
        }
    };
    let mut segments = Vec::with_capacity(snap.segments.len());
    let mut deleted = Vec::with_capacity(snap.segments.len());
    for s in &snap.segments {
        let key = (ord, Arc::as_ptr(&s.reader) as usize);
        let d = match res.segments.get(&key).and_then(|r| r.device.upgrade()) {
            Some(d) => d,
            None => {
                let d = Arc::new(upload_segment(gpu, &s.reader)?);
                res.segments.insert(
                    key,
                    Resident {
                        host: Arc::downgrade(&s.reader),
                        device: Arc::downgrade(&d),
                    },
                );
                d
            }
        };
        segments.push(d);
        deleted.push(s.tombstones.iter().collect::<Vec<u32>>());
    }
    let idx = Arc::new(gpu.index(dcodec, segments, &deleted)?);
    res.snapshots
        .insert(skey, (Arc::downgrade(snap), idx.clone()));
    Ok(idx)
}

/// The segment's posting lists as the device reads them: `n_centroids + 1` offsets into one
/// array of absolute local ids (the reader has already undone zstd and the delta coding).
fn flat_postings(r: &SegmentReader) -> (Vec<u32>, Vec<u32>) {
    let k = r.meta().n_centroids;
    let mut offsets = Vec::with_capacity(k as usize + 1);
    let mut docs = Vec::new();
    offsets.push(0u32);
    for c in 0..k {
        docs.extend_from_slice(r.posting(c));
        offsets.push(docs.len() as u32);
    }
    (offsets, docs)
}

/// Uploads a segment: its stored codes, residuals and doc offsets as they are, and its
/// postings as decoded at open (list offsets + absolute local ids).
fn upload_segment(gpu: &Arc<Gpu>, r: &SegmentReader) -> Result<DeviceSegment, GpuError> {
    let meta = r.meta();
    let (posting_offsets, posting_docs) = flat_postings(r);
    let codes: &[u8] = match r.codes() {
        Codes::U16(c) => bytemuck::cast_slice(c),
        Codes::U32(c) => bytemuck::cast_slice(c),
    };
    gpu.upload_segment(&SegmentUpload {
        n_docs: meta.n_docs,
        n_centroids: meta.n_centroids,
        code_width: meta.code_width(),
        doc_offsets: r.doc_offsets(),
        codes,
        residuals: r.residuals(),
        scales: r.token_scales(),
        posting_offsets: &posting_offsets,
        posting_docs: &posting_docs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CollectionConfig, Database, Document, IngestOptions};
    use tessera_storage::segment::Codes;

    #[test]
    fn flat_postings_list_every_document_of_every_code_once_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open_or_create(dir.path()).expect("db");
        let coll = db
            .create_collection("c", CollectionConfig::new(8).with_n_centroids(16))
            .expect("collection");
        let docs: Vec<Document> = (0..60u64)
            .map(|i| {
                let rows = 1 + (i as usize % 7);
                let v = (0..rows * 8)
                    .map(|j| ((i as usize * 31 + j * 17) % 13) as f32 - 6.0)
                    .collect();
                Document::new(i, v)
            })
            .collect();
        coll.ingest(&docs, &IngestOptions::default())
            .expect("ingest");
        let snap = coll.snapshot();
        let r = &snap.inner.segments[0].reader;
        let (offsets, flat) = flat_postings(r);
        let k = r.meta().n_centroids as usize;
        assert_eq!(offsets.len(), k + 1);
        assert_eq!(offsets[k] as usize, flat.len());
        // Expected from the codes: document d is in list c iff one of its tokens has code c.
        let codes: Vec<u32> = match r.codes() {
            Codes::U16(c) => c.iter().map(|&x| u32::from(x)).collect(),
            Codes::U32(c) => c.to_vec(),
        };
        let off = r.doc_offsets();
        for c in 0..k {
            let expected: Vec<u32> = (0..r.meta().n_docs)
                .filter(|&d| {
                    codes[off[d as usize] as usize..off[d as usize + 1] as usize]
                        .contains(&(c as u32))
                })
                .collect();
            assert_eq!(
                &flat[offsets[c] as usize..offsets[c + 1] as usize],
                expected.as_slice(),
                "centroid {c}"
            );
        }
    }
}

#[cfg(test)]
mod emulate;
