//! GPU search: the CUDA kernels of `cuda/search.cu`, compiled by NVRTC at first use, and the
//! code that uploads a collection and launches a whole PLAID search on the device.
//!
//! CUDA is reached through `cudarc` with dynamic loading: nothing CUDA is needed to build,
//! and before any CUDA call [`driver_present`] / [`nvrtc_present`] check that the libraries
//! can be loaded. The kernels are compiled once per process and device (for the device's
//! `sm_XY`) and kept in [`Gpu`], which is cached per device ordinal by [`gpu`].
//!
//! Device data (FORMAT.md, "Device layout"): a [`DeviceCodec`] (centroids and bucket weights
//! as stored), one [`DeviceSegment`] per segment (doc offsets, codes and packed residuals as
//! stored; postings decoded once into list offsets and absolute local ids), and a
//! [`DeviceIndex`] per snapshot: the segment table and a tombstone bitmap over global ids.
//! Resident bytes are counted against a budget; an upload beyond it fails with
//! [`GpuError::OutOfBudget`] before anything is allocated.
//!
//! A batch search moves the query matrices in and the top-k out, with one synchronisation
//! per chunk of queries (chunks bound the scratch memory, see [`MAX_SCRATCH_BYTES`]).
//!
//! Launches per chunk, all on one stream (the host waits once, for the top-k copy):
//! 1. `centroid_scores`: `S = Q C^T` in 32 x 32 tiles (block 32 x 8), written centroid-major
//!    and token-major;
//! 2. `select_topk`, one 1024-thread block per query token: its `nprobe` best centroids
//!    (skipped when `nprobe >= K`: every centroid is probed);
//! 3. `mark_candidates`, a 128-thread block per (probe, segment): the posting list's
//!    documents set bits in the query's candidate bitmap;
//! 4. `approx_scores`, a warp per 32 documents of a query: minus tombstones, the sum over
//!    query tokens of the max centroid score over the document's codes; `-inf` elsewhere;
//! 5. `select_topk`, a block per query: the `n_rerank` best approximate scores survive
//!    (pruning by rank, as the CPU path);
//! 6. `rerank_maxsim_d{128,256,512,1024}`, a 128-thread block per (survivor, query): tiles of
//!    the document decompressed into shared memory only, exact MaxSim;
//! 7. `select_topk`, a block per query: the top-k, ties to the lower global id.
//!
//! `select_topk` is a radix selection on order-preserving float keys (4 passes of 8 bits),
//! followed, when the boundary value is tied, by a radix selection on the tied ids.
//!
//! This is the crate's only module with `unsafe` besides `simd`: kernel launches, and
//! switching off cudarc's per-buffer event tracking (one stream, so it is not needed).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits, sys::CUdevice_attribute,
};
use cudarc::nvrtc::{CompileOptions, Ptx};

/// The CUDA C source of every search kernel.
pub const KERNEL_SOURCE: &str = include_str!("cuda/search.cu");

/// Entry points of [`KERNEL_SOURCE`] that the launch code loads.
pub const KERNEL_NAMES: &[&str] = &[
    "centroid_scores",
    "select_topk",
    "mark_candidates",
    "approx_scores",
    "rerank_maxsim_d128",
    "rerank_maxsim_d256",
    "rerank_maxsim_d512",
    "rerank_maxsim_d1024",
];

/// Largest vector dimension the fused re-ranking kernel handles (32 registers per lane).
pub const MAX_DIM: usize = 1024;
/// Largest query (tokens) the re-ranking kernel's shared memory holds.
pub const MAX_QUERY_TOKENS: usize = 4096;
/// Most scratch memory one chunk of a batch may use (at most an eighth of the device's free
/// memory at start); larger batches are split into chunks.
pub const MAX_SCRATCH_BYTES: u64 = 4 << 30;
/// Environment variable overriding the resident-data budget (bytes).
pub const BUDGET_ENV: &str = "TESSERA_GPU_MEMORY_BUDGET";

/// CUDA's limit on grid.y.
const MAX_GRID_Y: usize = 65_535;
const RERANK_THREADS: u32 = 128;
const SELECT_THREADS: u32 = 1024;
const MARK_THREADS: u32 = 128;
const APPROX_WARPS: u32 = 8;
/// Threads per block each kernel is launched with (`centroid_scores` is 32 x 8).
pub const BLOCK_THREADS: &[(&str, u32)] = &[
    ("centroid_scores", 256),
    ("select_topk", SELECT_THREADS),
    ("mark_candidates", MARK_THREADS),
    ("approx_scores", 32 * APPROX_WARPS),
    ("rerank_maxsim_d128", RERANK_THREADS),
    ("rerank_maxsim_d256", RERANK_THREADS),
    ("rerank_maxsim_d512", RERANK_THREADS),
    ("rerank_maxsim_d1024", RERANK_THREADS),
];
/// Floats of shared memory for one tile of decompressed document tokens (32 KiB).
const TILE_FLOATS: usize = 8192;

