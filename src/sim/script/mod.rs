//! Scripted tests of the core: a cluster driven message by message, each step printed and
//! compared with the output the script expects (in the spirit of toydb's goldenscripts and
//! etcd-io/raft's `testdata/*.txt`). The scripts live in `tests/scripts/*.txt`, and
//! `tests/scripts.rs` runs them; a learner can read one as a story.
//!
//! ## The file format
//!
//! ```text
//! # Comments and blank lines are kept as they are: they tell the story.
//! cluster n=3
//! ---
//! n1@0 follower last=0@0 commit=0 applied=0
//! ...
//!
//! # One or more command lines, then `---`, then what they printed, up to a blank line.
//! campaign n1
//! (stabilize)
//! status
//! ---
//! ...
//! ```
//!
//! A command in parentheses runs silently (its output is left out, as in toydb). After a block
//! that changed anything, the one-line status of every node is printed (unless the block ends
//! with a query such as `status`):
//! `n2@3 follower(n1) vote=n1 last=7@3 commit=7 applied=7 unsynced=1`: node and term, role (and
//! the leader it follows), what it is in its configuration unless a voter (`learner`, `removed`,
//! or `joining` before it has one), its vote, the last entry of its log, commit and applied
//! indexes, then its snapshot and the number of its writes no fsync has made durable yet, if any.
//! A script's cluster starts once every node's bootstrap (term 1 and the configuration entry
//! 1@1) is on disk.
//!
//! The runner regenerates the whole file — comments verbatim, each block's commands followed by
//! its fresh output — and compares it with the file. On a mismatch the test fails with a diff;
//! when the new output is right (the core changed on purpose), `UPDATE_SCRIPTS=1 cargo test
//! --release --test scripts` rewrites the expected outputs in place, and `git diff` shows what
//! changed. Writing a new script is the same: write the commands and comments, leave out the
//! outputs, and run the update.
//!
//! ## What an input prints
//!
//! Every input to a node is a line at the left margin — a delivered message, an fsync, some
//! ticks, a proposal — and what it caused is indented below it: the node's role or term changing
//! (`n2@0 follower ⇨ n2@1 follower(n1)`), entries it appended or truncated, the messages it sent
//! (those marked `(waits for n2's fsync)` leave only when that fsync completes), entries it
//! applied, reads it confirmed. Messages look like
//! `n1->n2 AppendEntries term=3 prev=5@2 entries=[6@3 7@3] commit=5 seq=4`
//! (the `Display` of [`crate::raft::Envelope`]).
//!
//! ## Commands
//!
//! Nodes are named `n1`, `n2`, …; a list of nodes left out means all of them.
//!
//! | command | what it does |
//! |---|---|
//! | `cluster n=3 [seed=1] [prevote=true] [check_quorum=true] [heartbeat=5] [election=30..60] [rpc_timeout=30] [max_entries=N] [inflight=1] [trailing=0]` | a cluster in manual mode (`inflight`: the pipelining window): nothing moves unless a command moves it |
//! | `tick [NODES] [N]` | ticks the nodes N times (default 1), one round at a time |
//! | `campaign NODE` | ticks the node until its election timeout fires (it sends PreVotes or RequestVotes) |
//! | `deliver [from=NODES] [to=NODES] [type=KINDS]` | delivers the matching messages now in flight, in the order they were sent (what they cause stays in flight) |
//! | `drop [from=NODES] [to=NODES] [type=KINDS]` | loses the matching messages now in flight |
//! | `sync NODES` | completes a simulated fsync on each: held messages leave, a leader counts its own entries |
//! | `stabilize` | delivers and syncs until nothing is in flight or waiting (no time passes) |
//! | `propose NODE COMMAND` | a client command on the node |
//! | `read NODE ID` | a linearizable read (ReadIndex) with that id |
//! | `partition NODES` | cuts the links between these nodes and the rest; `cut from=NODE to=NODE` cuts one direction; `heal` restores all |
//! | `crash NODE`, `restart NODE` | a crash loses every unsynced write; restart starts the node from its disk |
//! | `snapshot NODE` | the node's state machine saves a snapshot at what it applied; the log is compacted |
//! | `add-node NODE` | a new node starts with an empty log (it bootstraps nothing and waits for a configuration that holds it) |
//! | `change add NODE [learner\|voter] [force=true]`, `change promote NODE`, `change remove NODE` | one configuration change, proposed on the current leader (a refusal is printed) |
//! | `transfer [NODE]` | the leader hands its leadership to NODE, or to the most up-to-date voter |
//! | `status [NODES]`, `log [NODES]`, `members [NODES]`, `net` | print the status (with a leader's progress), the logs, the configuration each node has in force, the messages in flight and held |
//!
//! `KINDS` are message names as printed (`AppendEntries`, `PreVoteResponse`, …), comma-separated.

