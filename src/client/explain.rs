//! `raftlabkv-client status --explain`: the `/status` answers of every server, turned into
//! sentences that say what is happening and what to do.
//!
//! [`explain`] is a pure function of what the servers answered (or why they did not), so every
//! sentence is unit-tested with constructed statuses; `tests/explain.rs` produces each one on
//! real binaries. How it reads the cluster:
//!
//! - **The leader** is the node that says it leads in the highest term. A node that says it
//!   leads a lower term, or follows nobody (or someone else) at a lower term, is cut off from
//!   the majority (PreVote keeps a cut-off node's term from rising, so terms tell who is stale).
//! - **The members** come from the configuration the leader reports (else the reachable node
//!   with the newest configuration). A quorum is a majority of the voters; learners never count.
//! - **A server that does not answer** is named by its id when a reachable node's configuration
//!   lists its address, else by its address, with why: it refuses connections, it does not answer
//!   in time, its name does not resolve, or the error it gave.
//! - **Lag** is the leader's last log index minus the node's applied index (or minus its match
//!   index, as the leader sees it, when the node does not answer). A node lags when that reaches
//!   [`LAG_ENTRIES`], when the leader is sending it a snapshot, or when the leader has not heard
//!   from it for [`SILENT_MS`].
//!
//! Numbers are written with thousands separators (`48,120`).

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{SnapshotTransfer, Status};

/// Entries behind the leader from which a node is said to lag (a healthy follower under load
/// trails by a few: the commit index reaches it with the next message).
pub const LAG_ENTRIES: u64 = 100;

/// Milliseconds without an answer after which the leader's follower is said to be silent (the
/// leader sends something every heartbeat, 50 ms by default; elections time out after 300-600).
pub const SILENT_MS: u64 = 1000;

/// Leader changes seen in the last minute from which elections are said to keep happening (a
/// start, and one failover, are normal).
pub const ELECTIONS_PER_MINUTE: u64 = 3;

/// One server's answer: its status, or the text of the error that came instead.
pub type Reply = std::result::Result<Status, String>;

/// The sentences for the cluster these answers describe, most urgent first (never empty).
pub fn explain(replies: &[(String, Reply)]) -> Vec<String> {
    let view = View::new(replies);
    if view.reachable().next().is_none() {
        return vec![nothing_reachable(&view)];
    }
    let mut out = Vec::new();
    match view.leader {
        None => out.push(no_leader(&view)),
        Some(leader) => {
            out.extend(view.cut_off(leader));
            out.extend(view.down_voters(leader));
            out.extend(view.lagging(leader));
            out.extend(view.removed());
        }
    }
    let storm = elections(&view);
    if let (true, None, Some(leader)) = (out.is_empty(), &storm, view.leader) {
        out.push(view.healthy(leader));
    }
    out.extend(storm);
    out
}

/// Why a server did not answer, sorted into what an operator does about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// Nothing listens at the address (the process is down, or the port is wrong).
    Refused,
    /// No answer in time (paused, overloaded, or a network that drops packets).
    Timeout,
    /// The host name does not resolve.
    UnknownHost,
    /// Any other error, as its text.
    Other(String),
}

impl Failure {
    /// Sorts an error's text.
    pub fn of(text: &str) -> Failure {
        let lower = text.to_ascii_lowercase();
        if lower.contains("refused") {
            Failure::Refused
        } else if lower.contains("timed out") || lower.contains("timeout") {
            Failure::Timeout
        } else if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve") {
            Failure::UnknownHost
        } else {
            Failure::Other(text.trim().to_string())
        }
    }

    /// The table's short form: `connection refused`, `timeout`, `unknown host`, or the text.
    pub fn short(&self) -> String {
        match self {
            Failure::Refused => "connection refused".into(),
            Failure::Timeout => "timeout".into(),
            Failure::UnknownHost => "unknown host".into(),
            Failure::Other(text) => text.clone(),
        }
    }

    /// What `names` do, as a verb phrase agreeing with how many they are.
    fn phrase(&self, plural: bool) -> String {
        match (self, plural) {
            (Failure::Refused, false) => "refuses connections".into(),
            (Failure::Refused, true) => "refuse connections".into(),
            (Failure::Timeout, false) => "does not answer in time".into(),
            (Failure::Timeout, true) => "do not answer in time".into(),
            (Failure::UnknownHost, false) => "does not resolve".into(),
            (Failure::UnknownHost, true) => "do not resolve".into(),
            (Failure::Other(text), _) => format!("failed: {text}"),
        }
    }
}