/// What went wrong on the device path.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// `libcuda` cannot be loaded: no NVIDIA driver on this machine.
    #[error("the CUDA driver library (libcuda.so) is not installed")]
    NoDriver,
    /// `libnvrtc` cannot be loaded, so the kernels cannot be compiled.
    #[error("the NVRTC library (libnvrtc.so) is not installed; it compiles the search kernels")]
    NoNvrtc,
    /// The requested device does not exist.
    #[error("CUDA device {ordinal} does not exist ({count} device(s) found)")]
    NoDevice {
        /// Requested ordinal.
        ordinal: usize,
        /// Devices present.
        count: usize,
    },
    /// A CUDA call failed.
    #[error("CUDA error on device {ordinal} while {during}: {reason}")]
    Driver {
        /// Device.
        ordinal: usize,
        /// What was being done.
        during: &'static str,
        /// The driver's message.
        reason: String,
    },
    /// NVRTC rejected the kernels (the log says why).
    #[error("NVRTC could not compile the search kernels for {arch}: {log}")]
    Compile {
        /// Target architecture.
        arch: String,
        /// Compiler log.
        log: String,
    },
    /// Uploading would exceed the resident-memory budget.
    #[error(
        "device {ordinal} ({name}): uploading {need} more bytes would exceed the GPU memory budget \
         ({resident} of {budget} bytes in use; set {BUDGET_ENV} to change it)"
    )]
    OutOfBudget {
        /// Device.
        ordinal: usize,
        /// Device name.
        name: String,
        /// Bytes the upload needs.
        need: u64,
        /// Bytes already resident.
        resident: u64,
        /// The budget.
        budget: u64,
    },
    /// The search has a shape the kernels do not handle.
    #[error("not supported on the GPU: {0}")]
    Unsupported(String),
}

type Result<T> = std::result::Result<T, GpuError>;

/// Whether the CUDA driver library can be loaded (no CUDA call is made).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda under its usual names; no symbol is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether the NVRTC library can be loaded (no NVRTC call is made).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen libnvrtc under its usual names; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles [`KERNEL_SOURCE`] to PTX for `arch` (e.g. `sm_90`).
pub fn compile_ptx(arch: &str) -> Result<String> {
    if !nvrtc_present() {
        return Err(GpuError::NoNvrtc);
    }
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some("tessera_search.cu".into()),
        ..CompileOptions::default()
    };
    // cudarc panics if a symbol is missing from the loaded library; report that as an error.
    let compiled =
        std::panic::catch_unwind(|| cudarc::nvrtc::compile_ptx_with_opts(KERNEL_SOURCE, opts))
            .map_err(|_| GpuError::NoNvrtc)?;
    compiled
        .map(|ptx| ptx.to_src())
        .map_err(|e| GpuError::Compile {
            arch: arch.to_string(),
            log: e.to_string(),
        })
}

struct Kernels {
    centroid_scores: CudaFunction,
    select_topk: CudaFunction,
    mark_candidates: CudaFunction,
    approx_scores: CudaFunction,
    rerank: [CudaFunction; 4],
}

/// An initialised device: context, stream and compiled kernels.
pub struct Gpu {
    ordinal: usize,
    name: String,
    arch: String,
    peak_bandwidth: f64,
    budget: u64,
    /// Scratch bytes one chunk of a batch may use.
    scratch: u64,
    resident: Mutex<u64>,
    /// One search at a time on the stream; its scratch buffers are private to it.
    exclusive: Mutex<()>,
    kernels: Kernels,
    stream: Arc<CudaStream>,
    /// Kept so the context outlives every buffer and module of this device.
    _ctx: Arc<CudaContext>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ordinal)
            .field("name", &self.name)
            .field("arch", &self.arch)
            .finish()
    }
}

/// The device `ordinal`, initialised once per process (later calls return the same device or
/// the same error).
pub fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    static GPUS: OnceLock<Mutex<HashMap<usize, Result<Arc<Gpu>>>>> = OnceLock::new();
    let map = GPUS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(ordinal).or_insert_with(|| open(ordinal)).clone()
}

fn open(ordinal: usize) -> Result<Arc<Gpu>> {
    if !driver_present() {
        return Err(GpuError::NoDriver);
    }
    if !nvrtc_present() {
        return Err(GpuError::NoNvrtc);
    }
    // A driver older than the cudarc bindings may lack a symbol, which cudarc reports by
    // panicking: turn it into an error so the caller can fall back to the CPU.
    std::panic::catch_unwind(|| open_inner(ordinal)).unwrap_or_else(|_| {
        Err(GpuError::Driver {
            ordinal,
            during: "initialising (a driver symbol is missing; the driver is older than CUDA 13?)",
            reason: "cudarc panicked".into(),
        })
    })
}

fn open_inner(ordinal: usize) -> Result<Arc<Gpu>> {
    let drv = |during: &'static str| {
        move |e: cudarc::driver::DriverError| GpuError::Driver {
            ordinal,
            during,
            reason: e.to_string(),
        }
    };
    let count = CudaContext::device_count().map_err(drv("counting devices"))? as usize;
    if ordinal >= count {
        return Err(GpuError::NoDevice { ordinal, count });
    }
    let ctx = CudaContext::new(ordinal).map_err(drv("creating a context"))?;
    // SAFETY: every buffer is used on the one stream below only, so cross-stream events are
    // unnecessary; searches serialise on `Gpu::exclusive` and synchronise before returning.
    unsafe { ctx.disable_event_tracking() };
    let name = ctx.name().map_err(drv("reading the device name"))?;
    let (major, minor) = ctx
        .compute_capability()
        .map_err(drv("reading the compute capability"))?;
    let arch = format!("sm_{major}{minor}");
    let ptx = compile_ptx(&arch)?;
    let module = ctx
        .load_module(Ptx::from_src(ptx))
        .map_err(drv("loading the compiled kernels"))?;
    let f = |name: &str| module.load_function(name).map_err(drv("loading a kernel"));
    let kernels = Kernels {
        centroid_scores: f("centroid_scores")?,
        select_topk: f("select_topk")?,
        mark_candidates: f("mark_candidates")?,
        approx_scores: f("approx_scores")?,
        rerank: [
            f("rerank_maxsim_d128")?,
            f("rerank_maxsim_d256")?,
            f("rerank_maxsim_d512")?,
            f("rerank_maxsim_d1024")?,
        ],
    };
    let attr = |a| ctx.attribute(a).map_err(drv("reading a device attribute"));
    let clock_khz = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE).unwrap_or(0);
    let bus_bits =
        attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH).unwrap_or(0);
    // Double data rate: two transfers per clock.
    let peak_bandwidth = 2.0 * f64::from(clock_khz) * 1e3 * f64::from(bus_bits) / 8.0;
    let (free, _) = ctx.mem_get_info().map_err(drv("reading free memory"))?;
    let scratch = MAX_SCRATCH_BYTES.min(free as u64 / 8);
    let budget = std::env::var(BUDGET_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        // Leave room for scratch and for other users of the device.
        .unwrap_or_else(|| (free as u64).saturating_sub(scratch * 2) / 10 * 9);
    let stream = ctx.default_stream();
    Ok(Arc::new(Gpu {
        ordinal,
        name,
        arch,
        peak_bandwidth,
        budget,
        scratch,
        resident: Mutex::new(0),
        exclusive: Mutex::new(()),
        kernels,
        stream,
        _ctx: ctx,
    }))
}

