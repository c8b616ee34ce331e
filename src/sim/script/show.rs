//! How a script watches one input to the cluster and tells it: the input at the left margin,
//! what it caused indented below (role and term changes, log changes, the events the cluster
//! recorded), and the one-line status of a node.

use std::collections::{BTreeMap, BTreeSet};

use crate::raft::{Index, NodeId, RaftNode, Role, Term};
use crate::sim::{Event, SimCluster};

/// What a script shows of a running node, to tell what an input changed.
struct View {
    term: Term,
    role: String,
    /// The log's first index and the term of every entry from there on.
    first: Index,
    terms: Vec<Term>,
}

impl View {
    fn of(node: &RaftNode) -> View {
        let s = node.storage();
        let (first, last) = (s.first_index(), s.last_index());
        let terms = (first..=last).map(|i| s.term(i).unwrap_or(0)).collect();
        View { term: node.term(), role: role_name(node), first, terms }
    }

    fn term_at(&self, index: Index) -> Option<Term> {
        let offset = index.checked_sub(self.first)?;
        self.terms.get(usize::try_from(offset).ok()?).copied()
    }

    fn entries(&self) -> impl Iterator<Item = (Index, Term)> + '_ {
        (self.first..).zip(self.terms.iter().copied())
    }
}

fn views(c: &SimCluster) -> BTreeMap<NodeId, View> {
    c.nodes.iter().map(|(id, node)| (id.clone(), View::of(node))).collect()
}

/// `leader`, `candidate`, `pre-candidate`, `follower`, or `follower(n1)` once it knows its leader.
pub(super) fn role_name(node: &RaftNode) -> String {
    match node.role() {
        Role::Leader(_) => "leader".into(),
        Role::Candidate(c) if c.pre_vote => "pre-candidate".into(),
        Role::Candidate(_) => "candidate".into(),
        Role::Follower(f) => match &f.leader {
            Some(leader) => format!("follower({leader})"),
            None => "follower".into(),
        },
    }
}

/// `n2@3 follower(n1) [learner] vote=n1 last=7@3 commit=7 applied=7 [snapshot=5@2]
/// [unsynced=2]`, or `n2 down`.
pub(super) fn status_line(c: &SimCluster, id: &NodeId) -> String {
    let Some(node) = c.node(id) else {
        return format!("{id} down");
    };
    let s = node.status();
    let mut line = format!("{id}@{} {}", s.term, role_name(node));
    // What it is in the configuration it has, unless a voter: learner, removed, joining.
    let member = node.member_state();
    if member != "voter" {
        line.push_str(&format!(" {member}"));
    }
    if !node.is_leader()
        && let Some(vote) = node.storage().hard_state().voted_for
    {
        line.push_str(&format!(" vote={vote}"));
    }
    line.push_str(&format!(
        " last={}@{} commit={} applied={}",
        s.last_log_index, s.last_log_term, s.commit_index, s.last_applied
    ));
    if let Some(snap) = s.snapshot {
        line.push_str(&format!(" snapshot={}@{}", snap.index, snap.term));
    }
    let unsynced = c.unsynced(id);
    if unsynced > 0 {
        line.push_str(&format!(" unsynced={unsynced}"));
    }
    line
}

/// A leader's view of each follower: `n1 progress n2 match=5 next=6 inflight` (`inflight=3`
/// when pipelining has more than one request on its way).
pub(super) fn progress_lines(c: &SimCluster, id: &NodeId) -> Vec<String> {
    let Some(node) = c.node(id) else { return Vec::new() };
    let mut lines = Vec::new();
    for (peer, p) in node.status().progress {
        let mut line =
            format!("{id} progress {peer} match={} next={}", p.match_index, p.next_index);
        match p.inflight {
            0 => {}
            1 => line.push_str(" inflight"),
            n => line.push_str(&format!(" inflight={n}")),
        }
        if let Some(snap) = p.snapshot {
            line.push_str(&format!(" sending-snapshot={snap}"));
        }
        lines.push(line);
    }
    lines
}

/// `n1 log 1@1 2@1 3@2`, after `(snapshot 2@1)` when the log was compacted.
pub(super) fn log_line(c: &SimCluster, id: &NodeId) -> String {
    let Some(node) = c.node(id) else {
        return format!("{id} down");
    };
    let view = View::of(node);
    let mut line = format!("{id} log");
    if let Some(snap) = node.storage().snapshot() {
        line.push_str(&format!(" (snapshot {}@{})", snap.index, snap.term));
    }
    if view.terms.is_empty() {
        line.push_str(" empty");
    }
    for (index, term) in view.entries() {
        line.push_str(&format!(" {index}@{term}"));
    }
    line
}

