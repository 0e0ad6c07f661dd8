//! Intra-query parallelism ([`crate::SearchParams::threads`]): the per-document stages of
//! one search (the centroid-code estimate, the exact stage over compressed vectors and the
//! refine stage) split their documents into one contiguous chunk per worker and keep the
//! results in order, so a search with any number of threads returns exactly the hits of the
//! one-thread search (each document's score is computed by the same code either way).
//!
//! Workers come from a rayon pool per thread count, built on first use and kept for the
//! process: building a pool per query would cost more than the stages it splits. The
//! centroid stage and the postings walk stay on the calling thread (see BENCHMARKS.md,
//! "Search at scale", for what each stage costs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

/// Chunks smaller than this are not worth handing to another thread (about a few µs of
/// work per document at the exact and refine stages; the estimate costs far less, but its
/// chunks are thousands of documents).
const MIN_CHUNK: usize = 16;

/// The workers one search may use.
pub(crate) struct Workers {
    pool: Option<Arc<rayon::ThreadPool>>,
    threads: usize,
}

impl Workers {
    /// `threads` workers: 1 runs everything on the calling thread, 0 uses one per core.
    pub(crate) fn new(threads: usize) -> Self {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Workers {
            pool: (threads > 1).then(|| pool(threads)).flatten(),
            threads,
        }
    }

    /// `f` over `items` in up to one chunk per worker, results concatenated in order.
    pub(crate) fn map_chunks<T, R, F>(&self, items: &[T], f: F) -> Vec<R>
    where
        T: Sync,
        R: Send,
        F: Fn(&[T]) -> Vec<R> + Sync,
    {
        let chunk = items.len().div_ceil(self.threads.max(1)).max(MIN_CHUNK);
        match &self.pool {
            Some(pool) if items.len() > chunk => pool.install(|| {
                items
                    .par_chunks(chunk)
                    .map(&f)
                    .collect::<Vec<Vec<R>>>()
                    .into_iter()
                    .flatten()
                    .collect()
            }),
            _ => f(items),
        }
    }
}

/// The process's pool of `threads` workers; `None` (run on the calling thread) if the
/// system refuses to start threads.
fn pool(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Some(p.clone());
    }
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("tessera-search-{i}"))
        .build();
    match built {
        Ok(p) => {
            let p = Arc::new(p);
            pools.insert(threads, p.clone());
            Some(p)
        }
        Err(e) => {
            eprintln!(
                "tessera: search threads: could not start {threads} workers ({e}); searching on one"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_back_in_order_for_every_thread_count() {
        let items: Vec<u32> = (0..1000).collect();
        for threads in [0, 1, 2, 3, 7, 64] {
            let w = Workers::new(threads);
            let got = w.map_chunks(&items, |c| c.iter().map(|x| x * 2).collect());
            let want: Vec<u32> = items.iter().map(|x| x * 2).collect();
            assert_eq!(got, want, "threads {threads}");
            assert!(w.map_chunks(&[] as &[u32], |c| c.to_vec()).is_empty());
        }
    }
}