mod commands;
mod members;
mod show;

use std::path::Path;

use commands::Runner;

/// The command that rewrites the expected outputs in place.
pub const UPDATE_COMMAND: &str = "UPDATE_SCRIPTS=1 cargo test --release --test scripts";

/// True when `UPDATE_SCRIPTS` asks for the expected outputs to be rewritten.
pub fn update_requested() -> bool {
    std::env::var("UPDATE_SCRIPTS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Runs the script at `path` and compares it with its expected output; with `UPDATE_SCRIPTS`
/// set, rewrites the file instead when they differ.
pub fn check_file(path: &Path) -> Result<(), String> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    match check(&text, update_requested()).map_err(|e| format!("{name}: {e}"))? {
        None => Ok(()),
        Some(rewritten) => {
            std::fs::write(path, rewritten).map_err(|e| format!("{name}: {e}"))?;
            eprintln!("rewrote {name}");
            Ok(())
        }
    }
}

/// Runs a script's text. `Ok(None)`: the output is the one expected. `Ok(Some(text))`: it is
/// not, and `update` asked for the regenerated text. `Err`: it is not (a diff and the way to
/// rewrite), or the script itself is wrong (an unknown command, a bad argument).
pub fn check(text: &str, update: bool) -> Result<Option<String>, String> {
    let actual = run(text)?;
    if actual == text {
        Ok(None)
    } else if update {
        Ok(Some(actual))
    } else {
        Err(format!(
            "the output differs from the expected output (- expected, + actual):\n{}\n\
             If the new output is right, rewrite the expected outputs with\n    {UPDATE_COMMAND}\n\
             and read the diff before committing it.",
            diff(text, &actual)
        ))
    }
}

/// True for a line that is kept verbatim: blank, or a comment.
fn is_prose(line: &str) -> bool {
    line.trim().is_empty() || line.starts_with('#')
}

/// Runs every block of a script and returns the script with each block's output regenerated.
pub fn run(text: &str) -> Result<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut runner = Runner::default();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        if is_prose(lines[i]) {
            out.push_str(lines[i]);
            out.push('\n');
            i += 1;
            continue;
        }
        if lines[i] == "---" {
            return Err(format!("line {}: `---` with no command before it", i + 1));
        }
        let mut commands = Vec::new();
        while i < lines.len() && !is_prose(lines[i]) && lines[i] != "---" {
            commands.push((i + 1, lines[i]));
            i += 1;
        }
        // The old output, if any, is replaced.
        if i < lines.len() && lines[i] == "---" {
            i += 1;
            while i < lines.len() && !is_prose(lines[i]) {
                i += 1;
            }
        }
        let output = runner.block(&commands)?;
        for (_, command) in &commands {
            out.push_str(command);
            out.push('\n');
        }
        out.push_str("---\n");
        if output.is_empty() {
            out.push_str("ok\n");
        }
        for line in output {
            // A blank line would end the output: keep every line visible.
            out.push_str(if line.trim().is_empty() { "." } else { &line });
            out.push('\n');
        }
        if i < lines.len() && !lines[i].trim().is_empty() {
            out.push('\n');
        }
    }
    Ok(out)
}

