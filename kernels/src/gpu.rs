//! GPU search: the CUDA kernels of `cuda/search.cu`, compiled by NVRTC at first use, and the
//! code that uploads a collection and launches a whole PLAID search on the device.
//!
//! CUDA is reached through `cudarc` with dynamic loading: nothing CUDA is needed to build,
//! and before any CUDA call [`driver_present`] / [`nvrtc_present`] check that the libraries
//! can be loaded. The kernels are compiled once per process and device (for the device's
//! `sm_XY`) and kept in [`Gpu`], which is cached per device ordinal by [`gpu`].
//!
//! Device data (FORMAT.md, "Device layout"): a [`DeviceCodec`] (centroids as stored, the
//! residual byte table, and the host's `i8` centroids when it scores them so), one
//! [`DeviceSegment`] per segment (doc offsets, codes, packed residuals and token scales as
//! stored; postings decoded once into list offsets and absolute local ids), and a
//! [`DeviceIndex`] per snapshot: the segment table and a tombstone bitmap over global ids.
//! Resident bytes are counted against a budget; an upload beyond it fails with
//! [`GpuError::OutOfBudget`] before anything is allocated.
//!
//! A batch search moves the query matrices in and each query's ranked survivors out, with
//! one synchronisation per chunk of queries (chunks bound the scratch memory, see
//! [`MAX_SCRATCH_BYTES`]). The launches, one per stage of the CPU pipeline, are in
//! `gpu/pipeline.rs`; each kernel of `cuda/search.cu` names the CPU function it mirrors.
//!
//! `unsafe` here and in `gpu/pipeline.rs`: kernel launches, and switching off cudarc's
//! per-buffer event tracking (one stream, so it is not needed).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits, sys::CUdevice_attribute,
};
use cudarc::nvrtc::{CompileOptions, Ptx};

mod pipeline;
pub use pipeline::{DeviceQuery, DeviceRanked, DeviceSearch, DeviceTraffic};

/// The CUDA C source of every search kernel.
pub const KERNEL_SOURCE: &str = include_str!("cuda/search.cu");