impl Gpu {
    /// Device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Device name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Architecture the kernels were compiled for (`sm_XY`).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Theoretical DRAM bandwidth in bytes/s from the memory clock and bus width (0 if the
    /// driver does not report them).
    pub fn peak_bandwidth(&self) -> f64 {
        self.peak_bandwidth
    }

    /// Resident bytes allowed.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Resident bytes in use (codecs, segments, snapshot tables).
    pub fn resident_bytes(&self) -> u64 {
        *self.resident.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, during: &'static str) -> impl Fn(cudarc::driver::DriverError) -> GpuError {
        let ordinal = self.ordinal;
        move |e| GpuError::Driver {
            ordinal,
            during,
            reason: e.to_string(),
        }
    }

    fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation> {
        let mut r = self.resident.lock().unwrap_or_else(|p| p.into_inner());
        if *r + bytes > self.budget {
            return Err(GpuError::OutOfBudget {
                ordinal: self.ordinal,
                name: self.name.clone(),
                need: bytes,
                resident: *r,
                budget: self.budget,
            });
        }
        *r += bytes;
        Ok(Reservation {
            gpu: self.clone(),
            bytes,
        })
    }

    /// Copies `data` to a new device buffer (one element of padding when empty, since CUDA
    /// does not allocate zero bytes).
    fn upload<T: DeviceRepr + Copy + Default>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        let pad = [T::default()];
        let src = if data.is_empty() { &pad[..] } else { data };
        self.stream
            .clone_htod(src)
            .map_err(self.err("copying to the device"))
    }

    fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(len.max(1))
            .map_err(self.err("allocating scratch memory"))
    }

    fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        // Event tracking is off, so the guard records nothing; the address is what we need.
        s.device_ptr(&self.stream).0
    }

    /// Uploads a codec: centroids `[k, dim]` and bucket weights `[dim, 2^nbits]`, as stored.
    pub fn upload_codec(
        self: &Arc<Self>,
        dim: usize,
        nbits: u32,
        centroids: &[f32],
        weights: &[f32],
    ) -> Result<DeviceCodec> {
        if dim == 0 || dim > MAX_DIM {
            return Err(GpuError::Unsupported(format!(
                "dimension {dim} (the GPU kernels handle 1 to {MAX_DIM})"
            )));
        }
        let bytes = 4 * (centroids.len() + weights.len()) as u64;
        let reservation = self.reserve(bytes)?;
        Ok(DeviceCodec {
            dim,
            nbits,
            n_centroids: (centroids.len() / dim) as u32,
            centroids: self.upload(centroids)?,
            weights: self.upload(weights)?,
            _reservation: reservation,
        })
    }

    /// Uploads one segment's arrays (see [`SegmentUpload`]).
    pub fn upload_segment(self: &Arc<Self>, seg: &SegmentUpload<'_>) -> Result<DeviceSegment> {
        if !matches!(seg.code_width, 2 | 4) {
            return Err(GpuError::Unsupported(format!(
                "code width {}",
                seg.code_width
            )));
        }
        let bytes = 8 * seg.doc_offsets.len() as u64
            + seg.codes.len() as u64
            + seg.residuals.len() as u64
            + 4 * (seg.posting_offsets.len() + seg.posting_docs.len()) as u64;
        let reservation = self.reserve(bytes)?;
        let n_tokens = seg.doc_offsets.last().copied().unwrap_or(0);
        Ok(DeviceSegment {
            n_docs: seg.n_docs,
            n_tokens,
            n_centroids: seg.n_centroids,
            code_width: seg.code_width,
            offsets: self.upload(seg.doc_offsets)?,
            codes: self.upload(seg.codes)?,
            residuals: self.upload(seg.residuals)?,
            post_off: self.upload(seg.posting_offsets)?,
            post_docs: self.upload(seg.posting_docs)?,
            _reservation: reservation,
        })
    }

    /// Assembles a searchable view: the codec, the segments in snapshot order, and for each
    /// segment its deleted local ids.
    pub fn index(
        self: &Arc<Self>,
        codec: Arc<DeviceCodec>,
        segments: Vec<Arc<DeviceSegment>>,
        deleted: &[Vec<u32>],
    ) -> Result<DeviceIndex> {
        if segments.len() > MAX_GRID_Y {
            return Err(GpuError::Unsupported(format!(
                "{} segments in one snapshot (the kernels handle up to {MAX_GRID_Y})",
                segments.len()
            )));
        }
        let n_docs: Vec<u32> = segments.iter().map(|s| s.n_docs).collect();
        let Tables {
            base,
            tomb,
            words,
            n,
        } = snapshot_tables(&n_docs, deleted)?;
        let tokens: u64 = segments.iter().map(|s| s.n_tokens).sum();
        let live_docs = u64::from(n) - deleted.iter().map(|d| d.len() as u64).sum::<u64>();
        let table_bytes = 4 * (tomb.len() as u64) + 40 * segments.len() as u64 + 16;
        let reservation = self.reserve(table_bytes)?;
        let addrs = |f: &dyn Fn(&DeviceSegment) -> u64| -> Vec<u64> {
            segments.iter().map(|s| f(s)).collect()
        };
        let seg_offsets = self.upload(&addrs(&|s| self.ptr(&s.offsets)))?;
        let seg_codes = self.upload(&addrs(&|s| self.ptr(&s.codes)))?;
        let seg_resid = self.upload(&addrs(&|s| self.ptr(&s.residuals)))?;
        let seg_post_off = self.upload(&addrs(&|s| self.ptr(&s.post_off)))?;
        let seg_post_docs = self.upload(&addrs(&|s| self.ptr(&s.post_docs)))?;
        let widths: Vec<u32> = segments.iter().map(|s| s.code_width).collect();
        let ncent: Vec<u32> = segments.iter().map(|s| s.n_centroids).collect();
        Ok(DeviceIndex {
            gpu: self.clone(),
            n_docs: n,
            words,
            live_docs,
            avg_tokens: tokens as f64 / f64::from(n.max(1)),
            base_host: base.clone(),
            seg_base: self.upload(&base)?,
            seg_offsets,
            seg_codes,
            seg_resid,
            seg_post_off,
            seg_post_docs,
            seg_code_width: self.upload(&widths)?,
            seg_ncent: self.upload(&ncent)?,
            tomb: self.upload(&tomb)?,
            segments,
            codec,
            _reservation: reservation,
        })
    }
}

