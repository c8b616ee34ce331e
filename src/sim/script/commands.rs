//! The commands a script runs, over a [`SimCluster`] in manual mode (see the table in the
//! module docs of `script`).

use std::collections::BTreeMap;
use std::str::FromStr;

use super::members;
use super::show::{self, observe};
use crate::raft::{Config, Envelope, Message, NodeId};
use crate::sim::net::InFlight;
use crate::sim::{Event, SimCluster};

/// Runs a script's blocks one after the other, over one cluster.
#[derive(Default)]
pub(super) struct Runner {
    cluster: Option<SimCluster>,
}

/// Whether a command changed the cluster (the block then ends with every node's status) or only
/// looked at it.
#[derive(PartialEq, Eq)]
enum Kind {
    Change,
    Query,
}

/// One command line: its name and its words, `key=value` or positional.
pub(super) struct Command<'a> {
    name: &'a str,
    words: Vec<&'a str>,
}

impl<'a> Command<'a> {
    fn parse(line: &'a str) -> Self {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or("");
        Command { name, words: words.collect() }
    }

    pub(super) fn positional(&self) -> Vec<&'a str> {
        self.words.iter().copied().filter(|w| !w.contains('=')).collect()
    }

    fn keys(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.words.iter().filter_map(|w| w.split_once('='))
    }

    /// Refuses keys outside `allowed` and more than `max_positional` other words.
    pub(super) fn allow(&self, allowed: &[&str], max_positional: usize) -> Result<(), String> {
        if let Some((key, _)) = self.keys().find(|(k, _)| !allowed.contains(k)) {
            return Err(format!(
                "`{}` takes no argument `{key}` (it takes {allowed:?})",
                self.name
            ));
        }
        if self.positional().len() > max_positional {
            return Err(format!("`{}` takes at most {max_positional} plain arguments", self.name));
        }
        Ok(())
    }

    pub(super) fn key<T: FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        match self.keys().find(|(k, _)| *k == key) {
            None => Ok(None),
            Some((_, v)) => v.parse().map(Some).map_err(|_| format!("bad value `{v}` for {key}")),
        }
    }

    /// The nodes named by the plain arguments, or all of them when none is named.
    pub(super) fn nodes(&self, c: &SimCluster) -> Result<Vec<NodeId>, String> {
        let named = self.positional();
        if named.is_empty() {
            return Ok(c.ids.clone());
        }
        named.into_iter().map(|id| node_id(c, id)).collect()
    }

    /// Exactly one node, the first plain argument.
    fn node(&self, c: &SimCluster) -> Result<NodeId, String> {
        let first = self.positional().first().copied();
        first.ok_or(format!("`{}` needs a node", self.name)).and_then(|id| node_id(c, id))
    }
}

fn node_id(c: &SimCluster, id: &str) -> Result<NodeId, String> {
    c.ids.iter().find(|n| *n == id).cloned().ok_or(format!("unknown node `{id}`"))
}

impl Runner {
    /// Runs one block of command lines (`(line number, text)`) and returns its output.
    pub(super) fn block(&mut self, commands: &[(usize, &str)]) -> Result<Vec<String>, String> {
        let mut output = Vec::new();
        let (mut changed, mut ends_with_query) = (false, false);
        for &(line_no, text) in commands {
            let text = text.split(" #").next().unwrap_or(text).trim();
            let (silent, text) = match text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
                Some(inner) => (true, inner.trim()),
                None => (false, text),
            };
            let mut out = Vec::new();
            let kind = self
                .exec(&Command::parse(text), &mut out)
                .map_err(|e| format!("line {line_no}: {e} (in `{text}`)"))?;
            if !silent {
                output.extend(out);
            }
            changed |= kind == Kind::Change;
            ends_with_query = kind == Kind::Query;
        }
        if changed
            && !ends_with_query
            && let Some(c) = &self.cluster
        {
            output.extend(c.ids.iter().map(|id| show::status_line(c, id)));
        }
        Ok(output)
    }

    fn exec(&mut self, cmd: &Command, out: &mut Vec<String>) -> Result<Kind, String> {
        if cmd.name == "cluster" {
            self.cluster = Some(new_cluster(cmd)?);
            return Ok(Kind::Change);
        }
        let c = self.cluster.as_mut().ok_or("no cluster yet: begin with `cluster n=3`")?;
        match cmd.name {
            "tick" => tick(c, cmd, out)?,
            "campaign" => campaign(c, cmd, out)?,
            "deliver" => deliver(c, cmd, out)?,
            "drop" => drop_messages(c, cmd, out)?,
            "sync" => sync(c, cmd, out)?,
            "stabilize" => stabilize(c, cmd, out)?,
            "propose" | "read" | "read-lease" => client(c, cmd, out)?,
            "partition" | "cut" | "heal" => links(c, cmd, out)?,
            "crash" | "restart" => crash(c, cmd, out)?,
            "snapshot" => snapshot(c, cmd, out)?,
            "add-node" => members::add_node(c, cmd, out)?,
            "change" => members::change(c, cmd, out)?,
            "transfer" => members::transfer(c, cmd, out)?,
            "members" => {
                members::members(c, cmd, out)?;
                return Ok(Kind::Query);
            }
            "status" | "log" | "net" => {
                show_state(c, cmd, out)?;
                return Ok(Kind::Query);
            }
            other => return Err(format!("unknown command `{other}`")),
        }
        Ok(Kind::Change)
    }
}