/// A line diff of `expected` and `actual` (longest common subsequence), showing only the changed
/// lines with two lines of context, each hunk headed by its line number in `expected`.
pub fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if a[i] == b[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    // (expected line number, marker, text) for every line of both, in order.
    let mut ops: Vec<(usize, char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((i + 1, ' ', a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || lcs[at(i + 1, j)] >= lcs[at(i, j + 1)]) {
            ops.push((i + 1, '-', a[i]));
            i += 1;
        } else {
            ops.push((i + 1, '+', b[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].1 != ' ').collect();
    let near = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= 2);
    let mut out = String::new();
    let mut last_shown = None;
    for (k, (line, marker, text)) in ops.iter().enumerate() {
        if !near(k) {
            continue;
        }
        if last_shown.is_none_or(|l| l + 1 != k) {
            out.push_str(&format!("@@ line {line} @@\n"));
        }
        out.push_str(&format!("{marker} {text}\n"));
        last_shown = Some(k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "# A leader is elected.\n\
        cluster n=3\n\
        (campaign n1)\n\
        (stabilize)\n\
        status n1\n\
        ---\n\
        n1@2 leader last=2@2 commit=2 applied=2\n  \
        n1 progress n2 match=2 next=3\n  \
        n1 progress n3 match=2 next=3\n";

    #[test]
    fn script_matching_output_passes_and_comments_pass_through() {
        assert_eq!(check(SCRIPT, false), Ok(None));
        assert_eq!(run(SCRIPT).unwrap(), SCRIPT);
    }

    #[test]
    fn script_mutated_output_fails_with_a_diff_and_the_update_command() {
        let mutated = SCRIPT.replace("commit=2 applied=2", "commit=0 applied=2");
        let err = check(&mutated, false).unwrap_err();
        assert!(err.contains("- n1@2 leader last=2@2 commit=0 applied=2"), "{err}");
        assert!(err.contains("+ n1@2 leader last=2@2 commit=2 applied=2"), "{err}");
        assert!(err.contains(UPDATE_COMMAND), "{err}");
        // A line the expected output lacks fails too, and so does a missing one.
        assert!(check(&format!("{SCRIPT}n2@1 follower\n"), false).is_err());
        assert!(check(&SCRIPT.replace("  n1 progress n3 match=2 next=3\n", ""), false).is_err());
    }

    #[test]
    fn script_update_fills_in_missing_outputs() {
        let bare = "# A leader is elected.\ncluster n=3\n(campaign n1)\n(stabilize)\nstatus n1\n";
        assert_eq!(check(bare, true), Ok(Some(SCRIPT.to_string())));
        let rewritten = check(&SCRIPT.replace("commit=2", "commit=9"), true).unwrap();
        assert_eq!(rewritten.as_deref(), Some(SCRIPT));
    }

    #[test]
    fn script_errors_name_the_line() {
        let err = run("cluster n=3\n\nfrobnicate n1\n").unwrap_err();
        assert!(err.starts_with("line 3:") && err.contains("frobnicate"), "{err}");
        let err = run("cluster n=3\n\ntick n1 bogus=1\n").unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        assert!(run("tick n1\n").unwrap_err().contains("cluster"));
        let err = run("cluster n=3\n\ndeliver type=Heartbeat\n").unwrap_err();
        assert!(err.contains("unknown message type `Heartbeat`"), "{err}");
        assert!(run("cluster n=3\n\ndeliver to=n7\n").unwrap_err().contains("unknown node"));
    }

    #[test]
    fn script_membership_commands_check_their_arguments_and_print_refusals() {
        let err = run("cluster n=3\n\nchange frob n4\n").unwrap_err();
        assert!(err.starts_with("line 3:") && err.contains("`change` takes"), "{err}");
        assert!(run("cluster n=3\n\nadd-node n1\n").unwrap_err().contains("exists already"));
        // No leader yet: the change is refused as output, not as a script error.
        let out = run("cluster n=3\n\nchange add n4 learner\ntransfer n2\n").unwrap();
        assert!(out.contains("no leader to propose add n4 learner"), "{out}");
        assert!(out.contains("no leader to transfer leadership"), "{out}");
        let out = run("cluster n=3\n(campaign n1)\n(stabilize)\n\ntransfer n9\nmembers n1\n");
        let out = out.unwrap();
        assert!(out.contains("n1 refuses to transfer its leadership to n9: "), "{out}");
        assert!(out.contains("n1 configuration at 1 (committed): voters [n1 n2 n3]"), "{out}");
    }

    #[test]
    fn script_diff_shows_only_changed_hunks() {
        let a = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let b = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        assert_eq!(diff(a, b), "@@ line 3 @@\n  3\n  4\n- 5\n+ five\n  6\n  7\n");
    }
}
