//! A wake-all event for tasks of one shard: no lock, no allocation per
//! waiter beyond its waker. Listeners created before a state check cannot
//! miss a notification that follows it.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

/// The wakers of tasks waiting on one event, in a slab. A waiter owns its
/// slot and frees it when dropped (completed, timed out or cancelled), so
/// the list holds only live waiters however many come and go: a waiter that
/// lost a race to a timer must not leave its waker (and with it its task's
/// memory) behind until the event comes.
#[derive(Debug, Default)]
pub struct WaitList {
    slots: RefCell<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl WaitList {
    /// A handle that registers one task's waker and frees it on drop.
    pub fn waiter(&self) -> Waiter<'_> {
        Waiter { list: self, slot: None }
    }

    /// Wakes every registered waiter. Each stays registered until it is
    /// dropped or polled to completion, so a waiter polled again before the
    /// event it waits for keeps its slot.
    pub fn wake_all(&self) {
        for w in self.slots.borrow().wakers.iter().flatten() {
            w.wake_by_ref();
        }
    }

    /// Registered waiters.
    pub fn len(&self) -> usize {
        let s = self.slots.borrow();
        s.wakers.len() - s.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One waiter's slot in a [`WaitList`].
#[derive(Debug)]
pub struct Waiter<'a> {
    list: &'a WaitList,
    slot: Option<usize>,
}

impl Waiter<'_> {
    /// Stores (or refreshes) this task's waker.
    pub fn register(&mut self, waker: &Waker) {
        let mut s = self.list.slots.borrow_mut();
        match self.slot {
            Some(i) => match &mut s.wakers[i] {
                Some(w) if w.will_wake(waker) => {}
                w => *w = Some(waker.clone()),
            },
            None => {
                let i = match s.free.pop() {
                    Some(i) => {
                        s.wakers[i] = Some(waker.clone());
                        i
                    }
                    None => {
                        s.wakers.push(Some(waker.clone()));
                        s.wakers.len() - 1
                    }
                };
                self.slot = Some(i);
            }
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            let mut s = self.list.slots.borrow_mut();
            s.wakers[i] = None;
            s.free.push(i);
        }
    }
}

/// One per log, owned by the log's shard.
#[derive(Debug, Default)]
pub(crate) struct Notify {
    epoch: Cell<u64>,
    waiters: WaitList,
}

impl Notify {
    pub(crate) fn notify_all(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        self.waiters.wake_all();
    }

    pub(crate) fn listen(&self) -> Listen<'_> {
        Listen {
            notify: self,
            epoch: self.epoch.get(),
            waiter: self.waiters.waiter(),
        }
    }

    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.len()
    }
}

/// Completes at the first `notify_all` after it was created.
#[derive(Debug)]
pub(crate) struct Listen<'a> {
    notify: &'a Notify,
    epoch: u64,
    waiter: Waiter<'a>,
}

impl Future for Listen<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.notify.epoch.get() != this.epoch {
            return Poll::Ready(());
        }
        this.waiter.register(cx.waker());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    #[test]
    fn dropped_listeners_free_their_slots_and_slots_are_reused() {
        let n = Notify::default();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            let mut l = std::pin::pin!(n.listen());
            assert!(l.as_mut().poll(&mut cx).is_pending());
            assert!(l.as_mut().poll(&mut cx).is_pending(), "polled again: same slot");
            assert_eq!(n.waiting(), 1);
        }
        assert_eq!(n.waiting(), 0);
        assert_eq!(n.waiters.slots.borrow().wakers.len(), 1, "one slot, reused");
        let mut a = std::pin::pin!(n.listen());
        let mut b = std::pin::pin!(n.listen());
        assert!(a.as_mut().poll(&mut cx).is_pending() && b.as_mut().poll(&mut cx).is_pending());
        n.notify_all();
        assert!(a.as_mut().poll(&mut cx).is_ready() && b.as_mut().poll(&mut cx).is_ready());
        let late = n.listen();
        n.notify_all();
        let mut late = std::pin::pin!(late);
        assert!(
            late.as_mut().poll(&mut cx).is_ready(),
            "a notify after listen() is never missed"
        );
    }
}
