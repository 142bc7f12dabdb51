//! A wake-all event for tasks of one shard: no lock, no allocation per
//! waiter beyond its waker. Listeners created before a state check cannot
//! miss a notification that follows it.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

/// One per log, owned by the log's shard.
#[derive(Debug, Default)]
pub(crate) struct Notify {
    epoch: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    pub(crate) fn notify_all(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn listen(&self) -> Listen<'_> {
        Listen {
            notify: self,
            epoch: self.epoch.get(),
        }
    }
}

/// Completes at the first `notify_all` after it was created.
#[derive(Debug)]
pub(crate) struct Listen<'a> {
    notify: &'a Notify,
    epoch: u64,
}

impl Future for Listen<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.epoch.get() != self.epoch {
            return Poll::Ready(());
        }
        let mut wakers = self.notify.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
