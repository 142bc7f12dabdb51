//! A shard's periodic work, off every request path, one file per task:
//! the free-space probe and idle files ([`disk`]), expiry and compaction
//! of committed offsets ([`offsets`]), reopening logs a full disk
//! poisoned ([`reopen`]), the ISR lag check ([`isr_lag`]), high-watermark
//! checkpoints ([`checkpoint`]), flush-interval syncs ([`flush`]),
//! retention ([`retention`]) and the transactions past their timeout or
//! expiration ([`transactions`]). One loop per shard runs each when it is
//! due. The log cleaner of compacted topics ([`cleaner`]) has its own loop
//! per shard: a pass may take long, and yields as it goes.

pub mod checkpoint;
pub mod cleaner;
pub mod disk;
pub mod flush;
pub mod isr_lag;
pub mod offsets;
pub mod reopen;
pub mod retention;
pub mod transactions;

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::meta;
use crate::partition::Partition;

use super::Shard;

/// How often the loop wakes.
const TICK: Duration = Duration::from_millis(100);

/// A task's period and when it last ran.
#[derive(Debug)]
struct Every {
    period: Duration,
    last: Instant,
}

impl Every {
    fn new(period: Duration) -> Self {
        Self {
            period,
            last: Instant::now(),
        }
    }

    /// Whether the task is due; if so, its period starts again.
    fn due(&mut self) -> bool {
        let due = self.last.elapsed() >= self.period;
        if due {
            self.last = Instant::now();
        }
        due
    }
}

/// The few partitions each tick must visit, rebuilt when the shard's
/// layout changes: a shard of many idle partitions does not walk them all
/// ten times a second.
#[derive(Debug, Default)]
struct Lists {
    version: Option<u64>,
    timed_flush: Vec<Rc<Partition>>,
    offsets: Vec<Rc<Partition>>,
    txn_state: Vec<Rc<Partition>>,
}

impl Lists {
    fn refresh(&mut self, shard: &Shard) {
        if self.version == Some(shard.layout_version()) {
            return;
        }
        self.version = Some(shard.layout_version());
        let all = shard.owned_partitions();
        self.timed_flush = all
            .iter()
            .filter(|p| matches!(p.log.config().flush, sluice_engine::FlushPolicy::IntervalMs(_)))
            .cloned()
            .collect();
        self.txn_state = all
            .iter()
            .filter(|p| &*p.topic == meta::TRANSACTION_STATE_TOPIC)
            .cloned()
            .collect();
        self.offsets = all.into_iter().filter(|p| &*p.topic == meta::OFFSETS_TOPIC).collect();
    }
}

/// Runs this shard's periodic work until the shard stops.
pub async fn run(shard: Rc<Shard>) {
    let config = shard.config();
    let ms = Duration::from_millis;
    let mut expiry = Every::new(ms(config.groups.offsets_retention_check_interval_ms));
    let mut reopening = Every::new(Duration::from_secs(1));
    let mut lag_check = Every::new(Duration::from_secs(1));
    let mut checkpoints = Every::new(ms(config.replica_hw_checkpoint_interval_ms));
    let mut retention_pass = Every::new(ms(config.log_retention_check_interval_ms));
    let mut txn_timeouts = Every::new(ms(config.transactions.abort_check_interval_ms));
    let mut txn_expiry = Every::new(ms(config.transactions.expire_check_interval_ms));
    let mut lists = Lists::default();
    while !shard.stopping.is_set() {
        compio::runtime::time::sleep(TICK).await;
        disk::tick(&shard);
        if expiry.due() {
            offsets::expire(&shard).await;
        }
        lists.refresh(&shard);
        if reopening.due() {
            reopen::tick(&shard).await;
        }
        if lag_check.due() {
            isr_lag::tick(&shard);
        }
        if checkpoints.due() {
            checkpoint::tick(&shard);
        }
        offsets::compact(&shard, &lists.offsets).await;
        transactions::compact(&shard, &lists.txn_state).await;
        flush::tick(&lists.timed_flush).await;
        if retention_pass.due() {
            retention::tick(&shard);
        }
        if txn_timeouts.due() {
            transactions::abort_timed_out(&shard);
        }
        if txn_expiry.due() {
            transactions::expire(&shard);
        }
    }
}