/// Global document ids of a snapshot: segment `s` holds ids `base[s]..base[s + 1]` (local id
/// `l` is global `base[s] + l`), and bit `g` of `tomb` is set when global document `g` is
/// deleted. `words` is the bitmap's length (at least 1), `n` the number of documents.
#[derive(Debug, PartialEq)]
struct Tables {
    base: Vec<u32>,
    tomb: Vec<u32>,
    words: u32,
    n: u32,
}

fn snapshot_tables(n_docs: &[u32], deleted: &[Vec<u32>]) -> Result<Tables> {
    let mut base = vec![0u32];
    let mut total: u64 = 0;
    for &d in n_docs {
        total += u64::from(d);
        // NO_ID (u32::MAX) marks an empty slot on the device.
        if total >= u64::from(u32::MAX) {
            return Err(GpuError::Unsupported(
                "more than 2^32 - 2 documents in one snapshot".into(),
            ));
        }
        base.push(total as u32);
    }
    let n = total as u32;
    let words = n.div_ceil(32).max(1);
    let mut tomb = vec![0u32; words as usize];
    for (si, del) in deleted.iter().enumerate().take(n_docs.len()) {
        for &l in del {
            if l >= n_docs[si] {
                return Err(GpuError::Unsupported(format!(
                    "tombstone {l} of segment {si} is past its {} documents",
                    n_docs[si]
                )));
            }
            let g = base[si] + l;
            tomb[(g / 32) as usize] |= 1 << (g % 32);
        }
    }
    Ok(Tables {
        base,
        tomb,
        words,
        n,
    })
}

/// (segment, local id) of global id `g`: the last segment starting at or before `g`, as the
/// kernels' `find_segment` (so empty segments are skipped the same way).
fn locate(base: &[u32], g: u32) -> (u32, u32) {
    let seg = base.partition_point(|&s| s <= g).saturating_sub(1);
    (seg as u32, g - base[seg])
}

/// Resident bytes held by one device object; returned to the budget on drop.
struct Reservation {
    gpu: Arc<Gpu>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut r = self.gpu.resident.lock().unwrap_or_else(|p| p.into_inner());
        *r = r.saturating_sub(self.bytes);
    }
}

/// A codec resident on the device.
pub struct DeviceCodec {
    dim: usize,
    nbits: u32,
    n_centroids: u32,
    centroids: CudaSlice<f32>,
    weights: CudaSlice<f32>,
    _reservation: Reservation,
}

/// The arrays of one segment as the device needs them; all but the postings are the
/// segment's stored bytes.
#[derive(Clone, Copy, Debug)]
pub struct SegmentUpload<'a> {
    /// Documents.
    pub n_docs: u32,
    /// Centroids of the codec the segment was written with (its postings cover these).
    pub n_centroids: u32,
    /// Bytes per code: 2 or 4.
    pub code_width: u32,
    /// `n_docs + 1` token offsets.
    pub doc_offsets: &'a [u64],
    /// The CODES section's bytes.
    pub codes: &'a [u8],
    /// The RESIDUALS section's bytes.
    pub residuals: &'a [u8],
    /// `n_centroids + 1` offsets into `posting_docs`.
    pub posting_offsets: &'a [u32],
    /// Posting lists, absolute local ids, ascending within each list.
    pub posting_docs: &'a [u32],
}

/// A segment resident on the device.
pub struct DeviceSegment {
    n_docs: u32,
    n_tokens: u64,
    n_centroids: u32,
    code_width: u32,
    offsets: CudaSlice<u64>,
    codes: CudaSlice<u8>,
    residuals: CudaSlice<u8>,
    post_off: CudaSlice<u32>,
    post_docs: CudaSlice<u32>,
    _reservation: Reservation,
}

