//! A closed-loop load generator: `raftlabkv-client bench`.
//!
//! `clients` threads each own a `ureq::Agent` (so each keeps its own keep-alive connection) and
//! send one request at a time, as fast as answers come back, to a single target server (by default
//! the leader, found through `/status`). Each thread records the latency of every successful
//! request; at the end all samples are merged and sorted, so the percentiles are exact, not
//! averages of per-thread percentiles.
//!
//! The measurement loop does no retries (an error is counted by kind and the loop goes on; after a
//! failed connect it pauses 10 ms so a dead server is not hammered), no JSON encoding and no
//! allocation of its own: keys are made up front, and each put body is assembled in a reused
//! buffer from the pre-built key and value (both plain alphanumeric, so no JSON escaping is
//! needed). What remains per request is ureq's own work (URL parsing, headers).
//!
//! Before a `get` or `mixed` run the key space is populated (every key written once, through a
//! retrying [`Client`]), so reads hit existing keys; `populate: false` skips that, and reads of
//! missing keys are then counted under `not_found`.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::distributions::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{Client, ClientOptions, Failure, classify, deadline_after, make_agent, normalize_addr};
use crate::error::{Error, Result};

/// Most client threads a bench starts.
pub const MAX_CLIENTS: usize = 4096;
/// Largest key space (the keys are made up front).
pub const MAX_KEYS: u64 = 10_000_000;
/// Largest value size.
pub const MAX_VALUE_SIZE: usize = 64 << 20;

/// What the bench threads send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Only `POST /kv/put`.
    Put,
    /// Only `GET /kv/get/{key}` (linearizable).
    Get,
    /// Gets with probability `read_ratio`, puts otherwise.
    Mixed,
}

impl std::str::FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "put" => Ok(Workload::Put),
            "get" => Ok(Workload::Get),
            "mixed" => Ok(Workload::Mixed),
            _ => Err(format!("unknown workload {s:?} (put, get or mixed)")),
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
        })
    }
}

/// A bench run's parameters.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Servers, used to find the leader when `target` is `None`.
    pub servers: Vec<String>,
    /// Send everything to this server instead of the leader.
    pub target: Option<String>,
    /// Number of concurrent client threads (at least 1).
    pub clients: usize,
    /// Stop after this long. With neither `duration` nor `ops`, 10 s.
    pub duration: Option<Duration>,
    /// Stop after this many requests in total (successful or not).
    pub ops: Option<u64>,
    /// What to send.
    pub workload: Workload,
    /// For `Mixed`: the fraction of gets, in `0..=1`.
    pub read_ratio: f64,
    /// Value size in bytes.
    pub value_size: usize,
    /// Key space: keys `bench-0` .. `bench-{keys-1}`, chosen uniformly.
    pub keys: u64,
    /// Write every key once before measuring. `None`: yes for `Get` and `Mixed`, no for `Put`.
    pub populate: Option<bool>,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// How gets are served (`--stale`, `--lease`).
    pub consistency: super::Consistency,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            servers: super::DEFAULT_SERVERS.split(',').map(String::from).collect(),
            target: None,
            clients: 4,
            duration: None,
            ops: None,
            workload: Workload::Put,
            read_ratio: 0.9,
            value_size: 100,
            keys: 10_000,
            populate: None,
            request_timeout: Duration::from_secs(5),
            consistency: super::Consistency::Linearizable,
        }
    }
}

/// Latency percentiles of the successful requests, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Number of samples.
    pub samples: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest request.
    pub max_us: u64,
}

