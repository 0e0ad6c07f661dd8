//! Test-only fault injection (cargo feature `failpoints`): named points in the commit path
//! that a test can make fail, to prove that a failure at each step leaves the database
//! consistent. Without the feature, [`check`] is an empty inline function.
//!
//! A point is armed for the paths matching a pattern: its parts between `*`s, in order
//! (tests put their own temporary directory first, so tests running in parallel do not trip
//! each other's points).

/// Creating a data file's temporary file.
pub const CREATE: &str = "create";
/// Writing a data file's bytes (where a full disk fails).
pub const WRITE: &str = "write";
/// Syncing a data file.
pub const FSYNC: &str = "fsync";
/// Syncing a directory.
pub const FSYNC_DIR: &str = "fsync-dir";
/// The catalog's synced write batch.
pub const CATALOG_COMMIT: &str = "catalog-commit";
/// Renaming a committed data file from its temporary name.
pub const RENAME: &str = "rename";

#[cfg(feature = "failpoints")]
mod armed {
    use std::path::Path;
    use std::sync::Mutex;

    struct Armed {
        point: &'static str,
        pattern: String,
        kind: std::io::ErrorKind,
    }

    static ARMED: Mutex<Vec<Armed>> = Mutex::new(Vec::new());
    static FIRED: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn matches(path: &str, pattern: &str) -> bool {
        let mut rest = path;
        for part in pattern.split('*') {
            match rest.find(part) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        true
    }

    /// Makes `point` fail with `kind` for every path matching `pattern`, until disarmed.
    pub fn arm(point: &'static str, pattern: &str, kind: std::io::ErrorKind) {
        lock(&ARMED).push(Armed {
            point,
            pattern: pattern.to_owned(),
            kind,
        });
    }

    /// Disarms every point armed for `pattern`.
    pub fn disarm(pattern: &str) {
        lock(&ARMED).retain(|a| a.pattern != pattern);
    }

    /// How often `point` has failed in this process.
    pub fn fired(point: &str) -> u64 {
        lock(&FIRED)
            .iter()
            .find(|(p, _)| *p == point)
            .map_or(0, |(_, n)| *n)
    }

    /// Fails if `point` is armed for `path`.
    pub fn check(point: &'static str, path: &Path) -> std::io::Result<()> {
        let p = path.to_string_lossy();
        let kind = lock(&ARMED)
            .iter()
            .find(|a| a.point == point && matches(&p, &a.pattern))
            .map(|a| a.kind);
        let Some(kind) = kind else {
            return Ok(());
        };
        let mut fired = lock(&FIRED);
        match fired.iter_mut().find(|(q, _)| *q == point) {
            Some((_, n)) => *n += 1,
            None => fired.push((point, 1)),
        }
        Err(std::io::Error::new(
            kind,
            format!("injected failure at {point} ({})", path.display()),
        ))
    }
}

#[cfg(feature = "failpoints")]
pub use armed::{arm, check, disarm, fired};

/// Never fails: fault injection is compiled in only with the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn check(_point: &'static str, _path: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}