/// The `cluster` knobs that change each node's [`Config`].
#[derive(Clone, Copy)]
struct Knobs {
    pre_vote: Option<bool>,
    check_quorum: Option<bool>,
    heartbeat: Option<u64>,
    election: Option<(u64, u64)>,
    rpc_timeout: Option<u64>,
    max_entries: Option<usize>,
    inflight: Option<usize>,
    lease: Option<u64>,
}

impl Knobs {
    fn apply(self, config: &mut Config) {
        if let Some(v) = self.pre_vote {
            config.pre_vote = v;
        }
        if let Some(v) = self.check_quorum {
            config.check_quorum = v;
        }
        if let Some(v) = self.heartbeat {
            config.heartbeat_ticks = v;
        }
        if let Some((min, max)) = self.election {
            (config.election_ticks_min, config.election_ticks_max) = (min, max);
        }
        if let Some(v) = self.rpc_timeout {
            config.rpc_timeout_ticks = v;
        }
        if let Some(v) = self.max_entries {
            config.max_append_entries = v;
        }
        if let Some(v) = self.inflight {
            config.max_inflight = v;
        }
        if let Some(v) = self.lease {
            config.lease_ms = v;
        }
    }
}

fn new_cluster(cmd: &Command) -> Result<SimCluster, String> {
    let keys = ["n", "seed", "prevote", "check_quorum", "heartbeat", "election"];
    cmd.allow(
        &[&keys[..], &["rpc_timeout", "max_entries", "inflight", "trailing", "lease"]].concat(),
        0,
    )?;
    let n: usize = cmd.key("n")?.unwrap_or(3);
    if !(1..=9).contains(&n) {
        return Err("a script's cluster has 1 to 9 nodes".into());
    }
    let election = match cmd.key::<String>("election")? {
        None => None,
        Some(range) => {
            let bad = || format!("election takes MIN..MAX ticks, not `{range}`");
            let (min, max) = range.split_once("..").ok_or_else(bad)?;
            Some((min.parse().map_err(|_| bad())?, max.parse().map_err(|_| bad())?))
        }
    };
    let knobs = Knobs {
        pre_vote: cmd.key("prevote")?,
        check_quorum: cmd.key("check_quorum")?,
        heartbeat: cmd.key("heartbeat")?,
        election,
        rpc_timeout: cmd.key("rpc_timeout")?,
        max_entries: cmd.key("max_entries")?,
        inflight: cmd.key("inflight")?,
        lease: cmd.key("lease")?,
    };
    let mut probe = Config::new("n1", vec!["n2".into()]);
    knobs.apply(&mut probe);
    probe.validate().map_err(|e| e.to_string())?;
    let mut c = SimCluster::with_config(n, cmd.key("seed")?.unwrap_or(1), move |cfg| {
        knobs.apply(cfg);
    });
    c.manual();
    c.snapshot_trailing = cmd.key("trailing")?.unwrap_or(0);
    // Every founder wrote its bootstrap (term 1 and the configuration entry 1@1) as it started;
    // a script begins once those writes are durable, from clean disks.
    for id in c.ids.clone() {
        c.sync(&id);
    }
    c.take_trace();
    Ok(c)
}

fn ticks_line(id: &NodeId, n: u64) -> String {
    format!("{id} ticks {n} time{}", if n == 1 { "" } else { "s" })
}

