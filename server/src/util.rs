//! Small single-shard synchronisation pieces: an event flag, a bounded FIFO
//! and a byte budget. All are `!Send`: they live on one shard's thread and
//! need no locks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use sluice_engine::WaitList;

/// A flag that, once set, wakes every task waiting on it. One per shard (shut
/// down) or per connection (closing).
#[derive(Debug, Default)]
pub struct Flag {
    set: Cell<bool>,
    waiters: WaitList,
}

impl Flag {
    pub fn set(&self) {
        self.set.set(true);
        self.waiters.wake_all();
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Completes once the flag is set. Dropped before that (a race lost to
    /// a read, a timer), it takes its waker out of the flag.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        let mut waiter = self.waiters.waiter();
        std::future::poll_fn(move |cx| {
            if self.set.get() {
                return Poll::Ready(());
            }
            waiter.register(cx.waker());
            Poll::Pending
        })
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiters.len()
    }
}

/// Wakes every waiter each time it is notified: a level for "something
/// changed, look again".
#[derive(Debug, Default)]
pub struct Changed {
    epoch: Cell<u64>,
    waiters: WaitList,
}

impl Changed {
    pub fn notify(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        self.waiters.wake_all();
    }

    /// Completes at the next `notify`.
    pub fn next(&self) -> impl Future<Output = ()> + '_ {
        let start = self.epoch.get();
        let mut waiter = self.waiters.waiter();
        std::future::poll_fn(move |cx| {
            if self.epoch.get() != start {
                return Poll::Ready(());
            }
            waiter.register(cx.waker());
            Poll::Pending
        })
    }
}

/// Turns in arrival order on one shard: a [`Ticket`] taken later waits
/// until every ticket taken before it is dropped. A ticket dropped before
/// its turn (its task cancelled) passes the turn on.
#[derive(Debug, Default)]
pub struct Turns {
    next: Cell<u64>,
    /// The first ticket not dropped yet.
    first_open: Cell<u64>,
    /// Tickets dropped while an earlier one was still held.
    dropped: RefCell<std::collections::BTreeSet<u64>>,
    changed: Changed,
}

impl Turns {
    pub fn ticket(self: &Rc<Self>) -> Ticket {
        let n = self.next.get();
        self.next.set(n + 1);
        Ticket { turns: self.clone(), n }
    }
}

/// One place in [`Turns`]; its turn ends when it is dropped.
#[derive(Debug)]
pub struct Ticket {
    turns: Rc<Turns>,
    n: u64,
}

impl Ticket {
    /// Completes once every earlier ticket is dropped.
    pub async fn wait(&self) {
        while self.turns.first_open.get() < self.n {
            self.turns.changed.next().await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let t = &self.turns;
        t.dropped.borrow_mut().insert(self.n);
        let mut first = t.first_open.get();
        while t.dropped.borrow_mut().remove(&first) {
            first += 1;
        }
        t.first_open.set(first);
        t.changed.notify();
    }
}

/// A bounded FIFO between one producer and one consumer task on the same
/// shard. `push` waits while full; `pop` returns `None` once closed and
/// drained.
#[derive(Debug)]
pub struct LocalQueue<T> {
    items: RefCell<VecDeque<T>>,
    capacity: usize,
    closed: Cell<bool>,
    changed: Changed,
}

impl<T> LocalQueue<T> {
    pub fn new(capacity: usize) -> Rc<Self> {
        Rc::new(Self {
            items: RefCell::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
            closed: Cell::new(false),
            changed: Changed::default(),
        })
    }

    pub async fn push(&self, item: T) {
        while self.items.borrow().len() >= self.capacity {
            self.changed.next().await;
        }
        self.items.borrow_mut().push_back(item);
        self.changed.notify();
    }

    /// Takes the oldest item without waiting.
    pub fn try_pop(&self) -> Option<T> {
        let item = self.items.borrow_mut().pop_front();
        if item.is_some() {
            self.changed.notify();
        }
        item
    }