/// The outcome of a bench run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The workload run.
    pub workload: Workload,
    /// The server that received the load.
    pub target: String,
    /// Number of client threads.
    pub clients: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// Key space size.
    pub keys: u64,
    /// For `Mixed`, the read ratio used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_ratio: Option<f64>,
    /// Seconds spent populating (0 if not populated).
    pub populate_seconds: f64,
    /// Keys whose populating write failed.
    pub populate_errors: u64,
    /// Seconds of measurement.
    pub elapsed_seconds: f64,
    /// Requests sent (successful or not).
    pub requests: u64,
    /// Successful requests.
    pub ok: u64,
    /// Successful requests per second.
    pub throughput_ops_per_sec: f64,
    /// Failed requests by kind (`unavailable`, `outcome_unknown`, `connect`, `transport`, …).
    pub errors: BTreeMap<String, u64>,
    /// Latency of successful requests.
    pub latency_us: Latency,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "workload {}", self.workload,)?;
        if let Some(r) = self.read_ratio {
            write!(f, " (read ratio {r})")?;
        }
        writeln!(
            f,
            ", {} clients, target {}, {} keys, {}-byte values",
            self.clients, self.target, self.keys, self.value_size
        )?;
        if self.populate_seconds > 0.0 {
            writeln!(
                f,
                "populated in {:.2} s ({} failed writes)",
                self.populate_seconds, self.populate_errors
            )?;
        }
        let failed = self.requests - self.ok;
        write!(
            f,
            "{} requests in {:.2} s: {} ok, {} failed",
            self.requests, self.elapsed_seconds, self.ok, failed
        )?;
        if !self.errors.is_empty() {
            let kinds: Vec<String> = self.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            write!(f, " ({})", kinds.join(", "))?;
        }
        writeln!(f)?;
        writeln!(f, "throughput: {:.1} ops/s", self.throughput_ops_per_sec)?;
        let l = &self.latency_us;
        write!(
            f,
            "latency (µs): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.1}",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us
        )
    }
}