/// `1 entry`, `48,120 entries`.
fn entries(n: u64) -> String {
    format!("{} {}", thousands(n), if n == 1 { "entry" } else { "entries" })
}

/// `n` with a comma every three digits: `48,120`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds as `840 ms` or `4.2 s`.
fn millis(ms: u64) -> String {
    if ms < 1000 { format!("{ms} ms") } else { format!("{:.1} s", ms as f64 / 1000.0) }
}

/// `a`, `a and b`, `a, b and c`.
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// `1 voter is` / `2 voters are`-style agreement: `n` and the singular or plural word.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The answers, read once: who answered, the leader, the members.
pub(crate) struct View<'a> {
    /// Every server, in the order given, with the name to call it by.
    servers: Vec<(String, std::result::Result<&'a Status, Failure>)>,
    /// The node leading the highest term, if any.
    pub(crate) leader: Option<&'a Status>,
    /// A node that says it leads, in a term another node has passed.
    stale_leader: Option<&'a Status>,
    /// Voters: id -> address (from the newest configuration seen).
    voters: BTreeMap<String, String>,
    /// Learners: id -> address.
    learners: BTreeMap<String, String>,
}

/// A server address without scheme or trailing slash, to compare with a configuration's.
fn bare(addr: &str) -> &str {
    let addr = addr.trim();
    let addr = addr.strip_prefix("http://").unwrap_or(addr);
    addr.trim_end_matches('/')
}

