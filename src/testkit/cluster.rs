//! Real `raftlabkv-server` processes on loopback, with every directed peer link through a
//! [`LinkProxy`]: start, kill, pause, restart, partition, and poll with deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::proxy::{LinkMode, LinkProxy};
use crate::api::Status;
use crate::server::auth::{PeerAuth, PeerSecret};
use crate::server::config::cluster_id_for;

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Path of the `raftlabkv-server` binary.
    pub server_bin: PathBuf,
    /// Where per-node data dirs and logs go (`node1/`, `node1.log`).
    pub work_dir: PathBuf,
    /// Give each node a data dir under `work_dir` (durable storage); otherwise `--in-memory`.
    pub data_dirs: bool,
    /// Extra flags for every node.
    pub extra_args: Vec<String>,
    /// Give the cluster a peer secret (`work_dir/peer-secret`, passed to every node with
    /// `--peer-secret-file`), as `start_cluster.sh` does; otherwise its peer endpoints are open.
    /// Tests that speak to the peer endpoints themselves sign with [`Cluster::peer_auth`].
    pub peer_secret: bool,
}

/// One node process.
pub struct NodeProc {
    /// `node1`, ...
    pub id: String,
    /// Where clients reach it.
    pub addr: String,
    child: Option<Child>,
    args: Vec<String>,
    paused: bool,
}

/// A running cluster.
pub struct Cluster {
    /// The nodes, index 0 = `node1`.
    pub nodes: Vec<NodeProc>,
    /// Proxies by directed link (from, to) as node indexes.
    proxies: BTreeMap<(usize, usize), LinkProxy>,
    options: ClusterOptions,
    agent: ureq::Agent,
    cluster_id: String,
    /// The peer secret every node was given, if any.
    secret: Option<PeerSecret>,
    /// Nodes taken out of the cluster for good ([`Cluster::retire`]).
    retired: BTreeSet<usize>,
}

/// A free loopback port for a node to listen on, chosen below Linux's ephemeral range
/// (32768–60999) so that outgoing connections cannot take it between now and the node's bind.
pub fn free_port() -> std::io::Result<u16> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes a fresh random peer secret (32 bytes, base64) to `dir/peer-secret`, mode 600.
fn write_secret(dir: &Path) -> std::io::Result<(PeerSecret, PathBuf)> {
    use base64::Engine as _;
    use std::io::Write as _;
    let bytes: [u8; 32] = rand::random();
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let path = dir.join("peer-secret");
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    writeln!(file.open(&path)?, "{text}")?;
    let secret = PeerSecret::from_bytes(text.as_bytes())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok((secret, path))
}

/// An HTTP answer: status and parsed JSON (Null if the body was not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status, or 0 when no answer came (connection failed or timed out).
    pub status: u16,
    /// The body.
    pub body: Value,
    /// For status 0: what went wrong.
    pub error: String,
}

