//! The status sampler: polls every node's `/status` several times a second and records who
//! claimed to lead which term, so the run can check Election Safety (at most one leader per term).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::nemesis::Event;
use super::workload::{Clock, agent};
use crate::api::Status;

/// How often each node is asked.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// One answer to `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// When the answer arrived (nanoseconds on the run's clock).
    pub at: u64,
    /// Node index (0 = `node1`).
    pub node: usize,
    /// The node's current term.
    pub term: u64,
    /// The node says it leads `term`.
    pub is_leader: bool,
}

/// Polls every address in `addrs` (one thread each, every [`SAMPLE_EVERY`]) until `stop` is set.
/// `addrs` may grow meanwhile (a node joins): a new address gets its own thread at once; the
/// index of an address in `addrs` is the node's index in the samples. A node that does not answer
/// (paused, killed, restarting, stopped for good) is simply not sampled meanwhile.
pub fn sample(addrs: &RwLock<Vec<String>>, clock: &Clock, stop: &AtomicBool) -> Vec<Sample> {
    let mut samples: Vec<Sample> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        loop {
            let known: Vec<String> = addrs.read().unwrap_or_else(|e| e.into_inner()).clone();
            for (node, addr) in known.into_iter().enumerate().skip(handles.len()) {
                let handle = std::thread::Builder::new()
                    .name(format!("chaos-sampler-{node}"))
                    .spawn_scoped(s, move || sample_one(node, &addr, clock, stop))
                    .expect("spawn a sampler thread");
                handles.push(handle);
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
        let joined = handles.into_iter().map(|h| h.join().expect("sampler thread panicked"));
        joined.flatten().collect()
    });
    samples.sort_by_key(|s| s.at);
    samples
}

fn sample_one(node: usize, addr: &str, clock: &Clock, stop: &AtomicBool) -> Vec<Sample> {
    let agent = agent(Duration::from_millis(200));
    let url = format!("http://{addr}/status");
    let mut out = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let next = Instant::now() + SAMPLE_EVERY;
        if let Ok(response) = agent.get(&url).call()
            && let Ok(text) = response.into_string()
            && let Ok(status) = serde_json::from_str::<Status>(&text)
        {
            let (term, is_leader) = (status.term, status.is_leader);
            out.push(Sample { at: clock.now(), node, term, is_leader });
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    out
}

/// Terms in which more than one node claimed to lead, with those nodes: each is a violation of
/// Election Safety.
pub fn two_leaders(samples: &[Sample]) -> BTreeMap<u64, BTreeSet<usize>> {
    let mut leaders: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.is_leader) {
        leaders.entry(s.term).or_default().insert(s.node);
    }
    leaders.retain(|_, nodes| nodes.len() > 1);
    leaders
}

/// Timeline events: when each (node, term) leadership was first seen.
pub fn leader_events(samples: &[Sample], names: &[String]) -> Vec<Event> {
    let mut seen = BTreeSet::new();
    let mut events = Vec::new();
    for s in samples.iter().filter(|s| s.is_leader) {
        if seen.insert((s.node, s.term)) {
            let name = names.get(s.node).cloned().unwrap_or_else(|| format!("#{}", s.node));
            events.push(Event {
                at: s.at,
                what: format!("{name} leads term {} (first seen)", s.term),
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leaders_in_one_term_are_found() {
        let s = |at, node, term, is_leader| Sample { at, node, term, is_leader };
        let samples = vec![s(1, 0, 1, true), s(2, 1, 1, false), s(3, 1, 2, true), s(4, 0, 2, true)];
        let bad = two_leaders(&samples);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[&2], BTreeSet::from([0, 1]));
        assert!(two_leaders(&samples[..3]).is_empty());
    }
}
