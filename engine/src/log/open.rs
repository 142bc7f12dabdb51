//! Opening a log: the segments found, recovery of the active one, the
//! checkpoints and the epoch history read back (`docs/storage.md`).

use super::*;

impl Log {
    /// Opens (or creates) the log in `dir`, recovering its segments; see the
    /// recovery table in `segment.rs` and `docs/storage.md`.
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig, env: Env) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let clock = env.clock.unwrap_or_else(system_clock);
        let files = env.open_files.unwrap_or_default();

        let bases = scan_segments(&dir)?;
        let checkpoint = read_checkpoint(&dir.join(LOG_START_OFFSET_FILE))?;
        let mut segments = recover_segments(&dir, bases, checkpoint, &config, &files).await?;
        let projection = open_active(&mut segments, &clock).await?;
        let log_end_offset = log_end(&segments);
        let first_base = segments.front().map_or(0, |s| s.base_offset);
        let log_start_offset = checkpoint.unwrap_or(first_base).max(first_base).min(log_end_offset);
        let epochs = load_epochs(&dir, &segments, log_start_offset, log_end_offset)?;
        // No checkpoint: a log that never replicated, whose high watermark
        // is its end; replication lowers the limit before anything is read.
        let hw_checkpointed = read_high_watermark(&dir.join(HIGH_WATERMARK_FILE), log_start_offset)?;
        let high_watermark = hw_checkpointed
            .unwrap_or(log_end_offset)
            .clamp(log_start_offset, log_end_offset);
        let now = clock();
        let state = State {
            config,
            segments,
            log_start_offset,
            next_offset: log_end_offset,
            log_end_offset,
            durable_offset: log_end_offset,
            high_watermark,
            hw_limit: i64::MAX,
            hw_checkpointed,
            epochs,
            pending: Vec::new(),
            spare_pending: Vec::new(),
            projection,
            flushing: false,
            durable_wanted: log_end_offset,
            last_sync_ms: now,
            written_since_sync: 0,
            writing_back: false,
            poisoned: None,
            poisoned_reopenable: false,
            closed: false,
            files_closed: false,
            releasing: false,
        };
        state.check_offsets();
        let direct_buffers = env.direct_buffers.clone().unwrap_or_default();
        Ok(Self {
            shared: Rc::new(Shared {
                dir,
                state: RefCell::new(state),
                exhausted: Cell::new(false),
                files,
                notify: Notify::default(),
                io: Io {
                    stats: Default::default(),
                    faults: env.faults,
                    histograms: env.histograms,
                },
                clock,
                direct: RefCell::new(crate::direct::Direct::new(direct_buffers)),
            }),
        })
    }
}

/// The base offsets of the directory's segment files; index files whose
/// segment is gone are removed (recovery row `orphan_index`).
fn scan_segments(dir: &Path) -> Result<std::collections::BTreeSet<i64>> {
    let mut bases = std::collections::BTreeSet::new();
    let mut others = Vec::new();
    let mut swaps = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_segment_name(name) {
            Some((base, "log")) => {
                bases.insert(base);
            }
            Some((base, "index" | "timeindex")) => others.push((base, entry.path())),
            // interrupted_clean: the segment it was made from is whole.
            Some((_, CLEANED_SUFFIX)) => {
                let path = entry.path();
                tracing::warn!(path = %path.display(), "removing an unfinished cleaned segment");
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
            Some((base, SWAP_SUFFIX)) => swaps.push((base, entry.path())),
            _ => {}
        }
    }
    // interrupted_swap: the cleaned segment was synced before it was named
    // `.swap`; finish putting it in place. Its indexes go (a crash may have
    // removed one of them already) and are rebuilt by `missing_index`.
    for (base, swap) in swaps {
        let paths = crate::segment::SegmentPaths::new(dir, base);
        for p in [&paths.index, &paths.time_index] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("remove", p, e)),
            }
        }
        tracing::warn!(path = %swap.display(), "finishing the swap of a cleaned segment");
        fs::rename(&swap, &paths.log).map_err(io_err("rename", &swap))?;
        crate::durable_file::sync_parent(&paths.log).map_err(io_err("sync", dir))?;
        bases.insert(base);
    }
    // orphan_index: index files whose log is gone.
    for (base, path) in others {
        if !bases.contains(&base) {
            tracing::warn!(path = %path.display(), "removing index without a segment");
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
    }

    Ok(bases)
}