/// A searchable snapshot on the device: codec, segments, segment table and tombstones.
pub struct DeviceIndex {
    gpu: Arc<Gpu>,
    n_docs: u32,
    words: u32,
    live_docs: u64,
    /// Mean tokens per document (deleted ones included), for the traffic model.
    avg_tokens: f64,
    base_host: Vec<u32>,
    seg_base: CudaSlice<u32>,
    seg_offsets: CudaSlice<u64>,
    seg_codes: CudaSlice<u64>,
    seg_resid: CudaSlice<u64>,
    seg_post_off: CudaSlice<u64>,
    seg_post_docs: CudaSlice<u64>,
    seg_code_width: CudaSlice<u32>,
    seg_ncent: CudaSlice<u32>,
    tomb: CudaSlice<u32>,
    // Declared after the table so the table is freed first; both hold the same device.
    segments: Vec<Arc<DeviceSegment>>,
    codec: Arc<DeviceCodec>,
    _reservation: Reservation,
}

/// Parameters of a device search (the meaning of the engine's `SearchParams`).
#[derive(Clone, Copy, Debug)]
pub struct DeviceSearch {
    /// Results per query.
    pub k: usize,
    /// Centroids probed per query token.
    pub nprobe: u32,
    /// Documents kept after approximate scoring and re-ranked exactly.
    pub n_rerank: usize,
    /// Score every live document exactly.
    pub exhaustive: bool,
}

/// One query's answer: (segment index, local id, score), best first, ties by global id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceHits {
    /// Hits, best first.
    pub hits: Vec<(u32, u32, f32)>,
    /// Documents scored approximately.
    pub candidates: u32,
    /// Documents scored exactly.
    pub reranked: u32,
}

/// Traffic of one batch search.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DeviceTraffic {
    /// Bytes copied host to device.
    pub h2d_bytes: u64,
    /// Bytes copied device to host.
    pub d2h_bytes: u64,
    /// Device-memory bytes the kernels read and write, from a model of each kernel's
    /// accesses (counts of candidates and survivors, average document length); an estimate,
    /// not a hardware counter.
    pub device_bytes_model: u64,
    /// Chunks the batch was split into (one synchronisation each).
    pub chunks: u32,
}

fn grid(x: u32, y: u32, block: (u32, u32), smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (x.max(1), y.max(1), 1),
        block_dim: (block.0, block.1, 1),
        shared_mem_bytes: smem,
    }
}

impl DeviceIndex {
    /// The device.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Documents (including deleted ones) in the snapshot.
    pub fn n_docs(&self) -> u32 {
        self.n_docs
    }

    /// Searches a batch of queries (each row-major `[tokens, dim]`).
    pub fn search(
        &self,
        queries: &[&[f32]],
        p: &DeviceSearch,
    ) -> Result<(Vec<DeviceHits>, DeviceTraffic)> {
        let dim = self.codec.dim;
        let mut traffic = DeviceTraffic::default();
        if p.k == 0 || queries.is_empty() {
            return Ok((vec![DeviceHits::default(); queries.len()], traffic));
        }
        for q in queries {
            let nq = q.len() / dim;
            if nq == 0 || nq > MAX_QUERY_TOKENS {
                return Err(GpuError::Unsupported(format!(
                    "a query of {nq} tokens (the GPU kernels handle 1 to {MAX_QUERY_TOKENS})"
                )));
            }
        }
        let _one = self.gpu.exclusive.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(queries.len());
        let mut start = 0;
        while start < queries.len() {
            let end = start + self.chunk_len(&queries[start..], p);
            let (hits, t) = self.search_chunk(&queries[start..end], p)?;
            out.extend(hits);
            traffic.h2d_bytes += t.h2d_bytes;
            traffic.d2h_bytes += t.d2h_bytes;
            traffic.device_bytes_model += t.device_bytes_model;
            traffic.chunks += 1;
            start = end;
        }
        Ok((out, traffic))
    }

    fn rerank_len(&self, p: &DeviceSearch) -> usize {
        if p.exhaustive {
            self.n_docs as usize
        } else {
            p.n_rerank.max(p.k)
        }
    }

    /// Queries of the next chunk: as many as fit in the device's scratch allowance, at least
    /// one.
    fn chunk_len(&self, queries: &[&[f32]], p: &DeviceSearch) -> usize {
        let dim = self.codec.dim as u64;
        let kc = u64::from(self.codec.n_centroids);
        let n = u64::from(self.n_docs);
        let r = self.rerank_len(p) as u64;
        let mut used = 0u64;
        let mut tokens = 0u64;
        for (i, q) in queries.iter().enumerate() {
            let nq = q.len() as u64 / dim;
            // Grid limits: queries and 32-token tiles are grid.y of some launches.
            tokens += nq;
            if i > 0 && (i >= MAX_GRID_Y || tokens > 32 * MAX_GRID_Y as u64) {
                return i;
            }
            let per = 4 * (nq * dim + 2)
                + 8 * kc * nq
                + 8 * nq * u64::from(p.nprobe)
                + 4 * (u64::from(self.words) + n)
                + 16 * r
                + 8 * p.k as u64
                + 8;
            if i > 0 && used + per > self.gpu.scratch {
                return i;
            }
            used += per;
        }
        queries.len()
    }