/// Entry points of [`KERNEL_SOURCE`] that the launch code loads.
pub const KERNEL_NAMES: &[&str] = &[
    "centroid_scores",
    "centroid_scores_i8",
    "byte_map_range",
    "quantize_scores",
    "select_topk",
    "rank_probes",
    "probe_tables",
    "mark_candidates",
    "postings_estimate",
    "code_estimate",
    "build_lut",
    "lut_maxsim",
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
/// Warps per block of the kernels that give one warp to each document.
const DOC_WARPS: u32 = 8;
const FLAT_THREADS: u32 = 256;
/// Threads per block each kernel is launched with (`centroid_scores*` are 32 x 8).
pub const BLOCK_THREADS: &[(&str, u32)] = &[
    ("centroid_scores", 256),
    ("centroid_scores_i8", 256),
    ("byte_map_range", FLAT_THREADS),
    ("quantize_scores", FLAT_THREADS),
    ("select_topk", SELECT_THREADS),
    ("rank_probes", FLAT_THREADS),
    ("probe_tables", FLAT_THREADS),
    ("mark_candidates", MARK_THREADS),
    ("postings_estimate", 32 * DOC_WARPS),
    ("code_estimate", 32 * DOC_WARPS),
    ("build_lut", FLAT_THREADS),
    ("lut_maxsim", 32 * DOC_WARPS),
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
    centroid_scores_i8: CudaFunction,
    byte_map_range: CudaFunction,
    quantize_scores: CudaFunction,
    select_topk: CudaFunction,
    rank_probes: CudaFunction,
    probe_tables: CudaFunction,
    mark_candidates: CudaFunction,
    postings_estimate: CudaFunction,
    code_estimate: CudaFunction,
    build_lut: CudaFunction,
    lut_maxsim: CudaFunction,
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
        centroid_scores_i8: f("centroid_scores_i8")?,
        byte_map_range: f("byte_map_range")?,
        quantize_scores: f("quantize_scores")?,
        select_topk: f("select_topk")?,
        rank_probes: f("rank_probes")?,
        probe_tables: f("probe_tables")?,
        mark_candidates: f("mark_candidates")?,
        postings_estimate: f("postings_estimate")?,
        code_estimate: f("code_estimate")?,
        build_lut: f("build_lut")?,
        lut_maxsim: f("lut_maxsim")?,
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

    /// Uploads a codec: its centroids `[k, dim]` as stored, the residual quantiser's byte
    /// table (what decoding and the residual tables read), and, when the host scores
    /// centroids in `i8` (`int8` is `Some`), those quantised centroids, so that the device
    /// scores them the same way and gets the same bits.
    pub fn upload_codec(
        self: &Arc<Self>,
        centroids: &[f32],
        residual: &crate::ResidualCodec,
        int8: Option<&crate::Int8Centroids>,
    ) -> Result<DeviceCodec> {
        let dim = residual.dim();
        if dim == 0 || dim > MAX_DIM {
            return Err(GpuError::Unsupported(format!(
                "dimension {dim} (the GPU kernels handle 1 to {MAX_DIM})"
            )));
        }
        let (byte_table, per_byte) = residual.byte_weights();
        let int8_words: Option<Vec<i32>> = int8.map(|c| {
            c.codes()
                .chunks_exact(4)
                .map(|w| i32::from_le_bytes([w[0] as u8, w[1] as u8, w[2] as u8, w[3] as u8]))
                .collect()
        });
        let bytes = 4 * (centroids.len() + byte_table.len()) as u64
            + int8_words.as_ref().map_or(0, |w| 4 * w.len() as u64)
            + int8.map_or(0, |c| 4 * c.scales().len() as u64);
        let reservation = self.reserve(bytes)?;
        let int8 = match (int8, int8_words) {
            (Some(c), Some(words)) => Some(DeviceInt8 {
                codes: self.upload(&words)?,
                scales: self.upload(c.scales())?,
                max_norm: c.max_norm(),
            }),
            _ => None,
        };
        Ok(DeviceCodec {
            dim,
            per_byte: per_byte as u32,
            n_bytes: residual.packed_len() as u32,
            n_centroids: (centroids.len() / dim) as u32,
            centroids: self.upload(centroids)?,
            byte_table: self.upload(byte_table)?,
            int8,
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
        let n_tokens = seg.doc_offsets.last().copied().unwrap_or(0);
        if seg.scales.is_some_and(|s| s.len() as u64 != n_tokens) {
            return Err(GpuError::Unsupported(format!(
                "{} token scales for {n_tokens} tokens",
                seg.scales.map_or(0, <[u16]>::len)
            )));
        }
        let bytes = 8 * seg.doc_offsets.len() as u64
            + seg.codes.len() as u64
            + seg.residuals.len() as u64
            + 2 * seg.scales.map_or(0, <[u16]>::len) as u64
            + 4 * (seg.posting_offsets.len() + seg.posting_docs.len()) as u64;
        let reservation = self.reserve(bytes)?;
        Ok(DeviceSegment {
            n_docs: seg.n_docs,
            n_tokens,
            n_centroids: seg.n_centroids,
            code_width: seg.code_width,
            offsets: self.upload(seg.doc_offsets)?,
            codes: self.upload(seg.codes)?,
            residuals: self.upload(seg.residuals)?,
            scales: seg.scales.map(|s| self.upload(s)).transpose()?,
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
        let table_bytes = 4 * (tomb.len() as u64) + 48 * segments.len() as u64 + 16;
        let reservation = self.reserve(table_bytes)?;
        let addrs = |f: &dyn Fn(&DeviceSegment) -> u64| -> Vec<u64> {
            segments.iter().map(|s| f(s)).collect()
        };
        let seg_offsets = self.upload(&addrs(&|s| self.ptr(&s.offsets)))?;
        let seg_codes = self.upload(&addrs(&|s| self.ptr(&s.codes)))?;
        let seg_resid = self.upload(&addrs(&|s| self.ptr(&s.residuals)))?;
        // 0 (no scales: tokens count unscaled) is the kernels' "absent".
        let seg_scales = self.upload(&addrs(&|s| s.scales.as_ref().map_or(0, |x| self.ptr(x))))?;
        let seg_post_off = self.upload(&addrs(&|s| self.ptr(&s.post_off)))?;
        let seg_post_docs = self.upload(&addrs(&|s| self.ptr(&s.post_docs)))?;
        let widths: Vec<u32> = segments.iter().map(|s| s.code_width).collect();
        let ncent: Vec<u32> = segments.iter().map(|s| s.n_centroids).collect();
        Ok(DeviceIndex {
            gpu: self.clone(),
            n_docs: n,
            words,
            avg_tokens: tokens as f64 / f64::from(n.max(1)),
            base_host: base.clone(),
            seg_base: self.upload(&base)?,
            seg_offsets,
            seg_codes,
            seg_resid,
            seg_scales,
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
    /// Dimensions per packed residual byte (8 / nbits).
    per_byte: u32,
    /// Packed residual bytes per token.
    n_bytes: u32,
    n_centroids: u32,
    centroids: CudaSlice<f32>,
    /// `ResidualCodec::byte_weights`: `[n_bytes, 256, per_byte]`.
    byte_table: CudaSlice<f32>,
    /// The host's `i8` centroids, when it scores centroids that way.
    int8: Option<DeviceInt8>,
    _reservation: Reservation,
}

/// `Int8Centroids` on the device: codes as 4-byte words `[k, dim4 / 4]` and scales.
struct DeviceInt8 {
    codes: CudaSlice<i32>,
    scales: CudaSlice<f32>,
    max_norm: f32,
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
    /// The TOKEN_SCALES section (f16 bits, one per token), absent in segments written
    /// before it existed.
    pub scales: Option<&'a [u16]>,
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
    scales: Option<CudaSlice<u16>>,
    post_off: CudaSlice<u32>,
    post_docs: CudaSlice<u32>,
    _reservation: Reservation,
}

/// A searchable snapshot on the device: codec, segments, segment table and tombstones.
pub struct DeviceIndex {
    gpu: Arc<Gpu>,
    n_docs: u32,
    words: u32,
    /// Mean tokens per document (deleted ones included), for the traffic model.
    avg_tokens: f64,
    base_host: Vec<u32>,
    seg_base: CudaSlice<u32>,
    seg_offsets: CudaSlice<u64>,
    seg_codes: CudaSlice<u64>,
    seg_resid: CudaSlice<u64>,
    seg_scales: CudaSlice<u64>,
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

#[cfg(test)]
mod transcribed;