/// The log start offset a DeleteRecords checkpointed, if any.
fn read_checkpoint(checkpoint_path: &Path) -> Result<Option<i64>> {
    Ok(match fs::read_to_string(checkpoint_path) {
        Ok(s) => s.trim().parse::<i64>().ok().filter(|&o| o >= 0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(LogError::io("read", checkpoint_path, e)),
    })
}

/// Recovers every segment in order (a first empty one when there are
/// none; recovery row `empty_segment` for a roll that crashed); the
/// segments must follow each other.
async fn recover_segments(
    dir: &Path,
    bases: std::collections::BTreeSet<i64>,
    checkpoint: Option<i64>,
    config: &LogConfig,
    files: &Rc<OpenFiles>,
) -> Result<VecDeque<Segment>> {
    let mut bases: Vec<i64> = bases.into_iter().collect();
    if bases.is_empty() {
        let base = checkpoint.unwrap_or(0);
        let paths = SegmentPaths::new(dir, base);
        fs::File::create(&paths.log).map_err(io_err("create", &paths.log))?;
        sync_dir(dir).await.map_err(io_err("sync", dir))?;
        bases.push(base);
    }
    // empty_segment: a roll that created the newest file and crashed
    // before writing to it.
    while let [.., _, newest] = bases[..] {
        let paths = SegmentPaths::new(dir, newest);
        let len = fs::metadata(&paths.log).map_err(io_err("stat", &paths.log))?.len();
        if len > 0 {
            break;
        }
        tracing::warn!(path = %paths.log.display(), "removing empty newest segment left by a roll");
        segment::remove_files(&paths)?;
        bases.pop();
    }

    let mut segments: VecDeque<Segment> = VecDeque::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let newest = i + 1 == bases.len();
        let seg = Segment::recover(dir, base, config, newest, files)?;
        if let Some(prev) = segments.back()
            && prev.next_offset > base
        {
            return Err(LogError::Corrupt {
                path: seg.paths.log.clone(),
                position: 0,
                reason: format!(
                    "segment starts at {base} but the previous one runs to {}",
                    prev.next_offset
                ),
            });
        }
        segments.push_back(seg);
    }

    Ok(segments)
}

/// Syncs what recovery kept of the active segment (so the durable offset
/// is true) and notes when it was first appended to; the projection of
/// where the next append lands.
async fn open_active(segments: &mut VecDeque<Segment>, clock: &Clock) -> Result<Projection> {
    let active = segments
        .back_mut()
        .unwrap_or_else(|| unreachable!("at least one segment was opened"));
    let log_file = open_rw(&active.paths.log, false)
        .await
        .map_err(io_err("open", &active.paths.log))?;
    // What recovery kept is made durable once, so durable_offset is true.
    log_file.sync_data().await.map_err(io_err("sync", &active.paths.log))?;
    // The writer opens on the first write: an idle log holds no file.
    drop(log_file);
    if active.size > 0 {
        let created = fs::metadata(&active.paths.log)
            .and_then(|m| m.created().or_else(|_| m.modified()))
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        active.first_append_ms = Some(created.unwrap_or_else(|| clock()));
    }
    Ok(Projection {
        base_offset: active.base_offset,
        size: active.size,
        first_append_ms: active.first_append_ms,
    })
}

/// The log end: where the newest segment ends.
fn log_end(segments: &VecDeque<Segment>) -> i64 {
    segments.back().map_or(0, |s| s.next_offset)
}

/// The checkpointed high watermark, if any (an unreadable one counts as
/// the log start).
fn read_high_watermark(hw_path: &Path, log_start_offset: i64) -> Result<Option<i64>> {
    Ok(match fs::read_to_string(hw_path) {
        Ok(s) => Some(s.trim().parse::<i64>().unwrap_or(log_start_offset)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(LogError::io("read", hw_path, e)),
    })
}