/// `tick [NODES] [N]`: N rounds, each ticking every named node once. A node's ticks are printed
/// when they cause something (`n1 ticks 5 times`, then what happened), and the rest at the end.
fn tick(c: &mut SimCluster, cmd: &Command, out: &mut Vec<String>) -> Result<(), String> {
    cmd.allow(&[], usize::MAX)?;
    let (numbers, named): (Vec<&str>, Vec<&str>) =
        cmd.positional().into_iter().partition(|w| w.starts_with(|ch: char| ch.is_ascii_digit()));
    let count: u64 = match numbers[..] {
        [] => 1,
        [n] => n.parse().map_err(|_| format!("bad tick count `{n}`"))?,
        _ => return Err("`tick` takes one count".into()),
    };
    let ids: Vec<NodeId> = if named.is_empty() {
        c.ids.iter().filter(|id| c.is_up(id)).cloned().collect()
    } else {
        named.into_iter().map(|id| node_id(c, id)).collect::<Result<_, _>>()?
    };
    let mut since: BTreeMap<NodeId, u64> = BTreeMap::new();
    for id in ids.iter().filter(|id| !c.is_up(id)) {
        out.push(format!("{id} is down: it does not tick"));
    }
    for _ in 0..count {
        for id in &ids {
            if !c.is_up(id) {
                continue;
            }
            let ticks = since.entry(id.clone()).or_default();
            *ticks += 1;
            let n = *ticks;
            let seen = observe(c, false, |c| c.tick_node(id));
            if !seen.effects.is_empty() {
                out.push(ticks_line(id, n));
                out.extend(seen.effects);
                since.insert(id.clone(), 0);
            }
        }
    }
    out.extend(since.iter().filter(|(_, n)| **n > 0).map(|(id, n)| ticks_line(id, *n)));
    Ok(())
}

/// `campaign NODE`: ticks it until its election timeout fires and it asks for (pre-)votes.
fn campaign(c: &mut SimCluster, cmd: &Command, out: &mut Vec<String>) -> Result<(), String> {
    cmd.allow(&[], 1)?;
    let id = cmd.node(c)?;
    let node = c.node(&id).ok_or(format!("{id} is down"))?;
    if node.is_leader() {
        return Err(format!("{id} leads already"));
    }
    let limit = node.config().election_ticks_max + 1;
    let mut since = 0;
    for _ in 0..limit {
        since += 1;
        let seen = observe(c, false, |c| c.tick_node(&id));
        let asks = |e: &Event| match e {
            Event::Send(m) | Event::Hold(m) => {
                m.from == id && matches!(m.message, Message::RequestVote(_))
            }
            _ => false,
        };
        let campaigned = seen.events.iter().any(asks) || c.node(&id).is_some_and(|n| n.is_leader());
        if !seen.effects.is_empty() || campaigned {
            out.push(ticks_line(&id, since));
            out.extend(seen.effects);
            since = 0;
        }
        if campaigned {
            return Ok(());
        }
    }
    Err(format!("{id}'s election timeout did not fire in {limit} ticks"))
}

/// Which in-flight messages a `deliver` or `drop` picks.
struct Filter {
    from: Option<Vec<NodeId>>,
    to: Option<Vec<NodeId>>,
    kinds: Option<Vec<String>>,
}

impl Filter {
    fn parse(c: &SimCluster, cmd: &Command) -> Result<Self, String> {
        cmd.allow(&["from", "to", "type"], 0)?;
        let nodes = |key| -> Result<Option<Vec<NodeId>>, String> {
            let Some(list) = cmd.key::<String>(key)? else { return Ok(None) };
            list.split(',').map(|id| node_id(c, id)).collect::<Result<_, _>>().map(Some)
        };
        let kinds = match cmd.key::<String>("type")? {
            None => None,
            Some(list) => {
                let kinds: Vec<String> = list.split(',').map(String::from).collect();
                if let Some(bad) = kinds.iter().find(|k| !Message::KINDS.contains(&k.as_str())) {
                    let known = Message::KINDS;
                    return Err(format!("unknown message type `{bad}` (known: {known:?})"));
                }
                Some(kinds)
            }
        };
        Ok(Filter { from: nodes("from")?, to: nodes("to")?, kinds })
    }

