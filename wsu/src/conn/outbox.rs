//! The one ordered outbound queue of a connection.
//!
//! Everything a connection sends goes through it, in the order it was queued: frames from other
//! tasks (emits, broadcasts), the connection's own answers (acks, errors, pongs) and its
//! WebSocket pings. The connection task is its only reader; it moves frames from here into the
//! socket in batches.
//!
//! Two ways in, one bound:
//! - [`Outbox::offer`] (emits and broadcasts): refused when the queue is over its bound, and the
//!   caller applies the slow-consumer policy.
//! - [`Outbox::push`] (the connection's own answers and pings): never refused, because a request
//!   that carries an `ackId` is always answered. While the queue is over its bound the connection
//!   stops reading its client ([`Outbox::is_over`]), so answers can only exceed the bound by what
//!   one read batch produces: the client is slowed down by TCP, nothing is lost.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use tokio_tungstenite::tungstenite::Message;

use crate::sync::lock;

/// Why [`Outbox::offer`] refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The connection is closed.
    Closed,
    /// The queue is at its bound (messages or bytes).
    Full,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Message>,
    bytes: usize,
    closed: bool,
    /// The connection task, parked until a frame arrives.
    waker: Option<Waker>,
}

/// A connection's outbound queue (see the module docs).
pub(crate) struct Outbox {
    max_messages: usize,
    max_bytes: usize,
    queue: Mutex<Queue>,
    /// Whether the queue is at or over its bound, kept in step with `queue` under its lock, so
    /// that the connection task reads it without locking before every frame it reads.
    over: AtomicBool,
    /// Whether frames are queued, kept in step the same way (the writer checks it before
    /// locking).
    nonempty: AtomicBool,
}

/// The bytes a frame holds in the queue.
pub(crate) fn frame_len(msg: &Message) -> usize {
    match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(_) | Message::Frame(_) => 0,
    }
}

impl Outbox {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Self {
        Outbox {
            max_messages: max_messages.max(1),
            max_bytes,
            queue: Mutex::new(Queue::default()),
            over: AtomicBool::new(false),
            nonempty: AtomicBool::new(false),
        }
    }

    /// Queue a frame from elsewhere (an emit or a broadcast) unless the queue is at its bound.
    pub(crate) fn offer(&self, msg: Message) -> Result<(), Refused> {
        let len = frame_len(&msg);
        let waker = {
            let mut q = lock(&self.queue);
            if q.closed {
                return Err(Refused::Closed);
            }
            if q.frames.len() >= self.max_messages || q.bytes + len > self.max_bytes {
                return Err(Refused::Full);
            }
            q.bytes += len;
            q.frames.push_back(msg);
            self.update_over(&q);
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Queue one of the connection's own frames (an answer, a ping): never refused while open.
    /// Returns false when the connection is closed (the frame is dropped: nobody can read it).
    ///
    /// Only the connection task calls this, and it writes the queue after every step of its
    /// loop, so the push wakes nobody (a self-wake would cost a loop turn and a read attempt).
    pub(crate) fn push(&self, msg: Message) -> bool {
        let len = frame_len(&msg);
        let mut q = lock(&self.queue);
        if q.closed {
            return false;
        }
        q.bytes += len;
        q.frames.push_back(msg);
        self.update_over(&q);
        true
    }

    /// Take the oldest frame.
    pub(crate) fn pop(&self) -> Option<Message> {
        let mut q = lock(&self.queue);
        let msg = q.frames.pop_front()?;
        q.bytes -= frame_len(&msg);
        self.update_over(&q);
        if q.frames.is_empty() && q.frames.capacity() > 64 {
            // A burst is over: give its memory back (idle connections stay small).
            q.frames = VecDeque::new();
        }
        Some(msg)
    }

    /// Ready when a frame is queued; otherwise remembers the waker of the connection task.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut q = lock(&self.queue);
        if !q.frames.is_empty() {
            return Poll::Ready(());
        }
        match &q.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => q.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Whether nothing is queued. Without locking: exact for the connection task (the only
    /// reader); a frame another task is queueing right now may not be seen yet, and it wakes
    /// the task when it is.
    pub(crate) fn is_empty(&self) -> bool {
        !self.nonempty.load(Ordering::Acquire)
    }

    fn update_over(&self, q: &Queue) {
        let over = q.frames.len() >= self.max_messages || q.bytes >= self.max_bytes;
        if over != self.over.load(Ordering::Relaxed) {
            self.over.store(over, Ordering::Relaxed);
        }
        let nonempty = !q.frames.is_empty();
        if nonempty != self.nonempty.load(Ordering::Relaxed) {
            self.nonempty.store(nonempty, Ordering::Release);
        }
    }

    /// Whether the queue is at or over its bound: the connection stops reading its client.
    pub(crate) fn is_over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.queue).frames.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        lock(&self.queue).bytes
    }

    /// Refuse everything from now on and drop what is queued.
    pub(crate) fn close(&self) {
        let mut q = lock(&self.queue);
        q.closed = true;
        q.frames = VecDeque::new();
        q.bytes = 0;
        q.waker = None;
        self.update_over(&q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn text(s: &str) -> Message {
        Message::text(s)
    }

    #[test]
    fn one_order_for_offers_and_pushes() {
        let o = Outbox::new(3, 1000);
        assert_eq!(o.offer(text("a")), Ok(()));
        assert!(o.push(text("b")));
        assert_eq!(o.offer(text("c")), Ok(()));
        assert_eq!(o.offer(text("d")), Err(Refused::Full), "bound in messages");
        assert!(o.is_over());
        assert!(o.push(text("e")), "answers are never refused");
        assert_eq!(o.len(), 4);
        let got: Vec<_> = std::iter::from_fn(|| o.pop())
            .map(|m| m.into_text().unwrap().to_string())
            .collect();
        assert_eq!(got, ["a", "b", "c", "e"]);
        assert_eq!(o.bytes(), 0);
        assert!(!o.is_over());
    }

    #[test]
    fn bound_in_bytes() {
        let o = Outbox::new(100, 4);
        assert_eq!(o.offer(text("abc")), Ok(()));
        assert_eq!(o.offer(text("de")), Err(Refused::Full));
        assert_eq!(o.offer(text("d")), Ok(()));
        assert!(o.is_over());
        assert_eq!(o.bytes(), 4);
    }

    #[test]
    fn closed_refuses_and_empties() {
        let o = Outbox::new(10, 100);
        assert!(o.push(text("a")));
        o.close();
        assert_eq!(o.bytes(), 0);
        assert!(o.pop().is_none());
        assert_eq!(o.offer(text("b")), Err(Refused::Closed));
        assert!(!o.push(text("c")));
    }

    #[test]
    fn offers_wake_the_parked_reader_once() {
        let o = Outbox::new(10, 100);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(o.poll_ready(&mut cx).is_pending());
        assert_eq!(o.offer(text("a")), Ok(()));
        assert!(o.push(text("b")));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "woken by the first frame only"
        );
        assert!(o.poll_ready(&mut cx).is_ready());
    }
}
