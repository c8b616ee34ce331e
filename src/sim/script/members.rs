//! The script commands for membership: a node that joins, configuration changes and leadership
//! transfers proposed on the leader (thesis §4.1–4.2.3, §3.10), and what each node's
//! configuration is.

use super::commands::Command;
use super::show::observe;
use crate::raft::{MembershipChange, NodeId};
use crate::sim::SimCluster;

/// `add-node NODE`: a new, empty node starts; it bootstraps nothing and waits for a leader to send
/// it a configuration that holds it.
pub(super) fn add_node(
    c: &mut SimCluster,
    cmd: &Command,
    out: &mut Vec<String>,
) -> Result<(), String> {
    cmd.allow(&[], 1)?;
    let id = cmd.positional().first().copied().ok_or("`add-node` needs a node")?;
    if c.ids.iter().any(|n| n == id) {
        return Err(format!("{id} exists already"));
    }
    if c.ids.len() >= 9 {
        return Err("a script's cluster has 1 to 9 nodes".into());
    }
    c.add_node(id);
    out.push(format!("{id} starts with an empty log: it waits for a configuration that holds it"));
    Ok(())
}

/// `change add NODE [learner|voter]`, `change promote NODE`, `change remove NODE`, each with an
/// optional `force=true`: one configuration change, proposed on the current leader.
pub(super) fn change(
    c: &mut SimCluster,
    cmd: &Command,
    out: &mut Vec<String>,
) -> Result<(), String> {
    cmd.allow(&["force"], 3)?;
    let force = cmd.key::<bool>("force")?.unwrap_or(false);
    let words = cmd.positional();
    let usage = "`change` takes `add NODE [learner|voter]`, `promote NODE` or `remove NODE`";
    let (what, id) = match words[..] {
        [what, id] | [what, id, _] => (what, id.to_string()),
        _ => return Err(usage.into()),
    };
    let change = match (what, words.get(2).copied()) {
        ("add", None | Some("learner")) => {
            MembershipChange::Add { addr: format!("{id}:1"), id: id.clone(), learner: true }
        }
        ("add", Some("voter")) => {
            MembershipChange::Add { addr: format!("{id}:1"), id: id.clone(), learner: false }
        }
        ("promote", None) => MembershipChange::Promote { id: id.clone() },
        ("remove", None) => MembershipChange::Remove { id: id.clone() },
        _ => return Err(usage.into()),
    };
    let told = words.join(" ");
    let Some(leader) = c.current_leader() else {
        out.push(format!("no leader to propose {told}"));
        return Ok(());
    };
    let seen = observe(c, false, |c| {
        let node = c.nodes.get_mut(&leader).expect("a running leader");
        node.propose_membership(change, force).map(|(index, term, output)| {
            c.handle_output(&leader, output);
            (index, term)
        })
    });
    out.push(match seen.result {
        Ok((index, term)) => format!("{leader} proposes {told}: entry {index}@{term}"),
        Err(e) => format!("{leader} refuses {told}: {e}"),
    });
    out.extend(seen.effects);
    Ok(())
}

/// `transfer [NODE]`: the leader hands its leadership to NODE (or to the most up-to-date voter).
pub(super) fn transfer(
    c: &mut SimCluster,
    cmd: &Command,
    out: &mut Vec<String>,
) -> Result<(), String> {
    cmd.allow(&[], 1)?;
    let to = cmd.positional().first().map(|t| t.to_string());
    let Some(leader) = c.current_leader() else {
        out.push("no leader to transfer leadership".into());
        return Ok(());
    };
    let seen = observe(c, false, |c| {
        let node = c.nodes.get_mut(&leader).expect("a running leader");
        node.transfer_leadership(to.clone()).map(|(target, output)| {
            c.handle_output(&leader, output);
            target
        })
    });
    out.push(match seen.result {
        Ok(target) => format!("{leader} transfers its leadership to {target}"),
        Err(e) => {
            let to = to.map_or(String::new(), |t| format!(" to {t}"));
            format!("{leader} refuses to transfer its leadership{to}: {e}")
        }
    });
    out.extend(seen.effects);
    Ok(())
}

/// `members [NODES]`: the configuration each node has in force, the entry that holds it, and
/// whether that entry is committed (as far as the node knows).
pub(super) fn members(c: &SimCluster, cmd: &Command, out: &mut Vec<String>) -> Result<(), String> {
    cmd.allow(&[], usize::MAX)?;
    for id in cmd.nodes(c)? {
        out.push(members_line(c, &id));
    }
    Ok(())
}

fn members_line(c: &SimCluster, id: &NodeId) -> String {
    let Some(node) = c.node(id) else { return format!("{id} down") };
    let Some(m) = node.membership() else {
        return format!("{id} has no configuration yet");
    };
    let ids = |set: &std::collections::BTreeMap<String, String>| {
        set.keys().cloned().collect::<Vec<_>>().join(" ")
    };
    let at = node.config_index();
    let state = if node.log().commit_index >= at { "committed" } else { "not committed yet" };
    format!(
        "{id} configuration at {at} ({state}): voters [{}] learners [{}]",
        ids(&m.voters),
        ids(&m.learners)
    )
}
