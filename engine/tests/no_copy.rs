//! Evidence that the append path does not copy record bytes: with a counting
//! global allocator, appending 64 KiB batches allocates under 2 KiB per
//! flush round (task, io_uring op state, small vectors), never the batch's size.
//! A follower's direct appends copy once, into a lent staging buffer (ADR
//! 0017), and allocate no more than that per round.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicU64, Ordering},
};

use bytes::BytesMut;
use sluice_engine::{Durability, FlushPolicy, LogConfig};

struct Counting;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[compio::test]
async fn appending_allocates_far_less_than_the_record_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for flush in [FlushPolicy::Never, FlushPolicy::Always] {
        let cfg = LogConfig {
            flush,
            ..LogConfig::default()
        };
        let log = common::open(&dir.path().join(format!("{flush:?}")), cfg).await;
        let template = common::batch(64, 1000, 1);
        let batch_len = template.len() as u64;
        // Warm up: first appends grow queues and open op slots.
        for _ in 0..10 {
            log.append_wait(template.clone(), 0, Durability::Written).await.unwrap();
        }
        let bufs: Vec<BytesMut> = (0..200).map(|_| template.clone()).collect();
        let before = ALLOCATED.load(Ordering::Relaxed);
        for b in bufs {
            log.append_wait(b, 0, log.default_durability()).await.unwrap();
        }
        let per_append = (ALLOCATED.load(Ordering::Relaxed) - before) / 200;
        eprintln!("{flush:?}: {per_append} bytes allocated per {batch_len}-byte append");
        // Each sequential append is its own flush round here: the flush task,
        // the writev/fdatasync op state and small vectors. A copy of the
        // batch would add at least its 64 KiB.
        assert!(
            per_append < 4096,
            "{per_append} bytes allocated per append of {batch_len}: record bytes copied?"
        );
    }
    direct_follower_appends_reuse_their_staging_buffer().await;
}

/// A follower's direct appends (ADR 0017) copy each batch once, into a
/// staging buffer that is lent and given back, never allocated per write.
/// Called from the test above: the allocator's count is process-wide, so
/// the two must not run at once.
async fn direct_follower_appends_reuse_their_staging_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        direct_write_min_bytes: 0,
        ..LogConfig::default()
    };
    let log = common::open(dir.path(), cfg).await;
    log.set_direct_writes(true);
    assert!(log.direct_writes());
    let template = common::batch(64, 1000, 1);
    let batch_len = template.len() as u64;
    let mut next = 0i64;
    let mut batches = Vec::new();
    for _ in 0..210 {
        let mut b = template.clone();
        sluice_engine::batch::assign(&mut b, next, 0);
        next += 64;
        batches.push(b.freeze());
    }
    let mut batches = batches.into_iter();
    for b in batches.by_ref().take(10) {
        let info = log.append_replica(b).unwrap();
        log.wait(info.last_offset + 1, Durability::Written).await.unwrap();
    }
    let before = ALLOCATED.load(Ordering::Relaxed);
    for b in batches {
        let info = log.append_replica(b).unwrap();
        log.wait(info.last_offset + 1, Durability::Written).await.unwrap();
    }
    let per_append = (ALLOCATED.load(Ordering::Relaxed) - before) / 200;
    eprintln!("direct: {per_append} bytes allocated per {batch_len}-byte append");
    assert!(
        per_append < 4096,
        "{per_append} bytes allocated per direct append of {batch_len}: a staging buffer per write?"
    );
}
