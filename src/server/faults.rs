//! The fault lab (`--enable-fault-injection`, off by default): faults a person injects into one
//! node by hand, through `POST /debug/fault` or the dashboard's buttons, to watch Raft cope.
//!
//! | action | effect on this node |
//! |---|---|
//! | `cut` `{peer, direction: out/in/both}` | its calls to `peer` fail as if unreachable (`out`), and `peer`'s calls to it are refused with 503 (`in`); `peer` `*` is every peer |
//! | `drop` `{peer, share}` | that share of its calls to `peer` fail |
//! | `delay` `{peer, ms}` | each call to `peer` waits `ms` first |
//! | `pause` `{seconds}` | its Raft stops: no ticks, no peer messages in or out |
//! | `slow_fsync` `{ms}` | each fsync of its log waits `ms` first |
//! | `heal` | all of the above undone |
//!
//! Without the flag, nothing here is ever consulted beyond one atomic load, and `/debug/fault`
//! answers 404.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::raft::NodeId;

/// Longest delay (`delay`, `slow_fsync`), in milliseconds.
pub const MAX_DELAY_MS: u64 = 10_000;
/// Longest pause, in seconds.
pub const MAX_PAUSE_SECS: u64 = 600;

/// A cut link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// The peer, or `*`.
    pub peer: String,
    /// `out`, `in` or `both`.
    pub direction: String,
}

/// Calls to a peer that fail at random.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Loss {
    /// The peer, or `*`.
    pub peer: String,
    /// Share of calls that fail, 0 to 1.
    pub share: f64,
}

/// Calls to a peer that wait first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delay {
    /// The peer, or `*`.
    pub peer: String,
    /// Milliseconds.
    pub ms: u64,
}

/// The faults in force on a node: the `faults` of `GET /debug/fault` and `/debug/raft`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultView {
    /// Cut links.
    pub cuts: Vec<Cut>,
    /// Lossy links.
    pub drops: Vec<Loss>,
    /// Slow links.
    pub delays: Vec<Delay>,
    /// Milliseconds of pause left (0: not paused).
    pub paused_for_ms: u64,
    /// Extra milliseconds before each fsync.
    pub slow_fsync_ms: u64,
}

/// A `POST /debug/fault` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultRequest {
    /// Cut links.
    Cut {
        /// The peer, or `*`.
        peer: String,
        /// `out`, `in` or `both` (default `both`).
        #[serde(default = "both")]
        direction: String,
    },
    /// Drop a share of calls.
    Drop {
        /// The peer, or `*`.
        peer: String,
        /// 0 to 1.
        share: f64,
    },
    /// Delay calls.
    Delay {
        /// The peer, or `*`.
        peer: String,
        /// Milliseconds, at most [`MAX_DELAY_MS`].
        ms: u64,
    },
    /// Stop the node's Raft for a while.
    Pause {
        /// Seconds, at most [`MAX_PAUSE_SECS`].
        seconds: u64,
    },
    /// Slow every fsync.
    SlowFsync {
        /// Milliseconds, at most [`MAX_DELAY_MS`] (0 undoes it).
        ms: u64,
    },
    /// Undo everything.
    Heal,
}

fn both() -> String {
    "both".into()
}

#[derive(Default)]
struct State {
    view: FaultView,
    paused_until: Option<Instant>,
}

/// What the node's sending side should do with a call to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// Send it.
    Pass,
    /// Wait this long, then send it.
    Delay(Duration),
    /// Fail it, as if the peer were unreachable.
    Fail,
}

/// A node's fault lab.
pub struct Faults {
    enabled: bool,
    /// Any fault in force (so a node without faults only loads this).
    active: AtomicBool,
    state: Mutex<State>,
}

impl Faults {
    /// A lab, on or off.
    pub fn new(enabled: bool) -> Faults {
        Faults { enabled, active: AtomicBool::new(false), state: Mutex::new(State::default()) }
    }

