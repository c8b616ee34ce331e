//! Real binaries on a pseudo-terminal (python3's `pty`, so that the client sees a terminal):
//! the interactive shell's line editing — Tab completes a command and `--explain`, the up arrow
//! brings back the previous line, the history is saved to `$RAFTLABKV_HISTORY` — and `bench`'s
//! live progress line. Every wait polls the terminal's output with a deadline.

use std::process::Command;
use std::time::Duration;

mod support;

/// Drives the client on a pty. Exits non-zero with what it saw when a step's output is missing.
const DRIVER: &str = r#"
import os, pty, re, select, sys, time
client, servers, history = sys.argv[1], sys.argv[2], sys.argv[3]
env = dict(os.environ, RAFTLABKV_HISTORY=history, TERM="xterm")

def spawn(*args):
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(client, [client, "--servers", servers, *args], env)
    return pid, fd

def expect(fd, seen, pattern, what, within=15.0):
    deadline = time.time() + within
    while time.time() < deadline:
        m = re.search(pattern, seen[0])
        if m:
            seen[0] = seen[0][m.end():]
            return m
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                break
            seen[0] += data.decode("utf-8", "replace")
    sys.exit(f"FAIL: {what}: no {pattern!r} in {seen[0]!r}")

def send(fd, text):
    os.write(fd, text.encode())

# 1. The shell.
pid, fd = spawn()
seen = [""]
expect(fd, seen, r"raftlabkv> ", "the prompt")
send(fd, "put tty/k hello editor\r")
expect(fd, seen, r"OK \(index \d+, term \d+\)", "the put's answer")
# "ge" + Tab: get and getall share "get"; the word becomes "get".
send(fd, "ge\t")
expect(fd, seen, r"get", "Tab completing ge")
send(fd, " tty/k\r")
expect(fd, seen, r"hello editor", "the get's answer")
# "st" + Tab completes status; "--e" + Tab completes --explain.
send(fd, "st\t --e\t\r")
expect(fd, seen, r"all healthy", "status --explain through completion")
# The up arrow: the previous line again.
send(fd, "\x1b[A\r")
expect(fd, seen, r"all healthy", "the up arrow repeating status --explain")
send(fd, "exit\r")
_, code = os.waitpid(pid, 0)
if code != 0:
    sys.exit(f"FAIL: the shell exited with {code}")
saved = open(history).read()
for line in ["put tty/k hello editor", "get tty/k", "status --explain"]:
    if line not in saved:
        sys.exit(f"FAIL: {line!r} not in the history file: {saved!r}")
print("ok: completion, history, up arrow")

# 2. bench: a live line, rewritten in place (\r, erase) at least once before the report.
pid, fd = spawn("bench", "--clients", "2", "--duration", "3")
seen = [""]
m = expect(fd, seen, r"\r\x1b\[K\s*\d+\.\d s\s+[\d,]+ ok\s+[\d,]+ ops/s\s+p99 \S+", "a progress line")
print("ok: progress", repr(m.group(0)))
expect(fd, seen, r"throughput|ops/s", "the final report")
_, code = os.waitpid(pid, 0)
if code != 0:
    sys.exit(f"FAIL: bench exited with {code}")
print("ok: bench")
"#;

#[test]
fn the_shell_edits_completes_and_remembers_and_bench_shows_progress() {
    let c = support::cluster::three("tty", false, &[]);
    c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
    let servers = c.nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
    let history =
        std::env::temp_dir().join(format!("raftlabkv-tty-history-{}", std::process::id()));
    let _ = std::fs::remove_file(&history);
    let out = Command::new("python3")
        .arg("-c")
        .arg(DRIVER)
        .arg(env!("CARGO_BIN_EXE_raftlabkv-client"))
        .arg(&servers)
        .arg(&history)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "the pty driver failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok: bench"), "{stdout}");
}