impl<'a> View<'a> {
    pub(crate) fn new(replies: &'a [(String, Reply)]) -> View<'a> {
        let statuses: Vec<&Status> = replies.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
        let claimed = statuses.iter().copied().filter(|s| s.is_leader).max_by_key(|s| s.term);
        // A leader whose term someone has passed is no longer the leader (an election is on).
        let newest = statuses.iter().map(|s| s.term).max().unwrap_or(0);
        let (leader, stale_leader) = match claimed {
            Some(l) if l.term < newest => (None, Some(l)),
            l => (l, None),
        };
        let config = leader.or(stale_leader).or_else(|| {
            statuses.iter().copied().max_by_key(|s| (s.config_index, s.term, s.voters.len()))
        });
        let mut voters = config.map(|s| s.voters.clone()).unwrap_or_default();
        let learners = config.map(|s| s.learners.clone()).unwrap_or_default();
        // Addresses any reachable node knows an id for (its peers, its configuration).
        let mut known: BTreeMap<String, String> = BTreeMap::new();
        for s in &statuses {
            for (id, addr) in s.peers.iter().chain(&s.voters).chain(&s.learners) {
                known.insert(bare(addr).to_string(), id.clone());
            }
        }
        let servers: Vec<_> = replies
            .iter()
            .map(|(addr, r)| match r {
                Ok(s) => (s.id.clone(), Ok(s)),
                Err(e) => {
                    let name = known.get(bare(addr)).cloned().unwrap_or_else(|| addr.clone());
                    (name, Err(Failure::of(e)))
                }
            })
            .collect();
        if voters.is_empty() {
            // No configuration reported (an old server or a test double): every server votes.
            voters = servers.iter().map(|(name, _)| (name.clone(), String::new())).collect();
        }
        View { servers, leader, stale_leader, voters, learners }
    }

    /// Every server in the order given: its name (id, else address) and its status or failure.
    pub(crate) fn servers(&self) -> &[(String, std::result::Result<&'a Status, Failure>)] {
        &self.servers
    }

    /// The servers that answered.
    fn reachable(&self) -> impl Iterator<Item = &'a Status> + '_ {
        self.servers.iter().filter_map(|(_, r)| r.as_ref().ok().copied())
    }

    /// The status of member `id`, if it answered.
    fn status_of(&self, id: &str) -> Option<&'a Status> {
        self.reachable().find(|s| s.id == id)
    }

    /// The servers that did not answer: (name, why).
    fn failed(&self) -> Vec<(&str, &Failure)> {
        self.servers.iter().filter_map(|(n, r)| r.as_ref().err().map(|f| (n.as_str(), f))).collect()
    }

    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Voters that answered.
    fn reachable_voters(&self) -> usize {
        self.voters.keys().filter(|id| self.status_of(id).is_some()).count()
    }

    /// `node2, node3 refuse connections; node4 does not answer in time` for the voters (and
    /// servers) that did not answer, plus the voters nobody asked.
    fn why_missing(&self) -> String {
        let mut by_failure: BTreeMap<&Failure, Vec<String>> = BTreeMap::new();
        let failed = self.failed();
        for (name, failure) in &failed {
            if !self.learners.contains_key(*name) {
                by_failure.entry(failure).or_default().push(name.to_string());
            }
        }
        let mut parts: Vec<String> = by_failure
            .iter()
            .map(|(f, names)| format!("{} {}", list(names), f.phrase(names.len() > 1)))
            .collect();
        // Voters neither reachable nor named by a failed server: not in --servers (as far as
        // can be told: a failed server known only by its address may be one of them).
        let named: BTreeSet<&str> = failed.iter().map(|(n, _)| *n).collect();
        let unnamed_failures = failed.iter().filter(|(n, _)| !self.voters.contains_key(*n)).count();
        let unasked: Vec<String> = self
            .voters
            .keys()
            .filter(|id| self.status_of(id).is_none() && !named.contains(id.as_str()))
            .cloned()
            .collect();
        if unasked.len() > unnamed_failures {
            let verb = if unasked.len() == 1 { "is" } else { "are" };
            parts.push(format!("{} {verb} not in --servers", list(&unasked)));
        }
        parts.join("; ")
    }

    /// Lag of member `id` behind `leader`: entries, from its own applied index or else the
    /// leader's match index for it.
    pub(crate) fn lag(&self, leader: &Status, id: &str) -> Option<u64> {
        if id == leader.id {
            return Some(leader.last_log_index.saturating_sub(leader.last_applied));
        }
        match self.status_of(id) {
            Some(s) => Some(leader.last_log_index.saturating_sub(s.last_applied)),
            None => leader
                .replication
                .get(id)
                .map(|r| leader.last_log_index.saturating_sub(r.match_index)),
        }
    }

    /// True if `s` follows `leader` in its term.
    fn follows(s: &Status, leader: &Status) -> bool {
        s.id == leader.id || (s.term == leader.term && s.leader.as_deref() == Some(&leader.id))
    }

    /// True if a snapshot is on its way from `leader` to `s` (as either side says). A node
    /// receiving one may not know the leader yet (the chunks arrive before the core hears of
    /// it): it is being caught up, not cut off.
    fn in_transfer(s: &Status, leader: &Status) -> bool {
        s.snapshot_receiving.is_some()
            || leader.replication.get(&s.id).is_some_and(|p| p.snapshot.is_some())
    }

    /// Voters that follow the leader (it included).
    fn supporters(&self, leader: &Status) -> usize {
        let follows = |id: &String| self.status_of(id).is_some_and(|s| Self::follows(s, leader));
        self.voters.keys().filter(|id| follows(id)).count()
    }

    /// Members that answered but do not follow the leader: each cut off from the majority.
    fn cut_off(&self, leader: &Status) -> Vec<String> {
        let n = self.voters.len();
        let with = format!(
            "{} leads term {} with {} of {n} voters",
            leader.id,
            leader.term,
            self.supporters(leader)
        );
        self.reachable()
            .filter(|s| {
                !Self::follows(s, leader) && !Self::in_transfer(s, leader) && self.is_member(&s.id)
            })
            .map(|s| {
                let what = if s.is_leader {
                    format!("it thinks it leads term {}, but {with}", s.term)
                } else {
                    let knows = s.leader.as_ref().map_or("knows no leader".into(), |l| {
                        if *l == leader.id {
                            format!("still follows {l}")
                        } else {
                            format!("follows {l}")
                        }
                    });
                    format!("it is at term {} and {knows}, while {with}", s.term)
                };
                let lag = self.lag(leader, &s.id).unwrap_or(0);
                let lag =
                    if lag > 0 { format!(" and lags by {}", entries(lag)) } else { String::new() };
                let after = if s.is_leader {
                    format!(
                        "it cannot commit anything, and steps down once it hears from {}",
                        leader.id
                    )
                } else {
                    "it catches up once its links work again".into()
                };
                format!("{} is cut off: {what}{lag}; check its network ({after})", s.id)
            })
            .collect()
    }

    fn is_member(&self, id: &str) -> bool {
        self.voters.contains_key(id) || self.learners.contains_key(id)
    }

    /// The voters that did not answer, and how many more the cluster can lose.
    fn down_voters(&self, leader: &Status) -> Option<String> {
        let down = self.voters.len() - self.reachable_voters();
        if down == 0 {
            return None;
        }
        let n = self.voters.len();
        let verb = if down == 1 { "is" } else { "are" };
        let supporters = self.supporters(leader);
        let quorum = self.quorum();
        let margin = if supporters < quorum {
            format!(
                "{} of {n} voters {} {}, short of the {quorum} a quorum needs, so nothing \
                 commits",
                supporters,
                if supporters == 1 { "follows" } else { "follow" },
                leader.id
            )
        } else if supporters == quorum {
            "the cluster has a quorum but cannot lose another".into()
        } else {
            format!("the cluster has a quorum and can lose {} more", supporters - quorum)
        };
        let it = if down == 1 { "it" } else { "them" };
        Some(format!(
            "{down} of {n} voters {verb} down ({}); {margin}: restart {it}, or replace {it} \
             (member remove, member add)",
            self.why_missing()
        ))
    }

    /// Members that answer and follow the leader but lag: a snapshot on its way, a silent
    /// follower, or one far behind.
    fn lagging(&self, leader: &Status) -> Vec<String> {
        let mut out = Vec::new();
        for id in self.voters.keys().chain(self.learners.keys()) {
            let elsewhere = |s: &Status| !Self::follows(s, leader) && !Self::in_transfer(s, leader);
            if *id == leader.id || self.status_of(id).is_some_and(elsewhere) {
                continue;
            }
            let Some(status) = self.status_of(id) else {
                continue; // down: said already
            };
            let who =
                if self.learners.contains_key(id) { format!("learner {id}") } else { id.clone() };
            let lag = self.lag(leader, id).unwrap_or(0);
            let progress = leader.replication.get(id);
            // What arrived is the receiver's count; the sender's runs ahead by what is in flight.
            let sending = status.snapshot_receiving.or(progress.and_then(|p| p.snapshot));
            let silent_ms = progress.map_or(0, |p| p.last_contact_ms);
            if let Some(t) = sending {
                out.push(format!(
                    "{who} lags the leader by {} and is being sent a snapshot ({}%): it \
                     catches up when the transfer ends",
                    entries(lag),
                    percent(&t)
                ));
            } else if silent_ms >= SILENT_MS {
                out.push(format!(
                    "{who} lags the leader by {}: {} has not heard from it for {}; check that \
                     it is not stuck and that the network between them works",
                    entries(lag),
                    leader.id,
                    millis(silent_ms)
                ));
            } else if lag >= LAG_ENTRIES {
                out.push(format!(
                    "{who} lags the leader by {} and is catching up; if the lag keeps growing, \
                     look at its disk and its link to {}",
                    entries(lag),
                    leader.id
                ));
            }
        }
        out
    }

    /// Servers that answer although their log says they were removed.
    fn removed(&self) -> Vec<String> {
        self.reachable()
            .filter(|s| s.member_state == "removed" && !self.is_member(&s.id))
            .map(|s| format!("{} was removed from the cluster and still runs: stop it", s.id))
            .collect()
    }

    fn healthy(&self, leader: &Status) -> String {
        let n = self.voters.len();
        let mut text = format!(
            "all healthy: {} leads term {}; {} of {n} voters up to date",
            leader.id, leader.term, n
        );
        if !self.learners.is_empty() {
            let names: Vec<String> = self.learners.keys().cloned().collect();
            let (word, verb) =
                if names.len() == 1 { ("learner", "is") } else { ("learners", "are") };
            text.push_str(&format!(
                "; {word} {} {verb} up to date (promote with `member promote`)",
                list(&names)
            ));
        }
        text
    }
}

fn percent(t: &SnapshotTransfer) -> u64 {
    (t.bytes_done.min(t.bytes_total) * 100).checked_div(t.bytes_total).unwrap_or(0)
}

fn nothing_reachable(view: &View<'_>) -> String {
    let n = view.servers.len();
    if n == 0 {
        return "nothing to ask: no servers given (--servers host:port,...)".into();
    }
    let mut by_failure: BTreeMap<&Failure, Vec<String>> = BTreeMap::new();
    for (name, failure) in view.failed() {
        by_failure.entry(failure).or_default().push(name.to_string());
    }
    let why: Vec<String> = by_failure
        .iter()
        .map(|(f, names)| format!("{} {}", list(names), f.phrase(names.len() > 1)))
        .collect();
    format!(
        "nothing is reachable: none of the {} answered ({}); check that the servers run and \
         that --servers names them",
        count(n, "server", "servers"),
        why.join("; ")
    )
}

fn no_leader(view: &View<'_>) -> String {
    let n = view.voters.len();
    let reachable = view.reachable_voters();
    let quorum = view.quorum();
    if reachable < quorum {
        let verb = if reachable == 1 { "is" } else { "are" };
        let more = quorum - reachable;
        return format!(
            "no leader: only {reachable} of {n} voters {verb} reachable ({}); a quorum needs \
             {quorum}: bring back {} to elect one",
            view.why_missing(),
            count(more, "more voter", "more voters")
        );
    }
    let term = view.reachable().map(|s| s.term).max().unwrap_or(0);
    if let Some(old) = view.stale_leader {
        return format!(
            "no leader: {} thinks it leads term {}, but the others are at term {term} and \
             elect a new one; {} is cut off from them: check its network",
            old.id, old.term, old.id
        );
    }
    format!(
        "no leader: {reachable} of {n} voters are reachable, enough for a quorum of {quorum}, \
         but none leads (highest term {term}); an election is under way, or the voters cannot \
         reach each other: run status again, and check the network between them if it stays so"
    )
}

fn elections(view: &View<'_>) -> Option<String> {
    let changes = view.reachable().map(|s| s.leader_changes_last_minute).max()?;
    if changes < ELECTIONS_PER_MINUTE {
        return None;
    }
    let slowest = view
        .reachable()
        .filter_map(|s| s.fsync_p99_us.map(|us| (us, s.id.clone())))
        // The slowest; among equals, the first by id (the same answer on every run).
        .max_by(|(a, ida), (b, idb)| a.cmp(b).then_with(|| idb.cmp(ida)));
    let fsync = match slowest {
        Some((us, id)) if us >= 1000 => {
            format!("; the slowest fsync p99 is {} on {id}", millis(us / 1000))
        }
        Some((us, id)) => format!("; the slowest fsync p99 is {us} µs on {id}"),
        None => String::new(),
    };
    Some(format!(
        "elections keep happening: {changes} leader changes in the last minute{fsync}; a slow \
         disk, a paused process or a lossy network makes followers give up on their leader"
    ))
}

#[cfg(test)]
#[path = "explain_tests.rs"]
mod tests;