    fn search_chunk(
        &self,
        queries: &[&[f32]],
        p: &DeviceSearch,
    ) -> Result<(Vec<DeviceHits>, DeviceTraffic)> {
        let g = &*self.gpu;
        let c = &*self.codec;
        let dim = c.dim;
        let b = queries.len() as u32;
        let kc = c.n_centroids;
        let n = self.n_docs;
        let mut q_off = vec![0u32];
        let mut tok_query = Vec::new();
        let mut flat = Vec::new();
        for (i, q) in queries.iter().enumerate() {
            let nq = q.len() / dim;
            flat.extend_from_slice(&q[..nq * dim]);
            tok_query.extend(std::iter::repeat_n(i as u32, nq));
            q_off.push(q_off[i] + nq as u32);
        }
        let t = tok_query.len() as u32;
        let nq_max = queries.iter().map(|q| q.len() / dim).max().unwrap_or(1) as u32;
        let r = self.rerank_len(p) as u32;
        let k = p.k.min(r as usize).max(1) as u32;

        let d_q = g.upload(&flat)?;
        let d_qoff = g.upload(&q_off)?;
        let d_tokq = g.upload(&tok_query)?;
        let mut traffic = DeviceTraffic {
            h2d_bytes: 4 * (flat.len() + q_off.len() + tok_query.len()) as u64,
            ..DeviceTraffic::default()
        };

        let d_exact = g.zeros::<f32>(b as usize * r as usize)?;
        let d_exact_ids = g.zeros::<u32>(b as usize * r as usize)?;
        let mut d_surv: Option<CudaSlice<u32>> = None;
        let d_totals = g.zeros::<u32>(b as usize)?;
        let d_surv_count = g.zeros::<u32>(b as usize)?;
        // Scratch of the approximate stage; kept alive until the chunk has synchronised.
        let mut scratch: Vec<CudaSlice<f32>> = Vec::new();
        let mut scratch_u32: Vec<CudaSlice<u32>> = Vec::new();

        let rerank_fn = &g.kernels.rerank[match dim {
            0..=128 => 0,
            129..=256 => 1,
            257..=512 => 2,
            _ => 3,
        }];
        let tile_tokens = (TILE_FLOATS / dim).clamp(1, 32) as u32;
        let smem = 4 * (tile_tokens * dim as u32 + nq_max);

        let (n_seg, dim32, nbits, rb) = (
            self.segments.len() as u32,
            dim as u32,
            c.nbits,
            crate::packed_len(dim, c.nbits) as u32,
        );
        let null = 0u64;
        if !p.exhaustive {
            // 1. Query x centroid scores, both layouts.
            let s_cm = g.zeros::<f32>(kc as usize * t as usize)?;
            let s_tm = g.zeros::<f32>(kc as usize * t as usize)?;
            {
                let (pc, pq, pcm, ptm) =
                    (g.ptr(&c.centroids), g.ptr(&d_q), g.ptr(&s_cm), g.ptr(&s_tm));
                let mut l = g.stream.launch_builder(&g.kernels.centroid_scores);
                l.arg(&pc)
                    .arg(&pq)
                    .arg(&kc)
                    .arg(&t)
                    .arg(&dim32)
                    .arg(&pcm)
                    .arg(&ptm);
                // SAFETY: argument types match the kernel's signature (pointers as u64
                // addresses of live buffers sized K*dim, T*dim, K*T, K*T); the grid covers
                // K x T in 32 x 32 tiles with bounds checks in the kernel.
                unsafe { l.launch(grid(kc.div_ceil(32), t.div_ceil(32), (32, 8), 0)) }
                    .map_err(g.err("launching centroid_scores"))?;
            }
            // 2. Top-nprobe centroids per query token (or all of them).
            let probe_all = p.nprobe as u64 >= u64::from(kc);
            let pn = if probe_all { kc } else { p.nprobe.max(1) };
            let probes = g.zeros::<u32>(t as usize * pn as usize)?;
            let probe_scores = g.zeros::<f32>(t as usize * pn as usize)?;
            if !probe_all {
                let (ps, pp, pps) = (g.ptr(&s_tm), g.ptr(&probes), g.ptr(&probe_scores));
                let (rs, es, ids_rs) = (u64::from(kc), 1u64, 0u64);
                let mut l = g.stream.launch_builder(&g.kernels.select_topk);
                l.arg(&ps)
                    .arg(&rs)
                    .arg(&es)
                    .arg(&null)
                    .arg(&ids_rs)
                    .arg(&kc)
                    .arg(&pn);
                l.arg(&pp).arg(&pps).arg(&pn).arg(&null).arg(&null);
                // SAFETY: one block per query token reads row t of s_tm (K floats) and
                // writes pn ids and scores at row t of buffers sized T*pn; null pointers are
                // the kernel's documented "absent" values.
                unsafe { l.launch(grid(t, 1, (SELECT_THREADS, 1), 0)) }
                    .map_err(g.err("launching select_topk (probes)"))?;
            }
            // 3. Candidate bitmaps from the probed posting lists.
            let bitmap = g.zeros::<u32>(b as usize * self.words as usize)?;
            {
                let pprobes = if probe_all { 0 } else { g.ptr(&probes) };
                let (ptq, ppo, ppd, pnc, pbase, pbm) = (
                    g.ptr(&d_tokq),
                    g.ptr(&self.seg_post_off),
                    g.ptr(&self.seg_post_docs),
                    g.ptr(&self.seg_ncent),
                    g.ptr(&self.seg_base),
                    g.ptr(&bitmap),
                );
                let mut l = g.stream.launch_builder(&g.kernels.mark_candidates);
                l.arg(&pprobes)
                    .arg(&pn)
                    .arg(&ptq)
                    .arg(&ppo)
                    .arg(&ppd)
                    .arg(&pnc)
                    .arg(&pbase);
                l.arg(&pbm).arg(&self.words);
                // SAFETY: block (slot, segment) reads probe `slot` (< T*pn), that segment's
                // posting offsets (bounds-checked against its centroid count) and list, and
                // sets bits below `words * 32` of query tok_query[t] < B's bitmap row.
                unsafe { l.launch(grid(t * pn, n_seg, (MARK_THREADS, 1), 0)) }
                    .map_err(g.err("launching mark_candidates"))?;
            }
            // 4. Approximate scores, dense over global ids.
            let approx = g.zeros::<f32>(b as usize * n as usize)?;
            {
                let (pbm, ptomb, pcm, pqo, pbase, poff, pcodes, pw, pa) = (
                    g.ptr(&bitmap),
                    g.ptr(&self.tomb),
                    g.ptr(&s_cm),
                    g.ptr(&d_qoff),
                    g.ptr(&self.seg_base),
                    g.ptr(&self.seg_offsets),
                    g.ptr(&self.seg_codes),
                    g.ptr(&self.seg_code_width),
                    g.ptr(&approx),
                );
                let mut l = g.stream.launch_builder(&g.kernels.approx_scores);
                l.arg(&pbm)
                    .arg(&self.words)
                    .arg(&ptomb)
                    .arg(&pcm)
                    .arg(&t)
                    .arg(&pqo);
                l.arg(&pbase)
                    .arg(&n_seg)
                    .arg(&poff)
                    .arg(&pcodes)
                    .arg(&pw)
                    .arg(&n)
                    .arg(&pa);
                // SAFETY: warp per bitmap word (< words) of query blockIdx.y (< B); reads
                // codes within each candidate's [offsets[l], offsets[l+1]) and s_cm at
                // code * T + token (< K*T); writes approx[b * N + g] for g < N.
                unsafe {
                    l.launch(grid(
                        self.words.div_ceil(APPROX_WARPS),
                        b,
                        (32 * APPROX_WARPS, 1),
                        0,
                    ))
                }
                .map_err(g.err("launching approx_scores"))?;
            }
            // 5. The n_rerank best approximate scores per query survive.
            let surv = g.zeros::<u32>(b as usize * r as usize)?;
            let surv_scores = g.zeros::<f32>(b as usize * r as usize)?;
            {
                let (pa, ps, pss, pcount, ptot) = (
                    g.ptr(&approx),
                    g.ptr(&surv),
                    g.ptr(&surv_scores),
                    g.ptr(&d_surv_count),
                    g.ptr(&d_totals),
                );
                let (rs, es, ids_rs) = (u64::from(n), 1u64, 0u64);
                let mut l = g.stream.launch_builder(&g.kernels.select_topk);
                l.arg(&pa)
                    .arg(&rs)
                    .arg(&es)
                    .arg(&null)
                    .arg(&ids_rs)
                    .arg(&n)
                    .arg(&r);
                l.arg(&ps).arg(&pss).arg(&r).arg(&pcount).arg(&ptot);
                // SAFETY: block per query reads its N approximate scores, writes r
                // survivors into rows of B*r buffers and one count/total each.
                unsafe { l.launch(grid(b, 1, (SELECT_THREADS, 1), 0)) }
                    .map_err(g.err("launching select_topk (survivors)"))?;
            }
            scratch.extend([s_cm, s_tm, probe_scores, approx, surv_scores]);
            scratch_u32.extend([probes, bitmap]);
            d_surv = Some(surv);
        }
        // 6. Fused decompression + MaxSim of the survivors (all live documents when
        // exhaustive).
        {
            let psurv = d_surv.as_ref().map_or(0, |s| g.ptr(s));
            let (pq, pqo, ptomb, pbase, poff, pcodes, pw, pres, pc, pwts, pout, pids) = (
                g.ptr(&d_q),
                g.ptr(&d_qoff),
                g.ptr(&self.tomb),
                g.ptr(&self.seg_base),
                g.ptr(&self.seg_offsets),
                g.ptr(&self.seg_codes),
                g.ptr(&self.seg_code_width),
                g.ptr(&self.seg_resid),
                g.ptr(&c.centroids),
                g.ptr(&c.weights),
                g.ptr(&d_exact),
                g.ptr(&d_exact_ids),
            );
            let mut l = g.stream.launch_builder(rerank_fn);
            l.arg(&pq)
                .arg(&pqo)
                .arg(&dim32)
                .arg(&psurv)
                .arg(&r)
                .arg(&ptomb)
                .arg(&n);
            l.arg(&pbase)
                .arg(&n_seg)
                .arg(&poff)
                .arg(&pcodes)
                .arg(&pw)
                .arg(&pres);
            l.arg(&pc)
                .arg(&pwts)
                .arg(&nbits)
                .arg(&rb)
                .arg(&tile_tokens)
                .arg(&pout)
                .arg(&pids);
            // SAFETY: block (r, b) reads survivor b*R + r (or r itself when exhaustive, with
            // R = N), checks it against N and the tombstones, reads that document's codes
            // and residual bytes within its token range and query b's rows; dynamic shared
            // memory holds tile_tokens*dim + nq_max floats (<= 48 KiB by MAX_DIM and
            // MAX_QUERY_TOKENS); writes one score and id at b*R + r.
            unsafe { l.launch(grid(r, b, (RERANK_THREADS, 1), smem)) }
                .map_err(g.err("launching rerank_maxsim"))?;
        }
        // 7. Top-k of the exact scores.
        let top_ids = g.zeros::<u32>(b as usize * k as usize)?;
        let top_scores = g.zeros::<f32>(b as usize * k as usize)?;
        let top_count = g.zeros::<u32>(b as usize)?;
        {
            let (pe, pids, pti, pts, pcount) = (
                g.ptr(&d_exact),
                g.ptr(&d_exact_ids),
                g.ptr(&top_ids),
                g.ptr(&top_scores),
                g.ptr(&top_count),
            );
            let (rs, es, ids_rs) = (u64::from(r), 1u64, u64::from(r));
            let mut l = g.stream.launch_builder(&g.kernels.select_topk);
            l.arg(&pe)
                .arg(&rs)
                .arg(&es)
                .arg(&pids)
                .arg(&ids_rs)
                .arg(&r)
                .arg(&k);
            l.arg(&pti).arg(&pts).arg(&k).arg(&pcount).arg(&null);
            // SAFETY: block per query reads its R exact scores and ids, writes k ids and
            // scores and one count.
            unsafe { l.launch(grid(b, 1, (SELECT_THREADS, 1), 0)) }
                .map_err(g.err("launching select_topk (top-k)"))?;
        }
        let dtoh =
            |what: &'static str, s: &CudaSlice<u32>| g.stream.clone_dtoh(s).map_err(g.err(what));
        let ids = dtoh("copying top-k ids to the host", &top_ids)?;
        let scores = g
            .stream
            .clone_dtoh(&top_scores)
            .map_err(g.err("copying top-k scores to the host"))?;
        let counts = dtoh("copying top-k counts to the host", &top_count)?;
        let totals = dtoh("copying candidate counts to the host", &d_totals)?;
        let survivors = dtoh("copying survivor counts to the host", &d_surv_count)?;
        traffic.d2h_bytes =
            4 * (ids.len() + scores.len() + counts.len() + totals.len() + survivors.len()) as u64;
        drop(scratch);
        drop(scratch_u32);

        let avg_tokens = self.avg_tokens;
        let mut out = Vec::with_capacity(queries.len());
        for qi in 0..b as usize {
            let nq = u64::from(q_off[qi + 1] - q_off[qi]);
            let cnt = counts[qi] as usize;
            let mut hits: Vec<(u32, u32, f32)> = (0..cnt)
                .map(|j| {
                    let (seg, local) = locate(&self.base_host, ids[qi * k as usize + j]);
                    (seg, local, scores[qi * k as usize + j])
                })
                .collect();
            // Best first, ties by global id (the CPU's candidate order).
            hits.sort_by(|a, b| {
                b.2.total_cmp(&a.2).then_with(|| {
                    (self.base_host[a.0 as usize] + a.1).cmp(&(self.base_host[b.0 as usize] + b.1))
                })
            });
            let (cands, reranked) = if p.exhaustive {
                (self.live_docs as u32, self.live_docs as u32)
            } else {
                (totals[qi], survivors[qi])
            };
            traffic.device_bytes_model +=
                self.bytes_model(nq, u64::from(cands), u64::from(reranked), p, avg_tokens);
            out.push(DeviceHits {
                hits,
                candidates: cands,
                reranked,
            });
        }
        Ok((out, traffic))
    }

