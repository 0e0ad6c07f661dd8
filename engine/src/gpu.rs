//! Search dispatch between the CPU pipeline (`search.rs`) and the CUDA kernels
//! (`tessera_kernels::gpu`), and the device-resident copies of collections.
//!
//! Residency: a codec or segment is uploaded the first time a snapshot containing it is
//! searched on a device, then shared by every later snapshot that contains it (a weak map
//! keyed by the host object); each snapshot gets a small device index (segment table and
//! tombstone bitmap) built on its first GPU search. Device memory is released when the
//! last snapshot using it is gone, at the next GPU search (entries are purged then).
//!
//! Refinement runs on the CPU: the device returns its best `max(k, refine budget)`
//! candidates with their compressed scores, and the host re-scores them over their
//! originals (`search::refine_and_rank`), the same code as the CPU path. Why not on the
//! device: the originals are 7x the index at f16 and would have to be resident to be read
//! there, while the refined candidates' originals are a few hundred kilobytes per query
//! that the host reads in place from the memory map; the refine work per query is well
//! under a millisecond of one core (BENCHMARKS.md, "Exact answers").
//!
//! Fallback: `auto` uses the GPU when it works and otherwise the CPU, printing the reason on
//! stderr once per process and reason; `cuda[:N]` turns every such reason into
//! [`Error::Device`]. The CPU path stays the reference: same top-k, scores within 1e-4.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use tessera_kernels::gpu::{
    self as kg, DeviceCodec, DeviceIndex, DeviceSearch, DeviceSegment, Gpu, GpuError, SegmentUpload,
};
use tessera_storage::segment::{Codes, SegmentReader};

use crate::codec::Codec;
use crate::document::Hit;
use crate::error::{Error, Result};
use crate::options::{Device, SearchParams};
use crate::parallel::Workers;
use crate::search::{Cand, Scored, SearchStats, refine_and_rank};
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

/// Searches `queries` on the GPU the parameters ask for. `Ok(None)`: use the CPU path
/// (device `cpu`, or `auto` with an unusable GPU).
pub(crate) fn search_batch(
    snap: &Arc<SnapshotInner>,
    queries: &[&[f32]],
    k: usize,
    params: &SearchParams,
) -> Result<Option<Vec<Answer>>> {
    if params.filter.is_some() && params.device != Device::Cpu {
        // The kernels have no filter stage: a filtered search runs on the CPU, whatever the
        // device setting, and says so once.
        log_reason("a metadata filter is set (filtered searches run on the CPU)".into());
        return Ok(None);
    }
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
    if snap.codec.is_none() || snap.segments.is_empty() || k == 0 {
        return Ok(Some(vec![Default::default(); queries.len()]));
    }
    let index = match index_for(snap, &gpu) {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let refine = params.refine_count(k);
    let refinable = snap.segments.iter().any(|s| s.originals.is_some());
    let want = if refinable { k.max(refine) } else { k };
    let live = usize::try_from(snap.live_docs()).unwrap_or(usize::MAX);
    let p = DeviceSearch {
        k: want.min(live).max(k),
        nprobe: params.nprobe.max(1),
        n_rerank: params.rerank_budget(k),
        exhaustive: params.full_scan(k, snap.live_docs()),
    };
    let t = Instant::now();
    let (found, traffic) = match index.search(queries, &p) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    count(queries.len() as u64, &traffic);
    let per_query_us = t.elapsed().as_micros() as u64 / queries.len().max(1) as u64;
    found
        .into_iter()
        .zip(queries)
        .map(|(d, query)| {
            let mut stats = SearchStats {
                candidates: d.candidates as usize,
                reranked: d.reranked as usize,
                // The device pipeline is timed as a whole (one synchronisation per batch).
                rerank_us: per_query_us,
                ..SearchStats::default()
            };
            let (cands, scores): (Vec<Cand>, Vec<f32>) = d
                .hits
                .iter()
                .filter(|&&(seg, local, _)| {
                    snap.segments
                        .get(seg as usize)
                        .is_some_and(|s| local < s.reader.meta().n_docs)
                })
                .map(|&(seg, local, score)| (Cand { seg, local }, score))
                .unzip();
            if cands.len() < k.min(live) {
                // The probed postings reached fewer documents than asked for: the CPU path
                // then scores every live document, and so does this query.
                let mut stats = SearchStats::default();
                let hits = crate::search::search(snap, query, k, params, None, &mut stats)?;
                return Ok((hits, stats));
            }
            let scored = Scored {
                cands: &cands,
                compressed: &scores,
            };
            // The CPU's final stage: refine, then order by score and external id.
            let hits = refine_and_rank(
                snap,
                query,
                &scored,
                k,
                refine,
                &Workers::new(1),
                &mut stats,
            )?;
            Ok((hits, stats))
        })
        .collect::<Result<Vec<Answer>>>()
        .map(Some)
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
            let data = codec.data();
            let d = Arc::new(gpu.upload_codec(
                codec.dim(),
                data.nbits,
                codec.centroids(),
                &data.weights,
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
