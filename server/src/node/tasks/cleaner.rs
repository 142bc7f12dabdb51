//! The log cleaner of compacted topics (`cleanup.policy` with `compact`),
//! one per shard in its own task: every `log.cleaner.backoff.ms` it looks
//! at the compacted logs the shard holds (as leader or follower: replicas
//! clean independently) and cleans, one at a time, those whose share of
//! bytes not yet cleaned reached `min.cleanable.dirty.ratio`, or whose
//! oldest uncleaned record passed `max.compaction.lag.ms`. A pass yields to
//! the shard's other work after each 256 KiB it reads or writes and is held to
//! `log.cleaner.io.max.bytes.per.second` (`docs/storage.md`, "Compaction").
//! `__consumer_offsets` and `__transaction_state` keep their own rewrite.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sluice_engine::CleanRules;
use sluice_metadata::topics::Compaction;

use crate::base::clock::now_ms;
use crate::meta;
use crate::node::Shard;
use crate::partition::Partition;

/// Where each log is clean up to, as this shard's passes left it, read
/// from the log's [`CHECKPOINT`] on the first visit; a log without one (a
/// new replica) counts as dirty from its start.
type Cleaned = HashMap<(Arc<str>, i32), i64>;

/// The file in a partition's directory that keeps where its last pass
/// left the log clean: a hint (unsynced; a lost or torn one costs one pass
/// that maps the whole log).
pub const CHECKPOINT: &str = "cleaner-offset-checkpoint";

fn read_checkpoint(p: &Partition) -> i64 {
    std::fs::read_to_string(p.log.dir().join(CHECKPOINT))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(i64::MIN)
}

/// Writes the hint as `durable_file::Replace::Hint` would (a temporary
/// file renamed over it, nothing synced), through io_uring: it follows
/// every pass, and a blocking create and rename would hold the shard for a
/// journal wait.
async fn write_checkpoint(p: &Partition, offset: i64) {
    let path = p.log.dir().join(CHECKPOINT);
    let tmp = sluice_engine::durable_file::temporary_path(&path);
    let written = match compio::fs::write(&tmp, offset.to_string().into_bytes()).await.0 {
        Ok(()) => compio::fs::rename(&tmp, &path).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "writing the cleaner's checkpoint");
    }
}

/// A compacted partition's settings, rolled segments and where it is
/// clean up to, when a pass over it is due.
async fn due(shard: &Rc<Shard>, p: &Rc<Partition>, cleaned: &mut Cleaned) -> Option<(Compaction, Rolled, i64)> {
    if meta::is_internal(&p.topic) || p.log.is_poisoned() {
        return None;
    }
    let topic = shard.meta().topic(&p.topic).cloned()?;
    let c = meta::compaction(shard.config(), &topic);
    if !c.cleanup.compact {
        return None;
    }
    let rolled = p.log.rolled_segments();
    let key = (p.topic.clone(), p.index);
    let mut clean_to = *cleaned.entry(key.clone()).or_insert_with(|| read_checkpoint(p));
    if let Some(cut) = p.cleaning.truncated_to.take()
        && cut < clean_to
    {
        // What a follower wrote again from `cut` was never cleaned here.
        clean_to = cut;
        cleaned.insert(key, cut);
        write_checkpoint(p, cut).await;
    }
    let (dirty, total) = dirty_bytes(&rolled, clean_to);
    p.cleaning.dirty_ratio.set(Some(ratio(dirty, total)));
    let overdue = rolled
        .iter()
        .find(|s| s.0 >= clean_to)
        .is_some_and(|s| s.3 >= 0 && now_ms().saturating_sub(s.3) > c.max_lag_ms);
    if dirty == 0 || (!overdue && (dirty as f64) < c.min_cleanable_ratio * total as f64) {
        return None;
    }
    Some((c, rolled, clean_to))
}

/// A log's rolled segments: base, next offset, size, newest timestamp.
type Rolled = Vec<(i64, i64, u64, i64)>;

