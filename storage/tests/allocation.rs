//! Decoders of catalog records allocate with the bytes they are given, not with the lengths
//! those bytes declare: measured with a counting allocator around each decode.

// A global allocator is unsafe to implement; this one only counts and forwards to the
// system allocator, in this test binary alone.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use tessera_storage::ExternalId;
use tessera_storage::records::{decode, text_key, tombstones_key};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes live at once above what was live before, while `f` runs.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - base
}

/// One test (this binary's only one), so no other test allocates while it measures.
#[test]
fn records_declaring_huge_lengths_in_few_bytes_are_refused_without_allocating_them() {
    let catalog = Path::new("catalog");
    // A text record declaring the 64 MiB limit, holding a frame of 3 bytes.
    let id = ExternalId::from(1u64);
    let mut text = vec![1u8];
    text.extend_from_slice(&(64u32 << 20).to_le_bytes());
    text.extend_from_slice(&zstd::bulk::compress(b"abc", 3).expect("compress"));
    let peak = peak_during(|| {
        let err = decode(catalog, &text_key(0, &id), &text).expect_err("refused");
        assert!(err.to_string().contains("decompressed 3 bytes"), "{err}");
    });
    assert!(
        peak < 1 << 20,
        "decoding a 3-byte text allocated {peak} bytes"
    );

    // A tombstone bitmap declaring 65,536 containers in 8 bytes (roaring would allocate
    // 256 KiB of descriptions before reading them).
    let mut bitmap = 12346u32.to_le_bytes().to_vec();
    bitmap.extend_from_slice(&65_536u32.to_le_bytes());
    let peak = peak_during(|| {
        let err = decode(catalog, &tombstones_key(0, 1), &bitmap).expect_err("refused");
        assert!(err.to_string().contains("the value has 8"), "{err}");
    });
    assert!(
        peak < 64 << 10,
        "decoding 8 bytes of tombstones allocated {peak} bytes"
    );
}
