//! How a [`Client`] call reaches the cluster: the target (the cached leader, or the next server
//! in turn), one attempt, the retry rules of the [module docs](super) (what is retried, when
//! the leader is rediscovered, the backoff), and how a failed attempt becomes the caller's error.

use super::*;

impl Client {
    /// Runs one call with the retry rules of the module docs, returning the body of the 200 answer.
    pub(super) fn execute(&self, call: &Call<'_>) -> Result<String> {
        if self.servers.is_empty() {
            return Err(no_servers());
        }
        let started = Instant::now();
        let deadline = deadline_after(started, self.options.retry_deadline);
        let mut backoff = self.options.backoff_initial;
        let mut attempts = 0u32;
        let mut just_redirected = false;
        // An idempotent write whose earlier attempt may have been applied: if the deadline comes
        // before a definite answer, its outcome is unknown (not "not applied").
        let retry_unknown = call.kind == Kind::Write && call.idempotency_key.is_some();
        let mut maybe_applied = false;
        self.maybe_discover();
        loop {
            let target = self.target();
            attempts += 1;
            let failure = match self.attempt(&target, call, self.options.request_timeout) {
                Ok(text) => return Ok(text),
                Err(f) => f,
            };
            log::debug!(
                "{} {} on {target} failed (attempt {attempts}): {failure:?}",
                call.method,
                call.path
            );
            let mut redirect = false;
            let err = match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::NotSent(msg) => {
                    self.server_failed(&target);
                    Error::Unavailable(format!("{target}: {msg}"))
                }
                Failure::MaybeSent(msg) if retry_unknown => {
                    self.server_failed(&target);
                    maybe_applied = true;
                    Error::OutcomeUnknown(format!("{target}: no answer came back ({msg})"))
                }
                Failure::MaybeSent(msg) => {
                    self.server_failed(&target);
                    if call.kind == Kind::Write {
                        return Err(Error::OutcomeUnknown(format!(
                            "{target}: the request was sent but no answer came back ({msg}); \
                             the write may or may not have been applied"
                        )));
                    }
                    Error::Unavailable(format!("{target}: {msg}"))
                }
                Failure::Status { error, leader_addr } => match error {
                    Error::Unavailable(_) | Error::NotLeader { .. } => {
                        match leader_addr.map(|a| normalize_addr(&a)) {
                            Some(hint) if !hint.is_empty() && hint != target => {
                                self.set_leader(&hint);
                                redirect = !just_redirected;
                            }
                            _ => self.server_failed(&target),
                        }
                        error
                    }
                    Error::OutcomeUnknown(_) if retry_unknown => {
                        self.server_failed(&target);
                        maybe_applied = true;
                        error
                    }
                    Error::OutcomeUnknown(_) if call.kind == Kind::Write => {
                        self.server_failed(&target);
                        return Err(error);
                    }
                    e if call.kind == Kind::Read && e.status() >= 500 => {
                        self.server_failed(&target);
                        e
                    }
                    e => return Err(e),
                },
            };
            let now = Instant::now();
            if now >= deadline && maybe_applied {
                return Err(Error::OutcomeUnknown(format!(
                    "gave up after {attempts} attempt(s) in {:.1}s; an attempt may have been \
                     applied (retries with its idempotency key could not learn the outcome); \
                     last error: {err}",
                    (now - started).as_secs_f64()
                )));
            }
            if now >= deadline {
                return Err(Error::Unavailable(format!(
                    "gave up after {attempts} attempt(s) in {:.1}s; last error: {err}",
                    (now - started).as_secs_f64()
                )));
            }
            just_redirected = redirect;
            if !redirect {
                std::thread::sleep(jittered(backoff).min(deadline - now));
                backoff = backoff.saturating_mul(2).min(self.options.backoff_max);
            }
        }
    }

    /// One request to one server. Ok is the body of a 200 answer.
    pub(super) fn attempt(
        &self,
        server: &str,
        call: &Call<'_>,
        timeout: Duration,
    ) -> Result<String, Failure> {
        let url = format!("http://{server}{}", call.path);
        let agent = if call.kind == Kind::Write { &self.write_agent } else { &self.agent };
        let mut request = agent.request(call.method, &url).timeout(timeout);
        if let Some(key) = &call.idempotency_key {
            request = request.set("Idempotency-Key", key);
        }
        let result = match call.body {
            Some(body) => request.set("Content-Type", "application/json").send_string(body),
            None => request.call(),
        };
        match result {
            Ok(response) => read_body(response).map_err(|e| match call.kind {
                // The server answered 200: the write has been applied even if the body is lost.
                Kind::Write => Failure::Fatal(Error::Internal(format!(
                    "{server} answered 200 (the write was applied) but the body could not be \
                     read: {e}"
                ))),
                Kind::Read => Failure::MaybeSent(format!("reading the answer failed: {e}")),
            }),
            Err(ureq::Error::Status(412, response)) if call.accept_412 => read_body(response)
                .map_err(|e| Failure::MaybeSent(format!("reading the 412 answer failed: {e}"))),
            Err(e) => Err(classify(e)),
        }
    }

    /// A write to send: with an idempotency key unless [`ClientOptions::idempotent_writes`] is
    /// off.
    pub(super) fn write_call<'a>(
        &self,
        method: &'static str,
        path: &'a str,
        body: Option<&'a str>,
    ) -> Call<'a> {
        let idempotency_key =
            self.options.idempotent_writes.then(|| format!("{:032x}", rand::random::<u128>()));
        Call { method, path, body, kind: Kind::Write, idempotency_key, accept_412: false }
    }

    /// Where the next attempt goes: the cached leader, or the next server in turn.
    pub(super) fn target(&self) -> String {
        let state = self.state.lock();
        match &state.leader {
            Some(leader) => leader.clone(),
            None => self.servers[state.next % self.servers.len()].clone(),
        }
    }

    pub(super) fn set_leader(&self, leader: &str) {
        let mut state = self.state.lock();
        if state.leader.as_deref() != Some(leader) {
            log::debug!("leader is now {leader}");
            state.leader = Some(leader.to_string());
        }
    }

    /// `server` failed: forget it as leader, and move the rotation past it.
    pub(super) fn server_failed(&self, server: &str) {
        let mut state = self.state.lock();
        if state.leader.as_deref() == Some(server) {
            state.leader = None;
        }
        let n = self.servers.len();
        if n > 0 && self.servers[state.next % n] == server {
            state.next = (state.next + 1) % n;
        }
    }

    /// If no leader is cached, ask one server (the next in turn that answers) who leads. Cheap and
    /// best effort: failures are ignored, and it runs at most once per second.
    pub(super) fn maybe_discover(&self) {
        if !self.options.discover_leader || self.servers.is_empty() {
            return;
        }
        let start = {
            let mut state = self.state.lock();
            if state.leader.is_some()
                || state.last_discovery.is_some_and(|t| t.elapsed() < REDISCOVER_INTERVAL)
            {
                return;
            }
            state.last_discovery = Some(Instant::now());
            state.next
        };
        let call = Call::read("/status");
        let timeout = self.options.request_timeout.min(DISCOVERY_TIMEOUT);
        let n = self.servers.len();
        for i in 0..n {
            let server = &self.servers[(start + i) % n];
            let text = match self.attempt(server, &call, timeout) {
                Ok(text) => text,
                Err(Failure::NotSent(_)) => {
                    // Down: skip it in the rotation too, so the operation does not wait on it again.
                    self.server_failed(server);
                    continue;
                }
                Err(_) => continue,
            };
            if let Ok(status) = parse_status(server, &text)
                && let Some(leader) = leader_of(server, &status)
            {
                self.set_leader(&leader);
            }
            return;
        }
    }
}