/// What one input did.
pub(super) struct Observed<R> {
    /// What the input returned.
    pub(super) result: R,
    /// The events the cluster recorded.
    pub(super) events: Vec<Event>,
    /// With `header_from_event`: the first event's line (the delivered message, the fsync).
    pub(super) header: Option<String>,
    /// What the input caused, indented.
    pub(super) effects: Vec<String>,
}

/// Runs `input` on the cluster and tells what it did. With `header_from_event`, the first event
/// recorded (a delivery, a drop, an fsync) is the input itself and heads the lines.
pub(super) fn observe<R>(
    c: &mut SimCluster,
    header_from_event: bool,
    input: impl FnOnce(&mut SimCluster) -> R,
) -> Observed<R> {
    c.take_trace();
    let before = views(c);
    let aborted = c.aborted_reads.len();
    let result = input(c);
    let events = c.take_trace();
    let after = views(c);
    let mut lines = event_lines(&events);
    let header = if header_from_event && !lines.is_empty() { Some(lines.remove(0)) } else { None };
    // A node that crashed or restarted has a new log because of its disk, not of a message.
    let restarted: BTreeSet<&NodeId> = events
        .iter()
        .filter_map(|e| match e {
            Event::Crash { id, .. } | Event::Start(id) => Some(id),
            _ => None,
        })
        .collect();
    let mut effects = Vec::new();
    for (id, new) in &after {
        if let Some(old) = before.get(id)
            && !restarted.contains(id)
        {
            effects.extend(changes(id, old, new));
        }
    }
    effects.extend(lines);
    for (id, read) in &c.aborted_reads[aborted..] {
        effects.push(format!("{id} aborts read {read}: it no longer leads"));
    }
    let effects = effects.into_iter().map(|l| format!("  {l}")).collect();
    Observed { result, events, header, effects }
}

/// A node's role or term changing, and entries it truncated or appended.
fn changes(id: &NodeId, old: &View, new: &View) -> Vec<String> {
    let mut lines = Vec::new();
    if old.term != new.term || old.role != new.role {
        lines.push(format!("{id}@{} {} ⇨ {id}@{} {}", old.term, old.role, new.term, new.role));
    }
    let list = |entries: Vec<(Index, Term)>| {
        entries.iter().map(|(i, t)| format!("{i}@{t}")).collect::<Vec<_>>().join(" ")
    };
    // Entries below the new first index were compacted or replaced by a snapshot: not removed.
    let removed: Vec<_> =
        old.entries().filter(|&(i, t)| i >= new.first && new.term_at(i) != Some(t)).collect();
    if !removed.is_empty() {
        lines.push(format!("{id} truncates its log: removes {}", list(removed)));
    }
    let added: Vec<_> = new.entries().filter(|&(i, t)| old.term_at(i) != Some(t)).collect();
    if !added.is_empty() {
        lines.push(format!("{id} appends {}", list(added)));
    }
    lines
}

/// One line per event; a message lost as it was sent is one line, not two.
fn event_lines(events: &[Event]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut k = 0;
    while k < events.len() {
        match (&events[k], events.get(k + 1)) {
            (Event::Send(sent), Some(Event::Drop(lost, why))) if sent == lost => {
                lines.push(format!("{sent} (dropped: {why})"));
                k += 2;
                continue;
            }
            (event, _) => lines.push(event_line(event)),
        }
        k += 1;
    }
    lines
}

fn event_line(event: &Event) -> String {
    match event {
        Event::Send(m) | Event::Deliver(m) => m.to_string(),
        Event::Hold(m) => format!("{m} (waits for {}'s fsync)", m.from),
        Event::Drop(m, why) => format!("{m} (dropped: {why})"),
        Event::Sync { id, .. } => format!("{id} fsyncs"),
        Event::Apply(id, entry) => {
            let command = match entry.membership() {
                Some(m) => {
                    let ids = |set: &std::collections::BTreeMap<String, String>| {
                        set.keys().cloned().collect::<Vec<_>>().join(" ")
                    };
                    format!(
                        "(configuration: voters [{}] learners [{}])",
                        ids(&m.voters),
                        ids(&m.learners)
                    )
                }
                None if entry.is_noop() => "(no-op)".into(),
                None => String::from_utf8_lossy(&entry.command).into_owned(),
            };
            format!("{id} applies {entry} {command}")
        }
        Event::Restore(id, meta) => {
            format!("{id} restores its state machine from snapshot {}@{}", meta.index, meta.term)
        }
        Event::Read { id, read, index } => {
            format!("{id} confirms read {read}: serve it once {index} is applied")
        }
        Event::Crash { id, lost } => {
            let writes = if *lost == 1 { "write" } else { "writes" };
            format!("{id} crashes, losing {lost} unsynced {writes}")
        }
        Event::Start(id) => format!("{id} starts again from what its disk holds"),
    }
}