/// What one bench thread brings back.
#[derive(Default)]
struct ThreadResult {
    requests: u64,
    latencies_ns: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

/// Runs a bench: finds the target, populates if asked, measures, and reports.
pub fn run(config: &BenchConfig) -> Result<BenchReport> {
    run_with_progress(config, Duration::from_secs(1), |_| {})
}

/// [`run`], calling `on` with what has been measured so far about every `every` while the
/// measured phase runs (the CLI prints it as a live line on a terminal). The workers count
/// into shared atomics (two relaxed additions per request); `on` runs on the calling thread.
pub fn run_with_progress(
    config: &BenchConfig,
    every: Duration,
    mut on: impl FnMut(&Progress),
) -> Result<BenchReport> {
    check(config)?;
    let target = match &config.target {
        Some(t) => normalize_addr(t),
        None => Client::new(config.servers.clone()).leader()?,
    };
    let keys: Arc<Vec<String>> = Arc::new((0..config.keys).map(|i| format!("bench-{i}")).collect());
    let value: Arc<String> = Arc::new(
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(config.value_size)
            .map(char::from)
            .collect(),
    );

    let populate = config.populate.unwrap_or(config.workload != Workload::Put);
    let (populate_seconds, populate_errors) = if populate {
        let started = Instant::now();
        let errors = populate_keys(config, &target, &keys, &value);
        (started.elapsed().as_secs_f64(), errors)
    } else {
        (0.0, 0)
    };

    let duration = match (config.duration, config.ops) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    let issued = Arc::new(AtomicU64::new(0));
    let live = Arc::new(Live::new());
    let started = Instant::now();
    let stop_at = duration.map(|d| deadline_after(started, d));
    let handles: Vec<_> = (0..config.clients)
        .map(|_| {
            let worker = Worker {
                agent: make_agent(&ClientOptions {
                    request_timeout: config.request_timeout,
                    ..ClientOptions::default()
                }),
                target: target.clone(),
                keys: Arc::clone(&keys),
                value: Arc::clone(&value),
                workload: config.workload,
                read_query: config.consistency.query(),
                read_ratio: config.read_ratio,
                timeout: config.request_timeout,
                ops: config.ops,
                issued: Arc::clone(&issued),
                live: Arc::clone(&live),
                stop_at,
            };
            std::thread::Builder::new().name("bench".into()).spawn(move || worker.run())
        })
        .collect();
    // Report progress until every worker is done.
    let every = every.max(Duration::from_millis(10));
    let mut next = started + every;
    let (mut last_ok, mut last_at) = (0u64, started);
    while !handles.iter().all(|h| h.as_ref().map_or(true, |h| h.is_finished())) {
        let now = Instant::now();
        if now >= next {
            let p = live.progress(started, now, last_ok, last_at);
            (last_ok, last_at) = (p.ok, now);
            on(&p);
            next += every;
            continue;
        }
        std::thread::sleep((next - now).min(Duration::from_millis(20)));
    }
    let total = join(handles)?;
    let elapsed = started.elapsed().as_secs_f64();
    let ok = total.latencies_ns.len() as u64;
    Ok(BenchReport {
        workload: config.workload,
        target,
        clients: config.clients,
        value_size: config.value_size,
        keys: config.keys,
        read_ratio: (config.workload == Workload::Mixed).then_some(config.read_ratio),
        populate_seconds,
        populate_errors,
        elapsed_seconds: elapsed,
        requests: total.requests,
        ok,
        throughput_ops_per_sec: if elapsed > 0.0 { ok as f64 / elapsed } else { 0.0 },
        errors: total.errors,
        latency_us: latency(total.latencies_ns),
    })
}

/// Refuses a configuration the bench cannot run (or should not: the limits keep a typo from
/// starting a million threads).
fn check(config: &BenchConfig) -> Result<()> {
    if config.clients == 0 {
        return Err(Error::BadRequest("--clients must be at least 1".into()));
    }
    if config.keys == 0 {
        return Err(Error::BadRequest("--keys must be at least 1".into()));
    }
    if config.clients > MAX_CLIENTS {
        return Err(Error::BadRequest(format!("--clients must be at most {MAX_CLIENTS}")));
    }
    if config.keys > MAX_KEYS {
        return Err(Error::BadRequest(format!("--keys must be at most {MAX_KEYS}")));
    }
    if config.value_size > MAX_VALUE_SIZE {
        return Err(Error::BadRequest(format!(
            "--value-size must be at most {MAX_VALUE_SIZE} bytes"
        )));
    }
    if !(0.0..=1.0).contains(&config.read_ratio) {
        return Err(Error::BadRequest("--read-ratio must be between 0 and 1".into()));
    }
    Ok(())
}

/// Waits for the bench threads and adds up what they measured.
fn join(handles: Vec<std::io::Result<JoinHandle<ThreadResult>>>) -> Result<ThreadResult> {
    let mut total = ThreadResult::default();
    let mut spawn_error = None;
    for h in handles {
        let h = match h {
            Ok(h) => h,
            Err(e) => {
                spawn_error = Some(e);
                continue;
            }
        };
        let r = h.join().map_err(|_| Error::Internal("a bench thread panicked".into()))?;
        total.requests += r.requests;
        total.latencies_ns.extend(r.latencies_ns);
        for (k, n) in r.errors {
            *total.errors.entry(k).or_default() += n;
        }
    }
    match spawn_error {
        Some(e) => Err(Error::Internal(format!("cannot start a bench thread: {e}"))),
        None => Ok(total),
    }
}

/// Writes every key once, spread over `clients` threads, each with a retrying client pinned to
/// the target. Returns the number of keys whose write failed.
fn populate_keys(
    config: &BenchConfig,
    target: &str,
    keys: &Arc<Vec<String>>,
    value: &Arc<String>,
) -> u64 {
    let n = keys.len();
    let threads = config.clients.min(n).max(1);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let keys = Arc::clone(keys);
            let value = Arc::clone(value);
            let client = Client::builder(vec![target.to_string()])
                .request_timeout(config.request_timeout)
                .discover_leader(false)
                // Each key gets one fixed value, so a retried put is harmless: no idempotency
                // keys, which would fill the server's table and skew per-key memory figures.
                .idempotent_writes(false)
                .build();
            std::thread::Builder::new().name("populate".into()).spawn(move || {
                let mut failed = 0u64;
                for key in keys.iter().skip(t).step_by(threads) {
                    if let Err(e) = client.put(key, &value) {
                        log::warn!("populate: put {key} failed: {e}");
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    handles
        .into_iter()
        .enumerate()
        .map(|(t, h)| {
            // The keys thread `t` was to write: those it could not, if it failed.
            let share = keys.iter().skip(t).step_by(threads).count() as u64;
            match h {
                Ok(h) => h.join().unwrap_or(share),
                Err(e) => {
                    log::warn!("populate: cannot start a thread: {e}");
                    share
                }
            }
        })
        .sum()
}

/// Exact percentiles (nearest rank) of the samples, in microseconds.
pub fn latency(mut samples_ns: Vec<u64>) -> Latency {
    if samples_ns.is_empty() {
        return Latency::default();
    }
    samples_ns.sort_unstable();
    let n = samples_ns.len();
    let at = |per_mille: u128| {
        // Nearest rank: the smallest sample with at least p% of the samples at or below it.
        // Integer arithmetic, so that 99.9% of 1000 samples is rank 999 exactly.
        let rank = (per_mille * n as u128).div_ceil(1000) as usize;
        samples_ns[rank.clamp(1, n) - 1] / 1000
    };
    let sum: u128 = samples_ns.iter().map(|&s| u128::from(s)).sum();
    Latency {
        samples: n as u64,
        mean_us: sum as f64 / n as f64 / 1000.0,
        p50_us: at(500),
        p90_us: at(900),
        p99_us: at(990),
        p999_us: at(999),
        max_us: samples_ns[n - 1] / 1000,
    }
}

/// One bench thread.
struct Worker {
    agent: ureq::Agent,
    target: String,
    keys: Arc<Vec<String>>,
    value: Arc<String>,
    workload: Workload,
    read_query: &'static str,
    read_ratio: f64,
    timeout: Duration,
    ops: Option<u64>,
    issued: Arc<AtomicU64>,
    live: Arc<Live>,
    stop_at: Option<Instant>,
}

impl Worker {
    fn run(self) -> ThreadResult {
        let mut rng =
            StdRng::from_rng(rand::thread_rng()).unwrap_or_else(|_| StdRng::seed_from_u64(0));
        let mut result =
            ThreadResult { latencies_ns: Vec::with_capacity(1 << 16), ..ThreadResult::default() };
        let put_url = format!("http://{}/kv/put", self.target);
        let get_prefix = format!("http://{}/kv/get/", self.target);
        let mut url = String::with_capacity(get_prefix.len() + 32);
        let mut body = String::with_capacity(self.value.len() + 64);
        let mut sink = Vec::with_capacity(4096);
        let n = self.keys.len();
        loop {
            if let Some(limit) = self.ops
                && self.issued.fetch_add(1, Ordering::Relaxed) >= limit
            {
                break;
            }
            let key = &self.keys[rng.gen_range(0..n)];
            let read = match self.workload {
                Workload::Get => true,
                Workload::Put => false,
                Workload::Mixed => rng.gen_bool(self.read_ratio),
            };
            let t0 = Instant::now();
            if self.stop_at.is_some_and(|s| t0 >= s) {
                break;
            }
            let response = if read {
                url.clear();
                url.push_str(&get_prefix);
                url.push_str(key); // bench keys are unreserved characters only
                url.push_str(self.read_query);
                self.agent.get(&url).timeout(self.timeout).call()
            } else {
                body.clear();
                body.push_str(r#"{"key":""#);
                body.push_str(key);
                body.push_str(r#"","value":""#);
                body.push_str(&self.value);
                body.push_str(r#""}"#);
                self.agent
                    .post(&put_url)
                    .timeout(self.timeout)
                    .set("Content-Type", "application/json")
                    .send_string(&body)
            };
            result.requests += 1;
            self.live.requests.fetch_add(1, Ordering::Relaxed);
            match response {
                Ok(r) => {
                    sink.clear();
                    match r.into_reader().read_to_end(&mut sink) {
                        Ok(_) => {
                            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                            result.latencies_ns.push(ns);
                            self.live.record(ns / 1000);
                        }
                        Err(_) => count(&mut result.errors, "transport"),
                    }
                }
                Err(e) => match classify(e) {
                    Failure::NotSent(_) => {
                        count(&mut result.errors, "connect");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Failure::MaybeSent(_) => count(&mut result.errors, "transport"),
                    Failure::Status { error, .. } => count(&mut result.errors, error.code()),
                    Failure::Fatal(_) => {
                        count(&mut result.errors, "fatal");
                        break;
                    }
                },
            }
        }
        result
    }
}

/// What a running bench has measured so far (see [`run_with_progress`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Time since the measured phase began.
    pub elapsed: Duration,
    /// Successful requests so far.
    pub ok: u64,
    /// Failed requests so far.
    pub errors: u64,
    /// Successful requests per second since the previous report.
    pub ops_per_sec: f64,
    /// 99th percentile latency of the successful requests so far, in microseconds: an upper
    /// bound within 25% (counted in buckets, four per power of two); none before the first.
    pub p99_us: Option<u64>,
}

impl Progress {
    /// One line: `  3.0 s   12,345 ok  4,112 ops/s  p99 2.31 ms  0 errors`.
    pub fn line(&self) -> String {
        let p99 = match self.p99_us {
            Some(us) if us >= 1000 => format!("{:.2} ms", us as f64 / 1000.0),
            Some(us) => format!("{us} µs"),
            None => "-".into(),
        };
        format!(
            "{:>5.1} s  {:>10} ok  {:>8} ops/s  p99 {p99}  {} errors",
            self.elapsed.as_secs_f64(),
            super::explain::thousands(self.ok),
            super::explain::thousands(self.ops_per_sec.round() as u64),
            super::explain::thousands(self.errors),
        )
    }
}

/// Buckets of the live latency histogram: four per power of two of microseconds.
const LIVE_BUCKETS: usize = 256;

/// The counters the workers share for [`Progress`].
struct Live {
    requests: AtomicU64,
    ok: AtomicU64,
    buckets: Vec<AtomicU64>,
}

impl Live {
    fn new() -> Live {
        Live {
            requests: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            buckets: (0..LIVE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, us: u64) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        self.buckets[live_bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    fn progress(&self, started: Instant, now: Instant, last_ok: u64, last_at: Instant) -> Progress {
        let ok = self.ok.load(Ordering::Relaxed);
        let requests = self.requests.load(Ordering::Relaxed);
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let since = now.duration_since(last_at).as_secs_f64();
        Progress {
            elapsed: now.duration_since(started),
            ok,
            errors: requests.saturating_sub(ok),
            ops_per_sec: if since > 0.0 { ok.saturating_sub(last_ok) as f64 / since } else { 0.0 },
            p99_us: live_quantile(&counts, 0.99),
        }
    }
}

/// The bucket of a latency in microseconds: exact below 4, then four per power of two.
fn live_bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let log = 63 - us.leading_zeros() as usize;
    (log * 4 + ((us >> (log - 2)) & 3) as usize).min(LIVE_BUCKETS - 1)
}

/// The largest latency that falls in bucket `i`.
fn live_bucket_upper(i: usize) -> u64 {
    if i < 8 {
        return i.min(3) as u64; // 4..8 are never used: 4 µs is bucket 8
    }
    let (log, quarter) = (i / 4, (i % 4) as u64);
    if log >= 63 {
        return u64::MAX;
    }
    ((5 + quarter) << (log - 2)) - 1
}

/// The `q` quantile of the counted latencies, as its bucket's upper bound.
fn live_quantile(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(live_bucket_upper(i));
        }
    }
    None
}

fn count(errors: &mut BTreeMap<String, u64>, kind: &str) {
    match errors.get_mut(kind) {
        Some(n) => *n += 1,
        None => {
            errors.insert(kind.to_string(), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_buckets_bound_each_latency_within_a_quarter() {
        for us in (0..5000).chain([65_535, 65_536, 1 << 40, u64::MAX / 2]) {
            let b = live_bucket(us);
            let upper = live_bucket_upper(b);
            assert!(upper >= us, "{us} in bucket {b} with upper {upper}");
            assert!(upper as f64 <= (us as f64) * 1.25 + 1.0, "{us}: upper {upper}");
            if b > 0 {
                assert!(live_bucket_upper(b - 1) < us, "{us} belongs lower");
            }
        }
        let mut counts = vec![0u64; LIVE_BUCKETS];
        assert_eq!(live_quantile(&counts, 0.99), None);
        // 990 at 100 µs and 10 at 10 ms: the p99 is in 100's bucket, the max in 10 ms's.
        counts[live_bucket(100)] += 990;
        counts[live_bucket(10_000)] += 10;
        let p99 = live_quantile(&counts, 0.99).unwrap_or(0);
        assert!((100..=125).contains(&p99), "{p99}");
        let max = live_quantile(&counts, 1.0).unwrap_or(0);
        assert!((10_000..=12_500).contains(&max), "{max}");
    }

    #[test]
    fn the_progress_line_reads_well() {
        let p = Progress {
            elapsed: Duration::from_millis(3000),
            ok: 12_345,
            errors: 2,
            ops_per_sec: 4111.6,
            p99_us: Some(2312),
        };
        assert_eq!(p.line(), "  3.0 s      12,345 ok     4,112 ops/s  p99 2.31 ms  2 errors");
        let p = Progress { p99_us: None, ..p };
        assert!(p.line().contains("p99 -"), "{}", p.line());
    }

    #[test]
    fn percentiles_use_nearest_rank_over_all_samples() {
        // 1..=1000 µs.
        let samples: Vec<u64> = (1..=1000).rev().map(|us| us * 1000).collect();
        let l = latency(samples);
        assert_eq!(l.samples, 1000);
        assert_eq!(l.p50_us, 500);
        assert_eq!(l.p90_us, 900);
        assert_eq!(l.p99_us, 990);
        assert_eq!(l.p999_us, 999);
        assert_eq!(l.max_us, 1000);
        assert!((l.mean_us - 500.5).abs() < 1e-9);

        let one = latency(vec![1_234_567]);
        assert_eq!((one.p50_us, one.p999_us, one.max_us), (1234, 1234, 1234));
        assert_eq!(latency(Vec::new()), Latency::default());
    }

    #[test]
    fn workload_parses() {
        assert_eq!("mixed".parse::<Workload>(), Ok(Workload::Mixed));
        assert!("write".parse::<Workload>().is_err());
    }
}
