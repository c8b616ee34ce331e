//! Membership and leadership transfer through the client library (`/cluster/*`).

use std::time::{Duration, Instant};

use super::{Call, Client, Kind, to_json};
use crate::api::{
    AddMemberRequest, MembersReply, TransferReply, TransferRequest, UpdateMemberRequest,
    encode_path_segment,
};
use crate::error::{Error, Result};

/// How close to the leader's log a learner must be before `add_member` promotes it (the core's
/// own rule is `raft`'s promotion limit; staying well inside it avoids a refused promotion).
const CAUGHT_UP_WITHIN: u64 = 128;

impl Client {
    /// The members as the leader sees them (each one's match index and last contact).
    pub fn members(&self) -> Result<MembersReply> {
        let text = self.execute(&Call::read("/cluster/members"))?;
        parse(&text, "members")
    }

    /// Adds a member (as a learner unless `learner` is false) and waits for the change to
    /// commit. `force` skips the strict quorum check.
    pub fn add_member(
        &self,
        id: &str,
        addr: &str,
        learner: bool,
        force: bool,
    ) -> Result<MembersReply> {
        let request = AddMemberRequest { id: id.into(), addr: addr.into(), learner, force };
        let body = to_json(&request)?;
        self.change("POST", "/cluster/members", Some(&body))
    }

    /// Promotes a learner to voter (412 until it has caught up).
    pub fn promote_member(&self, id: &str, force: bool) -> Result<MembersReply> {
        let path = format!("/cluster/members/{}/promote{}", encode_path_segment(id), forced(force));
        self.change("POST", &path, None)
    }

    /// Moves a member to a new address.
    pub fn update_member(&self, id: &str, addr: &str) -> Result<MembersReply> {
        let body = to_json(&UpdateMemberRequest { addr: addr.into() })?;
        let path = format!("/cluster/members/{}", encode_path_segment(id));
        self.change("PUT", &path, Some(&body))
    }

    /// Removes a member (the leader too: it steps down once the change commits).
    pub fn remove_member(&self, id: &str, force: bool) -> Result<MembersReply> {
        let path = format!("/cluster/members/{}{}", encode_path_segment(id), forced(force));
        self.change("DELETE", &path, None)
    }

    /// The one-step join: adds `id` as a learner, waits (up to `wait`) until it has caught up
    /// with the leader, then promotes it. The node must be started with `--join` meanwhile.
    pub fn add_and_promote(&self, id: &str, addr: &str, wait: Duration) -> Result<MembersReply> {
        let already = self.members()?.members.into_iter().find(|m| m.id == id);
        if already.is_none() {
            self.add_member(id, addr, true, false)?;
        }
        let deadline = Instant::now() + wait;
        loop {
            let view = self.members()?;
            let lead = view.members.iter().filter_map(|m| m.match_index).max().unwrap_or(0);
            let me = view.members.iter().find(|m| m.id == id);
            if me.is_some_and(|m| m.role == "voter") {
                return Ok(view);
            }
            if me.and_then(|m| m.match_index).is_some_and(|i| i + CAUGHT_UP_WITHIN >= lead) {
                match self.promote_member(id, false) {
                    Ok(view) => return Ok(view),
                    Err(Error::PreconditionFailed(_) | Error::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "{id} did not catch up within {wait:?}: is it running with --join?"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Hands leadership to `to` (or the most up-to-date voter); returns the new leader.
    pub fn transfer_leader(&self, to: Option<&str>) -> Result<TransferReply> {
        let body = to_json(&TransferRequest { to: to.map(str::to_string) })?;
        let call = membership_call("POST", "/cluster/leader", Some(&body));
        let reply: TransferReply = parse(&self.execute(&call)?, "the transfer")?;
        if !reply.addr.is_empty() {
            self.set_leader(&reply.addr);
        }
        Ok(reply)
    }

    fn change(&self, method: &'static str, path: &str, body: Option<&str>) -> Result<MembersReply> {
        let text = self.execute(&membership_call(method, path, body))?;
        parse(&text, "the membership change")
    }
}

/// A membership request: a write, without an idempotency key (the membership routes do not
/// remember them), so an unknown outcome is reported, not retried.
fn membership_call<'a>(method: &'static str, path: &'a str, body: Option<&'a str>) -> Call<'a> {
    Call { method, path, body, kind: Kind::Write, idempotency_key: None, accept_412: false }
}

fn forced(force: bool) -> &'static str {
    if force { "?force=true" } else { "" }
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Error::Internal(format!("unreadable answer to {what}: {e}")))
}
