//! Appending: batches queued for the next group-commit round, offsets
//! assigned, and the waits for a batch to be written or synced.

use super::*;

impl Log {
    /// Validates `batch`, assigns its offsets and queues it for the next
    /// flush round. Returns at once; [`Log::wait`] (or [`Log::append_wait`])
    /// completes when the batch is written or synced. The batch's bytes are
    /// not copied: they are rewritten in place and written from this buffer.
    ///
    /// `leader_epoch` is stamped into the batch; it may not be below the
    /// newest epoch in the log ([`LogError::StaleEpoch`]). The first batch
    /// of a new epoch writes the epoch file first.
    pub fn append(&self, mut batch: BytesMut, leader_epoch: i32) -> Result<AppendInfo> {
        let mut st = self.shared.state.borrow_mut();
        st.check_writable()?;
        let info = batch::validate(&batch, st.config.max_batch_bytes as usize)?;
        let base_offset = st.next_offset;
        // Stamped before `queue` checks the epoch: a refused batch is not
        // written, stamped or not.
        batch::assign(&mut batch, base_offset, leader_epoch);
        self.queue(&mut st, batch.freeze(), &info, base_offset, leader_epoch)
    }

    /// A follower's append: the batch keeps the offsets and leader epoch
    /// the leader gave it. It must start at the log's next offset, pass its
    /// CRC check, and not carry an epoch below the log's newest; a cleaned
    /// batch of a compacted log may hold fewer records than it spans. The bytes
    /// are written as they are, without a copy.
    pub fn append_replica(&self, batch: Bytes) -> Result<AppendInfo> {
        let mut st = self.shared.state.borrow_mut();
        st.check_writable()?;
        let info = batch::validate_stored(&batch, usize::MAX)?;
        let header = batch::BatchHeader::parse(&batch)?;
        let (base_offset, epoch) = (header.base_offset(), header.partition_leader_epoch());
        if base_offset != st.next_offset {
            return Err(LogError::NotContiguous {
                expected: st.next_offset,
                got: base_offset,
            });
        }
        self.queue(&mut st, batch, &info, base_offset, epoch)
    }

    /// Queues a validated batch that carries its offsets and epoch.
    pub(super) fn queue(
        &self,
        st: &mut State,
        batch: Bytes,
        info: &batch::BatchInfo,
        base_offset: i64,
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        if !st.epochs.accepts(leader_epoch) {
            return Err(LogError::StaleEpoch {
                epoch: leader_epoch,
                latest: st.epochs.latest(),
            });
        }
        if st.epochs.note(leader_epoch, base_offset)
            && let Err(e) = st.epochs.save(&self.shared.dir)
        {
            st.epochs.truncate_end(base_offset);
            return Err(LogError::io(
                "write",
                self.shared.dir.join(crate::epochs::LEADER_EPOCH_FILE),
                e,
            ));
        }
        let now = (self.shared.clock)();
        let last_offset = base_offset + i64::from(info.last_offset_delta);
        let len = info.len as u64;
        let (segment_bytes, segment_ms) = (st.config.segment_bytes, st.config.segment_ms);
        let p = &mut st.projection;
        let too_big = p.size + len > segment_bytes;
        let too_old = p.first_append_ms.is_some_and(|t| now.saturating_sub(t) >= segment_ms);
        let rel_overflow = last_offset - p.base_offset > i64::from(i32::MAX);
        let roll_before = p.size > 0 && (too_big || too_old || rel_overflow);
        if roll_before {
            *p = Projection {
                base_offset,
                size: 0,
                first_append_ms: None,
            };
        }
        p.first_append_ms.get_or_insert(now);
        p.size += len;
        st.pending.push(Pending {
            data: batch,
            len,
            base_offset,
            last_offset,
            max_timestamp: info.max_timestamp,
            leader_epoch,
            roll_before,
        });
        st.next_offset = last_offset + 1;
        st.check_offsets();
        self.shared.io.count_appended(1);
        // A caller that never waits (acks=0) still gets its batch written.
        self.kick(st);
        Ok(AppendInfo {
            base_offset,
            last_offset,
            max_timestamp: info.max_timestamp,
        })
    }

    /// Appends and waits for the given durability.
    pub async fn append_wait(&self, batch: BytesMut, leader_epoch: i32, durability: Durability) -> Result<AppendInfo> {
        let info = self.append(batch, leader_epoch)?;
        self.wait(info.last_offset + 1, durability).await?;
        Ok(info)
    }

    /// The durability the config gives an append by itself: `Synced` under
    /// `FlushPolicy::Always`, else `Written`.
    pub fn default_durability(&self) -> Durability {
        match self.shared.state.borrow().config.flush {
            FlushPolicy::Always => Durability::Synced,
            _ => Durability::Written,
        }
    }

    /// Waits until every offset below `end_offset` is written (or synced),
    /// driving a flush round if none is running.
    pub async fn wait(&self, end_offset: i64, durability: Durability) -> Result<()> {
        loop {
            let listen = self.shared.notify.listen();
            {
                let mut st = self.shared.state.borrow_mut();
                if let Some(cause) = &st.poisoned {
                    return Err(LogError::Poisoned { cause: cause.clone() });
                }
                let reached = match durability {
                    Durability::Written => st.log_end_offset >= end_offset,
                    Durability::Synced => st.durable_offset >= end_offset,
                };
                if reached {
                    return Ok(());
                }
                if end_offset > st.next_offset || st.files_closed {
                    return Err(LogError::Closed);
                }
                if durability == Durability::Synced {
                    st.durable_wanted = st.durable_wanted.max(end_offset);
                }
                self.kick(&mut st);
            }
            listen.await;
        }
    }

    /// Asks for every offset below `end_offset` to become durable, without
    /// waiting: the next flush round syncs. A caller that appends to several
    /// logs and waits on them one after another calls this right after each
    /// append, so every log's first round carries its fdatasync instead of
    /// the syncs running one log after another.
    pub fn want_synced(&self, end_offset: i64) {
        let mut st = self.shared.state.borrow_mut();
        if st.poisoned.is_some() || end_offset > st.next_offset {
            return;
        }
        st.durable_wanted = st.durable_wanted.max(end_offset);
        self.kick(&mut st);
    }

    /// Completes at the next flush round, roll, poisoning, high-watermark
    /// move or role change, counting from when it is called: a waiter
    /// creates it, checks the state, then awaits it, and cannot miss a
    /// change in between.
    pub fn listen(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.shared.notify.listen()
    }

    pub(super) fn kick(&self, st: &mut State) {
        if st.flushing || st.releasing {
            return;
        }
        let now = (self.shared.clock)();
        if st.pending.is_empty() && !st.sync_wanted(now) {
            return;
        }
        st.flushing = true;
        let shared = Rc::clone(&self.shared);
        compio::runtime::spawn(async move {
            loop {
                match shared.flush_round().await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(cause) => {
                        tracing::error!(dir = %shared.dir.display(), %cause, "log poisoned");
                        let mut st = shared.state.borrow_mut();
                        st.poisoned = Some(cause);
                        st.poisoned_reopenable = shared.exhausted.get();
                        st.pending.clear();
                        break;
                    }
                }
            }
            shared.state.borrow_mut().flushing = false;
            shared.notify.notify_all();
        })
        .detach();
    }
}
