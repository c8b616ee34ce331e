//! The client's tunables ([`ClientOptions`]) and the builder that sets them ([`ClientBuilder`]).

use std::time::Duration;

use super::Client;

/// Tunables of a [`Client`]. `ClientOptions::default()` suits a local cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Longest wait for one request's answer (connect + send + response). A write whose answer
    /// does not come in time is reported as [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown). Should be longer than the
    /// server's own commit timeout, so that the server's 504 arrives first. Default 5 s.
    pub request_timeout: Duration,
    /// Longest wait for a TCP connection. A connect timeout is a "not sent" failure, retried on
    /// the next server. Default 1 s.
    pub connect_timeout: Duration,
    /// No new attempt is started once this much time has passed since the operation began.
    /// Default 10 s (enough for a few election rounds).
    pub retry_deadline: Duration,
    /// First backoff step. Default 50 ms.
    pub backoff_initial: Duration,
    /// Largest backoff step. Default 1 s.
    pub backoff_max: Duration,
    /// Ask `/status` for the leader when none is cached. Default true. When false, the leader is
    /// only learnt from `leaderAddr` hints and explicit [`Client::leader`] calls.
    pub discover_leader: bool,
    /// Give every write an `Idempotency-Key` and retry it (with the same key) after a 504 or a
    /// lost answer, until a definite answer or the retry deadline; see the module docs of
    /// [`crate::client`]. Default true. When false, such a write is reported as
    /// [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown) at once.
    pub idempotent_writes: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            retry_deadline: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            discover_leader: true,
            idempotent_writes: true,
        }
    }
}

/// Builds a [`Client`] with non-default [`ClientOptions`].
///
/// ```
/// use std::time::Duration;
/// let client = raftlabkv::client::Client::builder(vec!["127.0.0.1:8080".into()])
///     .request_timeout(Duration::from_secs(2))
///     .retry_deadline(Duration::from_secs(30))
///     .build();
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    pub(super) servers: Vec<String>,
    pub(super) options: ClientOptions,
}

impl ClientBuilder {
    /// See [`ClientOptions::request_timeout`].
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.options.request_timeout = d;
        self
    }

    /// See [`ClientOptions::connect_timeout`].
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.options.connect_timeout = d;
        self
    }

    /// See [`ClientOptions::retry_deadline`]. `Duration::ZERO` means a single attempt.
    pub fn retry_deadline(mut self, d: Duration) -> Self {
        self.options.retry_deadline = d;
        self
    }

    /// See [`ClientOptions::backoff_initial`] and [`ClientOptions::backoff_max`].
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.options.backoff_initial = initial;
        self.options.backoff_max = max;
        self
    }

    /// See [`ClientOptions::discover_leader`].
    pub fn discover_leader(mut self, on: bool) -> Self {
        self.options.discover_leader = on;
        self
    }

    /// Sets [`ClientOptions::idempotent_writes`].
    pub fn idempotent_writes(mut self, on: bool) -> Self {
        self.options.idempotent_writes = on;
        self
    }

    /// Replaces all options at once.
    pub fn options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// Builds the client.
    pub fn build(self) -> Client {
        Client::with_options(self.servers, self.options)
    }
}
