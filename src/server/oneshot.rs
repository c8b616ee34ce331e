//! A one-shot answer slot: how a waiting client request (a write waiting for its entry to apply,
//! a read waiting for its ReadIndex round) gets its one answer from another thread.
//!
//! Why not a `bounded(1)` crossbeam channel, as the other queues are: a blocking `recv` there
//! first spins and then calls `sched_yield` four times before it parks, which is cheap for a
//! queue that is usually busy and dear for a waiter that always waits a whole round trip. Under
//! 64 put connections those yields were 14% of the three nodes' CPU samples
//! (`scripts/profile.sh`): every waiting HTTP worker went through four extra context switches
//! per request. This slot parks at once (a `parking_lot` mutex and condition variable) and is
//! woken once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Why [`Receiver::recv_timeout`] returned without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing arrived in time.
    Timeout,
    /// The sender was dropped without sending (its waiter was forgotten).
    Disconnected,
}

enum State<T> {
    Empty,
    Full(T),
    Taken,
    Dropped,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

/// A waiter that is not a thread: the function that takes the answer (`None`: the sender was
/// dropped unsent), run on the answering thread.
type Callback<T> = Box<dyn FnOnce(Option<T>) + Send>;

/// The answering end: sends once (or, dropped unsent, tells the waiter it will get nothing).
pub struct Sender<T> {
    slot: Option<Arc<Slot<T>>>,
    call: Option<Callback<T>>,
}

/// The waiting end.
pub struct Receiver<T> {
    slot: Arc<Slot<T>>,
}

/// A new slot.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot { state: Mutex::new(State::Empty), ready: Condvar::new() });
    (Sender { slot: Some(slot.clone()), call: None }, Receiver { slot })
}

/// A sender whose answer is handed to `call` on the thread that sends it, instead of waking a
/// waiting thread (`server::answers`). `call` must be quick: it runs wherever answers are sent
/// (the apply thread, a proposing worker). Dropped unsent, the sender calls it with `None`, so
/// its request is always answered.
pub fn callback<T>(call: impl FnOnce(Option<T>) + Send + 'static) -> Sender<T> {
    Sender { slot: None, call: Some(Box::new(call)) }
}

impl<T> Sender<T> {
    /// Hands `value` to the waiter and wakes it. A waiter that gave up simply never looks.
    pub fn send(mut self, value: T) {
        if let Some(call) = self.call.take() {
            return call(Some(value));
        }
        if let Some(slot) = self.slot.take() {
            *slot.state.lock() = State::Full(value);
            slot.ready.notify_one();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call(None);
        }
        if let Some(slot) = self.slot.take() {
            let mut state = slot.state.lock();
            if matches!(*state, State::Empty) {
                *state = State::Dropped;
                slot.ready.notify_one();
            }
        }
    }
}

impl<T> Receiver<T> {
    /// Waits at most `timeout` for the answer.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.slot.state.lock();
        loop {
            match std::mem::replace(&mut *state, State::Taken) {
                State::Full(value) => return Ok(value),
                State::Dropped => {
                    *state = State::Dropped;
                    return Err(RecvError::Disconnected);
                }
                State::Taken => return Err(RecvError::Disconnected),
                State::Empty => *state = State::Empty,
            }
            let timed_out = match deadline {
                Some(deadline) => self.slot.ready.wait_until(&mut state, deadline).timed_out(),
                None => {
                    self.slot.ready.wait(&mut state);
                    false
                }
            };
            if timed_out {
                return match std::mem::replace(&mut *state, State::Taken) {
                    State::Full(value) => Ok(value),
                    State::Empty => {
                        *state = State::Empty;
                        Err(RecvError::Timeout)
                    }
                    _ => Err(RecvError::Disconnected),
                };
            }
        }
    }

    /// The answer, if it is already there.
    pub fn try_recv(&self) -> Option<T> {
        let mut state = self.slot.state.lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Full(value) => Some(value),
            other => {
                *state = other;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_sent_before_the_wait_is_there_at_once() {
        let (tx, rx) = channel();
        tx.send(7);
        assert_eq!(rx.recv_timeout(Duration::ZERO), Ok(7));
        // One answer only.
        assert_eq!(rx.recv_timeout(Duration::ZERO), Err(RecvError::Disconnected));
    }

    #[test]
    fn a_waiter_is_woken_by_another_thread() {
        let (tx, rx) = channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send("done");
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok("done"));
        sender.join().unwrap();
    }

    #[test]
    fn no_answer_times_out_and_a_dropped_sender_disconnects() {
        let (tx, rx) = channel::<u8>();
        assert_eq!(rx.recv_timeout(Duration::from_millis(5)), Err(RecvError::Timeout));
        assert_eq!(rx.try_recv(), None);
        let dropper = std::thread::spawn(move || drop(tx));
        // Woken by the drop: not a timeout.
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Err(RecvError::Disconnected));
        dropper.join().unwrap();
    }

    #[test]
    fn a_callback_gets_the_answer_once_or_learns_it_was_dropped() {
        let got = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let g = got.clone();
        callback(move |v| g.lock().push(v)).send(7);
        let g = got.clone();
        drop(callback::<u8>(move |v| g.lock().push(v)));
        assert_eq!(*got.lock(), vec![Some(7), None]);
    }

    #[test]
    fn a_huge_timeout_waits_without_overflowing() {
        let (tx, rx) = channel();
        tx.send(1u8);
        assert_eq!(rx.recv_timeout(Duration::MAX), Ok(1));
    }
}
