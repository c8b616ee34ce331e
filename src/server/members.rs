//! The `/cluster/*` routes: membership changes and leadership transfer (thesis chapter 4, §3.10).
//!
//! | call | success | errors |
//! |---|---|---|
//! | `GET /cluster/members` | 200 [`MembersReply`] (the leader's view) | 503 |
//! | `POST /cluster/members` [`AddMemberRequest`] | 200 once committed | 400, 409 a change in progress, 412 strict check, 503 |
//! | `POST /cluster/members/{id}/promote` | 200 once committed | 404, 409, 412 not caught up |
//! | `PUT /cluster/members/{id}` [`UpdateMemberRequest`] | 200 once committed | 404, 409 |
//! | `DELETE /cluster/members/{id}` | 200 once committed | 404, 409, 412 |
//! | `POST /cluster/leader` [`TransferRequest`] | 200 [`TransferReply`] | 404, 409, 412, 503, 504 |
//!
//! `?force=true` skips the strict check (loudly). Any node accepts these: a follower forwards them
//! to the leader, signed like any peer request.

use serde::de::DeserializeOwned;
use serde_json::Value;
use tiny_http::Method;

use super::node::Node;
use crate::api::{AddMemberRequest, TransferRequest, UpdateMemberRequest};
use crate::error::{Error, Result};
use crate::raft::MembershipChange;

/// Largest body of a `/cluster/*` request.
pub(super) const MAX_BODY: usize = 64 << 10;

/// Serves one `/cluster/*` request whose body was read (and, if a peer forwarded it, checked):
/// the JSON of the 200 answer. The HTTP layer forwards an [`Error::NotLeader`] to the leader.
pub(super) fn handle(
    node: &Node,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<Value> {
    let force = query.split('&').any(|kv| kv == "force" || kv == "force=true");
    let parts: Vec<&str> = path.trim_start_matches("/cluster/").split('/').collect();
    match (parts.as_slice(), method) {
        (["members"], Method::Get) => json(node.members()),
        (["members"], Method::Post) => {
            let AddMemberRequest { id, addr, learner, force: f } = parse(body)?;
            check_member(&id, &addr)?;
            let change = MembershipChange::Add { id, addr, learner };
            change_membership(node, change, force || f)
        }
        (["members", id, "promote"], Method::Post) => {
            let id = decode_id(id)?;
            change_membership(node, MembershipChange::Promote { id }, force)
        }
        (["members", id], Method::Put) => {
            let UpdateMemberRequest { addr } = parse(body)?;
            let id = decode_id(id)?;
            check_member(&id, &addr)?;
            change_membership(node, MembershipChange::SetAddr { id, addr }, force)
        }
        (["members", id], Method::Delete) => {
            let id = decode_id(id)?;
            change_membership(node, MembershipChange::Remove { id }, force)
        }
        (["leader"], Method::Post) => {
            let TransferRequest { to } =
                if body.is_empty() { TransferRequest::default() } else { parse(body)? };
            json(node.transfer_leadership(to))
        }
        (["members"] | ["members", _] | ["members", _, "promote"] | ["leader"], _) => {
            Err(Error::MethodNotAllowed(format!("{method} is not allowed on {path}")))
        }
        _ => Err(Error::NotFound(format!("no route {path}"))),
    }
}

fn json<T: serde::Serialize>(result: Result<T>) -> Result<Value> {
    let value = result?;
    serde_json::to_value(value).map_err(|e| Error::Internal(format!("cannot encode: {e}")))
}

fn change_membership(node: &Node, change: MembershipChange, force: bool) -> Result<Value> {
    json(node.change_membership(change, force))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("bad request body: {e}")))
}

fn decode_id(raw: &str) -> Result<String> {
    let id = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Error::BadRequest("a member id must be UTF-8".into()))?;
    if id.is_empty() || id.len() > 256 {
        return Err(Error::BadRequest("a member id must be 1 to 256 bytes".into()));
    }
    Ok(id.into_owned())
}

/// A member id is 1–256 bytes without control characters; an address is `host:port`.
fn check_member(id: &str, addr: &str) -> Result<()> {
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!("bad member id {id:?}")));
    }
    let port_ok =
        addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !port_ok || addr.len() > 256 || addr.chars().any(|c| c.is_control() || c == '/') {
        return Err(Error::BadRequest(format!("bad member address {addr:?}: expected host:port")));
    }
    Ok(())
}