    /// True if `--enable-fault-injection` was given.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Applies `req` (checked against `peers`, the members this node knows); returns the faults
    /// now in force. `NotFound` when the lab is off, `BadRequest` for bad values.
    pub fn apply(&self, req: FaultRequest, peers: &[NodeId]) -> Result<FaultView> {
        if !self.enabled {
            return Err(disabled());
        }
        let known = |peer: &str| -> Result<()> {
            if peer == "*" || peers.iter().any(|p| p == peer) {
                Ok(())
            } else {
                Err(Error::BadRequest(format!("unknown peer {peer:?}; members: {peers:?}")))
            }
        };
        let mut s = self.state.lock();
        match req {
            FaultRequest::Cut { peer, direction } => {
                known(&peer)?;
                if !["out", "in", "both"].contains(&direction.as_str()) {
                    return Err(Error::BadRequest(format!(
                        "direction {direction:?}: expected out, in or both"
                    )));
                }
                s.view.cuts.retain(|c| c.peer != peer);
                s.view.cuts.push(Cut { peer, direction });
            }
            FaultRequest::Drop { peer, share } => {
                known(&peer)?;
                if !(0.0..=1.0).contains(&share) {
                    return Err(Error::BadRequest(format!("share {share}: expected 0 to 1")));
                }
                s.view.drops.retain(|d| d.peer != peer);
                s.view.drops.push(Loss { peer, share });
            }
            FaultRequest::Delay { peer, ms } => {
                known(&peer)?;
                check_ms(ms)?;
                s.view.delays.retain(|d| d.peer != peer);
                s.view.delays.push(Delay { peer, ms });
            }
            FaultRequest::Pause { seconds } => {
                if seconds == 0 || seconds > MAX_PAUSE_SECS {
                    return Err(Error::BadRequest(format!(
                        "seconds {seconds}: expected 1 to {MAX_PAUSE_SECS}"
                    )));
                }
                s.paused_until = Some(Instant::now() + Duration::from_secs(seconds));
            }
            FaultRequest::SlowFsync { ms } => {
                check_ms(ms)?;
                s.view.slow_fsync_ms = ms;
            }
            FaultRequest::Heal => *s = State::default(),
        }
        self.active.store(true, Ordering::SeqCst);
        Ok(view(&mut s))
    }

    /// The faults in force (`NotFound` when the lab is off).
    pub fn view(&self) -> Result<FaultView> {
        if !self.enabled {
            return Err(disabled());
        }
        Ok(view(&mut self.state.lock()))
    }

    fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// True while a `pause` holds.
    pub fn paused(&self) -> bool {
        self.active() && self.state.lock().paused_until.is_some_and(|t| Instant::now() < t)
    }

    /// What to do with a call to `peer`.
    pub fn outgoing(&self, peer: &str) -> Outgoing {
        if !self.active() {
            return Outgoing::Pass;
        }
        let s = self.state.lock();
        let applies = |p: &str| p == "*" || p == peer;
        if s.paused_until.is_some_and(|t| Instant::now() < t)
            || s.view.cuts.iter().any(|c| applies(&c.peer) && c.direction != "in")
        {
            return Outgoing::Fail;
        }
        let share: f64 = s.view.drops.iter().filter(|d| applies(&d.peer)).map(|d| d.share).sum();
        if share > 0.0 && rand::thread_rng().gen_bool(share.min(1.0)) {
            return Outgoing::Fail;
        }
        match s.view.delays.iter().filter(|d| applies(&d.peer)).map(|d| d.ms).max() {
            Some(ms) if ms > 0 => Outgoing::Delay(Duration::from_millis(ms)),
            _ => Outgoing::Pass,
        }
    }

    /// Refuses a peer's call to this node when its links are cut inwards or this node is paused.
    pub fn check_incoming(&self, from: &str) -> Result<()> {
        if !self.active() {
            return Ok(());
        }
        let s = self.state.lock();
        if s.paused_until.is_some_and(|t| Instant::now() < t) {
            return Err(Error::Unavailable("fault lab: this node is paused".into()));
        }
        let cut =
            s.view.cuts.iter().any(|c| (c.peer == "*" || c.peer == from) && c.direction != "out");
        if cut {
            return Err(Error::Unavailable(format!("fault lab: the link from {from} is cut")));
        }
        Ok(())
    }