pub(super) fn no_servers() -> Error {
    Error::Unavailable("no servers configured".into())
}

/// Turns a single-attempt failure into the error a caller sees.
pub(super) fn failure_to_error(server: &str, failure: Failure) -> Error {
    match failure {
        Failure::NotSent(m) | Failure::MaybeSent(m) => Error::Unavailable(format!("{server}: {m}")),
        Failure::Status { error, .. } => error,
        Failure::Fatal(e) => e,
    }
}

/// The ureq agent: keep-alive pool, connect timeout, no redirects (the API never redirects, and
/// a redirected POST would be re-sent).
pub(crate) fn make_agent(options: &ClientOptions) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(options.connect_timeout)
        .redirects(0)
        .user_agent(concat!("raftlabkv-client/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The agent for writes: like [`make_agent`], without a connection pool. ureq re-sends a request
/// it deems idempotent (GET, and DELETE) on a new connection when a *pooled* connection closes
/// before the answer; for a DELETE that already reached the server that is a second delete — one
/// that can undo a put committed in between — and if the resend cannot connect, the failure looks
/// like "not sent" and the delete would be retried on another server. On a fresh connection each
/// write is sent exactly once.
pub(crate) fn make_write_agent(options: &ClientOptions) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(options.connect_timeout)
        .redirects(0)
        .max_idle_connections(0)
        .user_agent(concat!("raftlabkv-client/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Reads a body up to [`MAX_BODY`] bytes (ureq's own `into_string` stops at 10 MB). Reading to the
/// end also returns the connection to the keep-alive pool.
pub(crate) fn read_body(response: ureq::Response) -> std::io::Result<String> {
    let mut text = String::new();
    response.into_reader().take(MAX_BODY).read_to_string(&mut text)?;
    Ok(text)
}

/// Sorts a ureq error into the categories the retry rules need, reading the error body of an
/// HTTP error status.
pub(crate) fn classify(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Status(status, response) => {
            let body = read_body(response).unwrap_or_default();
            let (error, leader_addr) = parse_error_body(status, &body);
            Failure::Status { error, leader_addr }
        }
        ureq::Error::Transport(t) => match t.kind() {
            ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
                Failure::NotSent(t.to_string())
            }
            ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => {
                Failure::Fatal(Error::BadRequest(format!("bad server address: {t}")))
            }
            _ => Failure::MaybeSent(t.to_string()),
        },
    }
}

/// Rebuilds the crate error from an error answer — an [`ErrorBody`] if it is one, else the raw
/// text (shortened), else just the status — and the leader address it names, if any.
pub(crate) fn parse_error_body(status: u16, body: &str) -> (Error, Option<String>) {
    let mut parsed: ErrorBody = serde_json::from_str(body).unwrap_or_default();
    let hint = parsed.leader_hint().map(str::to_string);
    let message = match (parsed.message.take(), &parsed.error) {
        (Some(m), _) => m,
        (None, Some(code)) => code.clone(),
        (None, None) => {
            let text = body.trim();
            if text.is_empty() {
                format!("HTTP {status} with an empty body")
            } else {
                shorten(text, 200)
            }
        }
    };
    (parsed.into_error(status, message), hint)
}

pub(super) fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
