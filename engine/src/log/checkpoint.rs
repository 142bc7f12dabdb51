//! Settings and checkpoints: the config, direct writes, the high
//! watermark and its file, the leader-epoch history.

use super::*;

impl Log {
    /// Changes the config (AlterConfigs). Takes effect from the next append,
    /// roll or retention pass.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.shared.state.borrow_mut().config = config;
        Ok(())
    }

    pub fn config(&self) -> LogConfig {
        self.shared.state.borrow().config.clone()
    }

    /// Lets flush rounds of at least [`LogConfig::direct_write_min_bytes`]
    /// go straight to the device, past the page cache (`O_DIRECT`), or
    /// sends every round back through it. A follower's log is read only
    /// once it leads, so its copies into the page cache are wasted work
    /// (ADR 0017). On a filesystem without `O_DIRECT` appends stay buffered.
    pub fn set_direct_writes(&self, on: bool) {
        let mut d = self.shared.direct.borrow_mut();
        if d.on != on {
            d.on = on;
            d.disengage();
        }
    }

    /// Whether large flush rounds may go past the page cache: direct writes
    /// are allowed and the filesystem has not refused `O_DIRECT`.
    pub fn direct_writes(&self) -> bool {
        self.shared.direct.borrow().wanted()
    }

    /// Sets how far the high watermark may go (replication: the lowest
    /// log end of the ISR, a follower's leader's high watermark; `i64::MAX`
    /// to follow the log end). The high watermark becomes
    /// `min(log end, limit)` when that is higher; it never moves back but
    /// for a truncation. Wakes waiters when it moves.
    pub fn set_hw_limit(&self, limit: i64) {
        let mut st = self.shared.state.borrow_mut();
        st.hw_limit = limit;
        let moved = st.advance_high_watermark();
        st.check_offsets();
        drop(st);
        if moved {
            self.shared.notify.notify_all();
        }
    }

    /// Wakes every waiter on this log (a replica's role changed, so waits
    /// for the high watermark must look again).
    pub fn wake_all(&self) {
        self.shared.notify.notify_all();
    }

    /// Writes the high watermark to [`HIGH_WATERMARK_FILE`] when it moved
    /// since the last write. A lower bound after a crash: a restarted
    /// replica starts from it rather than from its log end.
    pub fn checkpoint_high_watermark(&self) -> Result<()> {
        let hw = {
            let st = self.shared.state.borrow();
            if st.hw_checkpointed == Some(st.high_watermark) {
                return Ok(());
            }
            st.high_watermark
        };
        let dir = &self.shared.dir;
        write_number(dir, HIGH_WATERMARK_FILE, hw, false)
            .map_err(io_err("checkpoint", &dir.join(HIGH_WATERMARK_FILE)))?;
        self.shared.state.borrow_mut().hw_checkpointed = Some(hw);
        Ok(())
    }

    /// The newest leader epoch in the log (-1 when empty).
    pub fn latest_epoch(&self) -> i32 {
        self.shared.state.borrow().epochs.latest()
    }

    /// Where the newest epoch's first batch is, if any.
    pub fn latest_epoch_start(&self) -> Option<i64> {
        self.shared.state.borrow().epochs.latest_start()
    }

    /// Where `epoch` ends in this log (OffsetForLeaderEpoch).
    pub fn epoch_end(&self, epoch: i32) -> EpochEnd {
        let st = self.shared.state.borrow();
        st.epochs.end_of(epoch, st.log_end_offset)
    }

    /// The epoch history, oldest first: `(epoch, start offset)`.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.shared.state.borrow().epochs.entries().to_vec()
    }
}