    /// How long to wait before an fsync (zero without `slow_fsync`).
    pub fn fsync_delay(&self) -> Duration {
        if !self.active() {
            return Duration::ZERO;
        }
        Duration::from_millis(self.state.lock().view.slow_fsync_ms)
    }
}

fn view(s: &mut State) -> FaultView {
    let now = Instant::now();
    if s.paused_until.is_some_and(|t| t <= now) {
        s.paused_until = None;
    }
    let mut v = s.view.clone();
    v.paused_for_ms =
        s.paused_until.map_or(0, |t| u64::try_from((t - now).as_millis()).unwrap_or(u64::MAX));
    v
}

fn check_ms(ms: u64) -> Result<()> {
    if ms > MAX_DELAY_MS {
        return Err(Error::BadRequest(format!("ms {ms}: at most {MAX_DELAY_MS}")));
    }
    Ok(())
}

fn disabled() -> Error {
    Error::NotFound(
        "the fault lab is off: start the server with --enable-fault-injection to use it".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> FaultRequest {
        serde_json::from_str(json).expect("a valid request")
    }

    #[test]
    fn off_means_not_found_and_no_effect() {
        let f = Faults::new(false);
        let peers = vec!["n2".to_string()];
        assert!(matches!(f.apply(req(r#"{"action":"heal"}"#), &peers), Err(Error::NotFound(_))));
        assert!(matches!(f.view(), Err(Error::NotFound(_))));
        assert_eq!(f.outgoing("n2"), Outgoing::Pass);
        assert!(f.check_incoming("n2").is_ok());
    }

    #[test]
    fn cuts_drops_delays_pause_and_heal() {
        let f = Faults::new(true);
        let peers = vec!["n2".to_string(), "n3".to_string()];
        f.apply(req(r#"{"action":"cut","peer":"n2","direction":"out"}"#), &peers).expect("cut");
        assert_eq!(f.outgoing("n2"), Outgoing::Fail);
        assert_eq!(f.outgoing("n3"), Outgoing::Pass);
        assert!(f.check_incoming("n2").is_ok(), "out only");
        f.apply(req(r#"{"action":"cut","peer":"*","direction":"in"}"#), &peers).expect("cut");
        assert!(f.check_incoming("n3").is_err());
        f.apply(req(r#"{"action":"drop","peer":"n3","share":1.0}"#), &peers).expect("drop");
        assert_eq!(f.outgoing("n3"), Outgoing::Fail);
        f.apply(req(r#"{"action":"heal"}"#), &peers).expect("heal");
        assert_eq!(f.view().expect("view"), FaultView::default());
        f.apply(req(r#"{"action":"delay","peer":"*","ms":30}"#), &peers).expect("delay");
        assert_eq!(f.outgoing("n3"), Outgoing::Delay(Duration::from_millis(30)));
        f.apply(req(r#"{"action":"slow_fsync","ms":5}"#), &peers).expect("slow");
        assert_eq!(f.fsync_delay(), Duration::from_millis(5));
        f.apply(req(r#"{"action":"pause","seconds":2}"#), &peers).expect("pause");
        assert!(f.paused() && f.check_incoming("n2").is_err());
        assert_eq!(f.outgoing("n2"), Outgoing::Fail);
        assert!(f.view().expect("view").paused_for_ms > 0);
    }

    #[test]
    fn bad_requests_are_refused() {
        let f = Faults::new(true);
        let peers = vec!["n2".to_string()];
        for bad in [
            r#"{"action":"cut","peer":"nobody"}"#,
            r#"{"action":"cut","peer":"n2","direction":"sideways"}"#,
            r#"{"action":"drop","peer":"n2","share":1.5}"#,
            r#"{"action":"delay","peer":"n2","ms":99999999}"#,
            r#"{"action":"pause","seconds":0}"#,
            r#"{"action":"pause","seconds":100000}"#,
        ] {
            assert!(matches!(f.apply(req(bad), &peers), Err(Error::BadRequest(_))), "{bad}");
        }
        for garbage in [r#"{"action":"meteor"}"#, r#"{"action":"cut"}"#, "[]", "{"] {
            assert!(serde_json::from_str::<FaultRequest>(garbage).is_err(), "{garbage}");
        }
    }
}