/// Bytes of the rolled segments (base, next, size, newest timestamp) from
/// `clean_to` on, and of all of them.
fn dirty_bytes(rolled: &[(i64, i64, u64, i64)], clean_to: i64) -> (u64, u64) {
    let total = rolled.iter().map(|s| s.2).sum();
    let dirty = rolled.iter().filter(|s| s.0 >= clean_to).map(|s| s.2).sum();
    (dirty, total)
}

fn ratio(dirty: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { dirty as f64 / total as f64 }
}

pub async fn run(shard: Rc<Shard>) {
    let config = shard.config().clone();
    if !config.cleaner.enable {
        return;
    }
    let mut cleaned = Cleaned::new();
    while !shard.stopping.is_set() {
        compio::runtime::time::sleep(Duration::from_millis(config.cleaner.backoff_ms)).await;
        for p in shard.owned_partitions() {
            if shard.stopping.is_set() {
                return;
            }
            clean_if_due(&shard, &p, &mut cleaned).await;
        }
        let owned: Vec<_> = shard
            .owned_partitions()
            .iter()
            .map(|p| (p.topic.clone(), p.index))
            .collect();
        cleaned.retain(|k, _| owned.contains(k));
    }
}

/// Cleans `p` if it is compacted and due.
async fn clean_if_due(shard: &Rc<Shard>, p: &Rc<Partition>, cleaned: &mut Cleaned) {
    let config = shard.config();
    let Some((c, rolled, clean_to)) = due(shard, p, cleaned).await else {
        return;
    };
    let key = (p.topic.clone(), p.index);
    let now = now_ms();
    // Not past an open transaction, nor into records younger than
    // min.compaction.lag.ms (the engine stops at the high watermark).
    let mut upto = p.producers.borrow().first_unstable_offset().unwrap_or(i64::MAX);
    if c.min_lag_ms > 0
        && let Some(young) = rolled
            .iter()
            .find(|s| s.3 < 0 || now.saturating_sub(s.3) < c.min_lag_ms)
    {
        upto = upto.min(young.0);
    }
    let aborted = |pid: i64, offset: i64| p.producers.borrow().was_aborted(pid, offset);
    let producer_last = |pid: i64, last: i64| p.producers.borrow().is_last_batch(pid, last);
    let rules = CleanRules {
        upto,
        tombstones_before_ms: now.saturating_sub(c.delete_retention_ms),
        dirty_from: clean_to,
        map_bytes: usize::try_from(config.cleaner.dedupe_buffer_bytes).unwrap_or(usize::MAX),
        aborted: &aborted,
        producer_last: &producer_last,
        codecs: Some(&crate::base::codecs::KafkaCodecs),
    };
    let rate = config.cleaner.io_max_bytes_per_second;
    let pace = |bytes: u64| -> Pin<Box<dyn Future<Output = ()>>> {
        // At least a timer's turn: the shard serves what came meanwhile.
        let wait = Duration::try_from_secs_f64(bytes as f64 / rate).unwrap_or(Duration::ZERO);
        Box::pin(compio::runtime::time::sleep(wait.max(Duration::from_micros(1))))
    };
    let started = std::time::Instant::now();
    match p.log.clean(&rules, &pace).await {
        Ok(stats) => {
            cleaned.insert(key, stats.cleaned_to);
            sluice_engine::crash::crash_point("clean.pass_done");
            write_checkpoint(p, stats.cleaned_to).await;
            let (dirty, total) = dirty_bytes(&p.log.rolled_segments(), stats.cleaned_to);
            p.cleaning.dirty_ratio.set(Some(ratio(dirty, total)));
            p.cleaning.last_clean_ms.set(crate::base::clock::now_ms_u64());
            shard.metrics.cleaned(&stats, started.elapsed());
            tracing::info!(
                topic = %p.topic,
                partition = p.index,
                segments = stats.segments,
                read = stats.bytes_read,
                written = stats.bytes_written,
                removed = stats.records_removed,
                cleaned_to = stats.cleaned_to,
                ms = started.elapsed().as_millis() as u64,
                "cleaned a compacted log"
            );
        }
        Err(e) => tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "cleaning a compacted log"),
    }
}