    fn matches(&self, e: &Envelope) -> bool {
        self.from.as_ref().is_none_or(|f| f.contains(&e.from))
            && self.to.as_ref().is_none_or(|t| t.contains(&e.to))
            && self.kinds.as_ref().is_none_or(|k| k.iter().any(|k| k == e.message.kind()))
    }
}

/// The send order of every message in flight that `pick` picks, oldest first.
fn in_flight(c: &SimCluster, pick: impl Fn(&Envelope) -> bool) -> Vec<u64> {
    let mut orders: Vec<u64> =
        c.queue.iter().filter(|m| pick(&m.0.env)).map(|m| m.0.order).collect();
    orders.sort_unstable();
    orders
}

/// Takes the message sent `order`th out of the network.
fn take_in_flight(c: &mut SimCluster, order: u64) -> Option<InFlight> {
    let (mut chosen, rest): (Vec<_>, Vec<_>) =
        std::mem::take(&mut c.queue).into_vec().into_iter().partition(|m| m.0.order == order);
    c.queue.extend(rest);
    chosen.pop().map(|m| m.0)
}

fn deliver_one(c: &mut SimCluster, order: u64, out: &mut Vec<String>) {
    let seen = observe(c, true, |c| {
        if let Some(m) = take_in_flight(c, order) {
            c.deliver(m.env);
        }
    });
    out.extend(seen.header);
    out.extend(seen.effects);
}

fn deliver(c: &mut SimCluster, cmd: &Command, out: &mut Vec<String>) -> Result<(), String> {
    let filter = Filter::parse(c, cmd)?;
    let chosen = in_flight(c, |e| filter.matches(e));
    if chosen.is_empty() {
        out.push("no message to deliver".into());
    }
    for order in chosen {
        deliver_one(c, order, out);
    }
    Ok(())
}

fn drop_messages(c: &mut SimCluster, cmd: &Command, out: &mut Vec<String>) -> Result<(), String> {
    let filter = Filter::parse(c, cmd)?;
    let chosen = in_flight(c, |e| filter.matches(e));
    if chosen.is_empty() {
        out.push("no message to drop".into());
    }
    for order in chosen {
        if let Some(m) = take_in_flight(c, order) {
            out.push(format!("{} (dropped)", m.env));
            // As for any lost snapshot transfer, the sender hears of it.
            c.snapshot_call_failed(&m.env);
        }
    }
    Ok(())
}

fn sync_one(c: &mut SimCluster, id: &NodeId, out: &mut Vec<String>) {
    if !c.is_up(id) {
        out.push(format!("{id} is down"));
        return;
    }
    let seen = observe(c, true, |c| c.sync(id));
    out.extend(seen.header);
    out.extend(seen.effects);
}

fn sync(c: &mut SimCluster, cmd: &Command, out: &mut Vec<String>) -> Result<(), String> {
    cmd.allow(&[], usize::MAX)?;
    for id in cmd.nodes(c)? {
        sync_one(c, &id, out);
    }
    Ok(())
}

/// Delivers every message in flight, then syncs every node something waits on, over and over.
fn stabilize(c: &mut SimCluster, cmd: &Command, out: &mut Vec<String>) -> Result<(), String> {
    cmd.allow(&[], 0)?;
    for _ in 0..1000 {
        let orders = in_flight(c, |_| true);
        let mut progress = !orders.is_empty();
        for order in orders {
            deliver_one(c, order, out);
        }
        for id in c.ids.clone() {
            if c.waits_for_sync(&id) {
                sync_one(c, &id, out);
                progress = true;
            }
        }
        if !progress {
            return Ok(());
        }
    }
    Err("the cluster did not settle in 1000 rounds".into())
}