    pub async fn pop(&self) -> Option<T> {
        loop {
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.closed.get() {
                return None;
            }
            self.changed.next().await;
        }
    }

    pub fn close(&self) {
        self.closed.set(true);
        self.changed.notify();
    }
}

/// Bytes of requests a shard holds in flight. A connection takes a permit
/// for a frame before it reads the frame's body; past the limit the shard
/// stops reading from sockets until responses go out (back-pressure). One
/// request is always admitted when nothing else is held, so a frame as large
/// as `socket.request.max.bytes` can never deadlock.
#[derive(Debug)]
pub struct Budget {
    used: Cell<u64>,
    limit: u64,
    released: Changed,
}

impl Budget {
    pub fn new(limit: u64) -> Rc<Self> {
        Rc::new(Self {
            used: Cell::new(0),
            limit,
            released: Changed::default(),
        })
    }

    pub fn used(&self) -> u64 {
        self.used.get()
    }

    pub async fn acquire(self: &Rc<Self>, bytes: u64) -> Permit {
        loop {
            let used = self.used.get();
            if used == 0 || used + bytes <= self.limit {
                self.used.set(used + bytes);
                return Permit {
                    budget: self.clone(),
                    bytes,
                };
            }
            self.released.next().await;
        }
    }
}

/// Returns its bytes to the [`Budget`] when dropped.
#[derive(Debug)]
pub struct Permit {
    budget: Rc<Budget>,
    bytes: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let b = &self.budget;
        b.used.set(b.used.get() - self.bytes);
        b.released.notify();
    }
}

/// Polls two futures; returns the first to finish. Used to race socket reads
/// and accepts against shutdown.
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Result<A::Output, B::Output> {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        if let Poll::Ready(v) = Pin::new(&mut a).poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if let Poll::Ready(v) = Pin::new(&mut b).poll(cx) {
            return Poll::Ready(Err(v));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_blocks_past_limit_and_admits_one_oversized_request() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let budget = Budget::new(100);
            let big = budget.acquire(500).await;
            assert_eq!(budget.used(), 500);
            let b2 = budget.clone();
            let waiter = compio::runtime::spawn(async move { b2.acquire(10).await });
            compio::runtime::time::sleep(std::time::Duration::from_millis(5)).await;
            assert!(!waiter.is_finished(), "must wait while over the limit");
            drop(big);
            let p = waiter.await.unwrap();
            assert_eq!(budget.used(), 10);
            drop(p);
            assert_eq!(budget.used(), 0);
        });
    }

    #[test]
    fn waits_that_lose_a_race_leave_no_waker_behind() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let flag = Rc::new(Flag::default());
            // A long-poll fetch or a socket read races the shutdown flag
            // many times over a connection's life.
            for _ in 0..1000 {
                let r = race(compio::runtime::time::sleep(std::time::Duration::ZERO), flag.wait()).await;
                assert!(r.is_ok());
            }
            assert_eq!(flag.waiting(), 0, "every lost race took its waker out");
            let f2 = flag.clone();
            let waiting = compio::runtime::spawn(async move { f2.wait().await });
            compio::runtime::time::sleep(std::time::Duration::from_millis(2)).await;
            assert_eq!(flag.waiting(), 1);
            flag.set();
            waiting.await.unwrap();
            assert_eq!(flag.waiting(), 0);
        });
    }

    #[test]
    fn local_queue_is_fifo_and_bounded() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let q = LocalQueue::new(2);
            q.push(1).await;
            q.push(2).await;
            let q2 = q.clone();
            let pusher = compio::runtime::spawn(async move { q2.push(3).await });
            compio::runtime::time::sleep(std::time::Duration::from_millis(5)).await;
            assert!(!pusher.is_finished());
            assert_eq!(q.pop().await, Some(1));
            pusher.await.unwrap();
            q.close();
            assert_eq!(q.pop().await, Some(2));
            assert_eq!(q.pop().await, Some(3));
            assert_eq!(q.pop().await, None);
        });
    }
}
