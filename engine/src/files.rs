//! Counting the files logs hold open, so their owner can keep them within a
//! budget (closing the files of idle logs with [`crate::Log::release_files`]
//! and letting them reopen on their next read or append).

use std::cell::Cell;
use std::rc::Rc;

/// Files held open by the logs that share it: each segment's reader and the
/// active segment's three writer handles. One per shard, shared by the
/// shard's logs through [`crate::Env::open_files`]; touched only on that
/// thread. Slices handed to readers keep a file open past its count.
#[derive(Debug, Default)]
pub struct OpenFiles {
    count: Cell<usize>,
}

impl OpenFiles {
    pub fn new() -> Rc<Self> {
        Rc::default()
    }

    /// Files open now.
    pub fn get(&self) -> usize {
        self.count.get()
    }
}

/// `n` counted files: counts them when made, uncounts them when dropped.
#[derive(Debug)]
pub(crate) struct Counted {
    files: Rc<OpenFiles>,
    n: usize,
}

impl Counted {
    pub(crate) fn new(files: &Rc<OpenFiles>, n: usize) -> Self {
        files.count.set(files.count.get() + n);
        Self {
            files: Rc::clone(files),
            n,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let c = &self.files.count;
        assert!(c.get() >= self.n, "more files closed than opened");
        c.set(c.get() - self.n);
    }
}