    /// Device-memory traffic of one query under a simple access model (see
    /// [`DeviceTraffic::device_bytes_model`]).
    fn bytes_model(
        &self,
        nq: u64,
        cands: u64,
        reranked: u64,
        p: &DeviceSearch,
        avg_tokens: f64,
    ) -> u64 {
        let c = &*self.codec;
        let dim = c.dim as u64;
        let kc = u64::from(c.n_centroids);
        let n = u64::from(self.n_docs);
        let cw = self.segments.first().map_or(2, |s| u64::from(s.code_width));
        let rb = crate::packed_len(c.dim, c.nbits) as u64;
        let tokens = |docs: u64| (docs as f64 * avg_tokens) as u64;
        let rerank = tokens(reranked) * (cw + rb) + nq * dim * 4 + reranked * 16;
        if p.exhaustive {
            return rerank + kc * dim * 4;
        }
        // centroid scores: centroids read, two score layouts written; probe selection reads
        // its rows about 5 times; bitmap; approx: codes of candidates + dense array written
        // and read ~5 times by the survivor selection.
        kc * dim * 4
            + 2 * kc * nq * 4
            + 5 * kc * nq * 4
            + 4 * u64::from(self.words)
            + tokens(cands) * cw
            + cands * 8
            + 6 * n * 4
            + rerank
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The kernels' `find_segment`, transcribed: the device and the host must agree.
    fn find_segment(base: &[u32], g: u32) -> u32 {
        let (mut lo, mut hi) = (0usize, base.len() - 1);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if base[mid] <= g {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo as u32
    }

    #[test]
    fn global_ids_and_tombstones_round_trip_across_unaligned_and_empty_segments() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..200 {
            let n_seg = rng.random_range(1..8);
            let sizes: Vec<u32> = (0..n_seg)
                .map(|_| match rng.random_range(0..4) {
                    0 => 0,
                    1 => 1,
                    2 => 32,
                    _ => rng.random_range(1..100),
                })
                .collect();
            let deleted: Vec<Vec<u32>> = sizes
                .iter()
                .map(|&n| (0..n).filter(|_| rng.random_bool(0.3)).collect())
                .collect();
            let t = snapshot_tables(&sizes, &deleted).expect("tables");
            let total: u32 = sizes.iter().sum();
            assert_eq!(t.n, total);
            assert_eq!(t.words, total.div_ceil(32).max(1));
            let mut set_bits = 0;
            for (si, &n) in sizes.iter().enumerate() {
                for l in 0..n {
                    let g = t.base[si] + l;
                    assert_eq!(locate(&t.base, g), (si as u32, l));
                    assert_eq!(find_segment(&t.base, g), si as u32);
                    let dead = (t.tomb[(g / 32) as usize] >> (g % 32)) & 1 == 1;
                    assert_eq!(dead, deleted[si].contains(&l), "segment {si} doc {l}");
                    set_bits += u32::from(dead);
                }
            }
            // No bit beyond the deleted documents.
            let ones: u32 = t.tomb.iter().map(|w| w.count_ones()).sum();
            assert_eq!(ones, set_bits);
        }
    }

    #[test]
    fn tables_reject_too_many_documents_and_stray_tombstones() {
        assert!(matches!(
            snapshot_tables(&[u32::MAX / 2, u32::MAX / 2 + 1], &[vec![], vec![]]),
            Err(GpuError::Unsupported(_))
        ));
        assert!(matches!(
            snapshot_tables(&[3], &[vec![3]]),
            Err(GpuError::Unsupported(_))
        ));
    }
}