/// `propose NODE COMMAND...` and `read NODE ID`: a client's request, which a node that does not
/// lead refuses.
fn client(c: &mut SimCluster, cmd: &Command, out: &mut Vec<String>) -> Result<(), String> {
    let id = cmd.node(c)?;
    let rest = cmd.words[1..].join(" ");
    if rest.is_empty() {
        return Err(format!("`{}` needs a node and a command or read id", cmd.name));
    }
    let read_id = match cmd.name {
        "read" | "read-lease" => {
            Some(rest.parse::<u64>().map_err(|_| format!("bad read id `{rest}`"))?)
        }
        _ => None,
    };
    if !c.is_up(&id) {
        out.push(format!("{id} is down"));
        return Ok(());
    }
    let lease = cmd.name == "read-lease";
    let seen = observe(c, false, |c| {
        let node = c.nodes.get_mut(&id).expect("checked up");
        let now_ms = node.ticks() * crate::sim::TICK_MS;
        let result = match read_id {
            Some(r) if lease => node.read_lease(r, now_ms).map(|(by, o)| (Err(by), o)),
            Some(r) => node.read(r).map(|o| (Err(false), o)),
            None => node.propose(rest.clone().into_bytes()).map(|(i, t, o)| (Ok((i, t)), o)),
        };
        result.map(|(at, output)| {
            c.handle_output(&id, output);
            at
        })
    });
    out.push(match seen.result {
        Ok(Ok((index, term))) => format!("{id} proposes {rest:?}: entry {index}@{term}"),
        Ok(Err(true)) => format!("{id} holds its lease: read {rest} needs no round"),
        Ok(Err(false)) if lease => format!("{id} has no lease: read {rest} is a ReadIndex round"),
        Ok(Err(false)) => format!("{id} starts read {rest}"),
        Err(e) => format!("{id} refuses {} {rest:?}: {e}", cmd.name),
    });
    out.extend(seen.effects);
    Ok(())
}

fn links(c: &mut SimCluster, cmd: &Command, out: &mut Vec<String>) -> Result<(), String> {
    match cmd.name {
        "partition" => {
            cmd.allow(&[], usize::MAX)?;
            if cmd.positional().is_empty() {
                return Err("`partition` needs the nodes of one side".into());
            }
            let side = cmd.nodes(c)?;
            let rest: Vec<NodeId> = c.ids.iter().filter(|id| !side.contains(id)).cloned().collect();
            c.partition(&[side.clone(), rest.clone()]);
            out.push(format!("{} | {} (every link across is cut)", side.join(" "), rest.join(" ")));
        }
        "cut" => {
            cmd.allow(&["from", "to"], 0)?;
            let get = |key| cmd.key::<String>(key)?.ok_or(format!("`cut` needs {key}="));
            let (from, to) = (node_id(c, &get("from")?)?, node_id(c, &get("to")?)?);
            c.cut_link(&from, &to);
            out.push(format!("{from} -> {to} cut (one way)"));
        }
        _ => {
            cmd.allow(&[], 0)?;
            c.heal();
            out.push("all links restored".into());
        }
    }
    Ok(())
}

fn crash(c: &mut SimCluster, cmd: &Command, out: &mut Vec<String>) -> Result<(), String> {
    cmd.allow(&[], 1)?;
    let id = cmd.node(c)?;
    let seen = match cmd.name {
        "crash" => observe(c, true, |c| c.crash(&id)),
        _ => observe(c, true, |c| c.restart(&id)),
    };
    out.push(seen.header.unwrap_or(format!("{id} is down already")));
    out.extend(seen.effects);
    Ok(())
}

fn snapshot(c: &mut SimCluster, cmd: &Command, out: &mut Vec<String>) -> Result<(), String> {
    cmd.allow(&[], 1)?;
    let id = cmd.node(c)?;
    out.push(match c.take_snapshot(&id) {
        Some(meta) => {
            let first = c.node(&id).map_or(0, |n| n.log().first_index());
            format!(
                "{id} snapshots its state machine at {}@{}; its log now begins at {first}",
                meta.index, meta.term
            )
        }
        None => format!("{id} has no applied entry to snapshot (or is down)"),
    });
    Ok(())
}

/// `status`, `log` and `net`: what the nodes and the network hold, changing nothing.
fn show_state(c: &SimCluster, cmd: &Command, out: &mut Vec<String>) -> Result<(), String> {
    if cmd.name == "net" {
        cmd.allow(&[], 0)?;
        for order in in_flight(c, |_| true) {
            if let Some(m) = c.queue.iter().find(|m| m.0.order == order) {
                out.push(format!("{} (in flight)", m.0.env));
            }
        }
        for id in &c.ids {
            out.extend(c.held(id).iter().map(|m| format!("{m} (waits for {id}'s fsync)")));
        }
        if out.is_empty() {
            out.push("no message in flight or waiting".into());
        }
        return Ok(());
    }
    cmd.allow(&[], usize::MAX)?;
    for id in cmd.nodes(c)? {
        if cmd.name == "log" {
            out.push(show::log_line(c, &id));
        } else {
            out.push(show::status_line(c, &id));
            out.extend(show::progress_lines(c, &id).into_iter().map(|l| format!("  {l}")));
        }
    }
    Ok(())
}