impl Cluster {
    /// Starts the nodes and proxies (does not wait for a leader).
    pub fn start(options: ClusterOptions) -> std::io::Result<Cluster> {
        std::fs::create_dir_all(&options.work_dir)?;
        let n = options.nodes;
        let mut addrs = Vec::new();
        for _ in 0..n {
            addrs.push(format!("127.0.0.1:{}", free_port()?));
        }
        let mut proxies = BTreeMap::new();
        for i in 0..n {
            for (j, target) in addrs.iter().enumerate() {
                if i != j {
                    proxies.insert((i, j), LinkProxy::start(target)?);
                }
            }
        }
        // The nodes reach each other through proxies, each at its own addresses, so the id each
        // would derive from its --peers would differ: give them one, from the real addresses.
        let members: Vec<(String, String)> =
            addrs.iter().enumerate().map(|(i, a)| (format!("node{}", i + 1), a.clone())).collect();
        let cluster_id = cluster_id_for(&members);
        let (secret, secret_file) = if options.peer_secret {
            let (secret, file) = write_secret(&options.work_dir)?;
            (Some(secret), Some(file))
        } else {
            (None, None)
        };
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = format!("node{}", i + 1);
            let peers: Vec<String> = (0..n)
                .filter(|&j| j != i)
                .map(|j| format!("node{}={}", j + 1, proxies[&(i, j)].addr))
                .collect();
            let mut args = vec![
                "--id".to_string(),
                id.clone(),
                "--addr".into(),
                addrs[i].clone(),
                "--peers".into(),
                peers.join(","),
                "--cluster-id".into(),
                cluster_id.clone(),
            ];
            if let Some(file) = &secret_file {
                args.push("--peer-secret-file".into());
                args.push(file.display().to_string());
            }
            if options.data_dirs {
                args.push("--data-dir".into());
                args.push(options.work_dir.join(&id).display().to_string());
            } else {
                args.push("--in-memory".into());
            }
            args.extend(options.extra_args.iter().cloned());
            nodes.push(NodeProc { id, addr: addrs[i].clone(), child: None, args, paused: false });
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_millis(500))
            .timeout(Duration::from_secs(10))
            .build();
        let retired = BTreeSet::new();
        let mut cluster = Cluster { nodes, proxies, options, agent, cluster_id, secret, retired };
        for i in 0..n {
            cluster.restart(i)?;
        }
        Ok(cluster)
    }

    /// Adds a node (`node{n+1}`, on a new port, with a data dir if the cluster has them) that
    /// joins the running cluster through the addresses of the first nodes (`--join`), and starts
    /// it. Returns its index. Add it to the configuration with `raftlabkv-client member add` or
    /// [`crate::client::Client::add_member`]; it is reached directly, without a proxy.
    pub fn add_joining_node(&mut self) -> std::io::Result<usize> {
        let i = self.nodes.len();
        let id = format!("node{}", i + 1);
        let addr = format!("127.0.0.1:{}", free_port()?);
        let join: Vec<String> = self.nodes.iter().map(|n| n.addr.clone()).collect();
        let mut args = vec![
            "--id".to_string(),
            id.clone(),
            "--addr".into(),
            addr.clone(),
            "--join".into(),
            join.join(","),
            "--cluster-id".into(),
            self.cluster_id.clone(),
        ];
        if self.secret.is_some() {
            args.push("--peer-secret-file".into());
            args.push(self.options.work_dir.join("peer-secret").display().to_string());
        }
        if self.options.data_dirs {
            args.push("--data-dir".into());
            args.push(self.options.work_dir.join(&id).display().to_string());
        } else {
            args.push("--in-memory".into());
        }
        args.extend(self.options.extra_args.iter().cloned());
        self.nodes.push(NodeProc { id, addr, child: None, args, paused: false });
        self.restart(i)?;
        Ok(i)
    }

    /// The id every node was given (`--cluster-id`).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Changes the cluster id that nodes added later are given and that [`Cluster::peer_auth`]
    /// signs with (after `--force-new-cluster` gave the cluster a new one).
    pub fn set_cluster_id(&mut self, id: impl Into<String>) {
        self.cluster_id = id.into();
    }

    /// Node `i`'s command-line arguments, for its next [`Cluster::restart`].
    pub fn args_mut(&mut self, i: usize) -> &mut Vec<String> {
        &mut self.nodes[i].args
    }

    /// Signs peer requests as node `i` of this cluster does (with its secret, if it has one):
    /// for tests that speak to the peer endpoints, or send forwarded requests, themselves.
    pub fn peer_auth(&self, i: usize) -> PeerAuth {
        PeerAuth::new(self.nodes[i].id.clone(), self.cluster_id.clone(), self.secret.clone())
    }

    /// A peer request to node `to`, signed by `auth` (see [`Cluster::peer_auth`]), with extra
    /// `headers`; never panics (status 0 when there was no answer).
    pub fn peer_call(
        &self,
        to: usize,
        auth: &PeerAuth,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let url = format!("http://{}{}", self.nodes[to].addr, path);
        let mut req =
            auth.sign(method, path, body.as_bytes()).apply(self.agent.request(method, &url));
        for (name, value) in headers {
            req = req.set(name, value);
        }
        answer(if body.is_empty() { req.call() } else { req.send_string(body) })
    }

    /// The work directory.
    pub fn work_dir(&self) -> &Path {
        &self.options.work_dir
    }

    /// (Re)starts node `i` if it is not running.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        let node = &mut self.nodes[i];
        if let Some(child) = &mut node.child
            && child.try_wait()?.is_none()
        {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.options.work_dir.join(format!("{}.log", node.id)))?;
        let child = Command::new(&self.options.server_bin)
            .args(&node.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Node `i`'s data dir (meaningful with [`ClusterOptions::data_dirs`]).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.options.work_dir.join(&self.nodes[i].id)
    }

    /// Node `i`'s log file (its stdout and stderr, appended across restarts).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.options.work_dir.join(format!("{}.log", self.nodes[i].id))
    }

    /// Waits for node `i` to exit on its own (without signalling it). Returns its exit code
    /// (`Some(None)` if a signal ended it) once it has exited, or `None` if it still runs after
    /// `within` (it is left running) or was not started.
    pub fn wait_exit(&mut self, i: usize, within: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.nodes[i].child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes[i].child = None;
                return Some(status.code());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` node `i` (no-op if not running).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM node `i` and wait for it to exit; returns its exit code if it exited in time.
    pub fn terminate(&mut self, i: usize, within: Duration) -> Option<i32> {
        let mut child = self.nodes[i].child.take()?;
        let _ = signal(child.id(), "TERM");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// SIGSTOP node `i`.
    pub fn pause(&mut self, i: usize) {
        if let Some(child) = &self.nodes[i].child
            && signal(child.id(), "STOP")
        {
            self.nodes[i].paused = true;
        }
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) {
        if let Some(child) = &self.nodes[i].child {
            let _ = signal(child.id(), "CONT");
            self.nodes[i].paused = false;
        }
    }

    /// True if node `i` runs (and is not paused).
    pub fn is_running(&mut self, i: usize) -> bool {
        let node = &mut self.nodes[i];
        !node.paused && node.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// True if node `i`'s peer links go through proxies (the nodes the cluster started with; a
    /// node added with [`Cluster::add_joining_node`] is reached directly).
    pub fn is_proxied(&self, i: usize) -> bool {
        self.proxies.keys().any(|&(a, b)| a == i || b == i)
    }

    /// Sets one directed link.
    pub fn set_link(&self, from: usize, to: usize, mode: LinkMode) {
        if let Some(p) = self.proxies.get(&(from, to)) {
            p.set_mode(mode);
        }
    }

    /// Sets the link from every other node to node `i` (whoever leads, its messages to `i`).
    pub fn set_links_into(&self, i: usize, mode: LinkMode) {
        for j in (0..self.nodes.len()).filter(|&j| j != i) {
            self.set_link(j, i, mode);
        }
    }

    /// Sets the link from node `i` to every other node.
    pub fn set_links_out_of(&self, i: usize, mode: LinkMode) {
        for j in (0..self.nodes.len()).filter(|&j| j != i) {
            self.set_link(i, j, mode);
        }
    }

    /// Cuts node `i` off both ways (refuse).
    pub fn isolate(&self, i: usize) {
        self.set_links_into(i, LinkMode::Refuse);
        self.set_links_out_of(i, LinkMode::Refuse);
    }

    /// Splits into groups: links between groups get `mode`; links inside a group, and links of
    /// a node in no group (a retired one, say), pass.
    pub fn partition(&self, groups: &[Vec<usize>], mode: LinkMode) {
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        for (&(i, j), p) in &self.proxies {
            let cut = matches!((group_of(i), group_of(j)), (Some(a), Some(b)) if a != b);
            p.set_mode(if cut { mode } else { LinkMode::Pass });
        }
    }

    /// Every link passes again.
    pub fn heal(&self) {
        for p in self.proxies.values() {
            p.set_mode(LinkMode::Pass);
        }
    }

    /// Any HTTP call to node `i`; never panics (status 0 when there was no answer).
    pub fn call(&self, i: usize, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let url = format!("http://{}{}", self.nodes[i].addr, path);
        call(&self.agent, method, &url, body)
    }

    /// `/status` of node `i` as raw JSON, if it answers (for tests that check the wire format).
    pub fn status(&self, i: usize) -> Option<Value> {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_millis(500)).build();
        let a = call(&agent, "GET", &format!("http://{}/status", self.nodes[i].addr), None);
        (a.status == 200).then_some(a.body)
    }

    /// `/status` of node `i`, if it answers with a readable status.
    pub fn node_status(&self, i: usize) -> Option<Status> {
        self.status(i).and_then(|s| serde_json::from_value(s).ok())
    }

    /// Waits for exactly one node among `among` to say it leads, agreed by every other answering
    /// node in `among`; returns its index.
    pub fn wait_leader(&self, among: &[usize], within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let statuses: Vec<(usize, Status)> =
                among.iter().filter_map(|&i| self.node_status(i).map(|s| (i, s))).collect();
            let leaders: Vec<usize> =
                statuses.iter().filter(|(_, s)| s.is_leader).map(|(i, _)| *i).collect();
            if let [l] = leaders[..] {
                let id = &self.nodes[l].id;
                if statuses.iter().all(|(_, s)| s.leader.as_ref() == Some(id)) {
                    return Some(l);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Every node index except the retired ones: the nodes a test still counts as the cluster's.
    pub fn all(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| !self.retired.contains(i)).collect()
    }

    /// Takes node `i` out of the cluster for good, as far as this harness is concerned: it is
    /// left out of [`Cluster::all`] from now on (so nothing that heals or restarts "every node"
    /// brings it back). Its process is left as it is: stop it with [`Cluster::kill`].
    pub fn retire(&mut self, i: usize) {
        self.retired.insert(i);
    }

    /// True if node `i` was retired.
    pub fn is_retired(&self, i: usize) -> bool {
        self.retired.contains(&i)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.resume(i);
            self.kill(i);
        }
    }
}

/// Sends a signal with the system's `kill` command (no libc bindings needed).
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// One HTTP call that never panics.
pub fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<&Value>) -> Answer {
    let req = agent.request(method, url);
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(&b.to_string()),
        None => req.call(),
    };
    answer(result)
}

/// The [`Answer`] for a ureq result.
fn answer(result: Result<ureq::Response, ureq::Error>) -> Answer {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Answer { status: 0, body: Value::Null, error: e.to_string() },
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        error: String::new(),
    }
}
