//! The commands of the `raftlabkv-client` tool, shared by its one-shot mode and its interactive
//! shell: parsing a shell line into a [`Command`], and running a command against a [`Client`] to
//! produce the text (or JSON) to print.
//!
//! Shell syntax (the commands of the original Go project, plus `help`):
//!
//! ```text
//! put <key> <value...>   the value is the rest of the line, spaces included
//! get <key>
//! delete <key>
//! getall
//! status [--explain]
//! help
//! exit                   (or quit, or end of input)
//! ```
//!
//! Keys are single words in the shell (they end at the first space); a key with spaces can be
//! written with the one-shot mode, where the shell's quoting applies.

use std::fmt::Write as _;

use serde_json::json;

use super::Client;
use crate::error::{Error, Result};

/// One command of the tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `put <key> <value...>`
    Put {
        /// The key.
        key: String,
        /// The value (the rest of the line).
        value: String,
    },
    /// `get <key>`
    Get {
        /// The key.
        key: String,
    },
    /// `delete <key>`
    Delete {
        /// The key.
        key: String,
    },
    /// `getall`
    GetAll,
    /// `status` (`status --explain`: sentences instead of the table)
    Status {
        /// Say in sentences what is happening and what to do ([`super::explain`]).
        explain: bool,
    },
    /// `help`
    Help,
    /// `exit` or `quit`
    Exit,
    /// An empty (or blank) line: nothing to do.
    Nothing,
}

/// The help text of the interactive shell.
pub const HELP: &str = "\
commands:
  put <key> <value...>   write a key (the value is the rest of the line)
  get <key>              read a key
  delete <key>           delete a key
  getall                 list every key and value
  status                 show each server's Raft status (a table)
  status --explain       say what is happening in the cluster and what to do
  help                   show this help
  exit                   leave the shell (end of input does too)";

/// Parses one shell line. Errors are usage messages, meant to be printed.
pub fn parse_line(line: &str) -> Result<Command, String> {
    let line = line.trim_start();
    let (word, rest) = split_word(line);
    let word = word.to_ascii_lowercase();
    let args = rest.trim_start();
    let no_args = |cmd: Command| {
        if args.trim().is_empty() { Ok(cmd) } else { Err(format!("`{word}` takes no arguments")) }
    };
    let one_key = |usage: &str| -> Result<String, String> {
        let (key, extra) = split_word(args);
        if key.is_empty() {
            Err(format!("usage: {usage}"))
        } else if !extra.trim().is_empty() {
            Err(format!("usage: {usage} (keys are single words in the shell)"))
        } else {
            Ok(key.to_string())
        }
    };
    match word.as_str() {
        "" => Ok(Command::Nothing),
        "put" | "set" => {
            let (key, value) = split_word(args);
            let value = value.trim();
            if key.is_empty() || value.trim().is_empty() {
                return Err("usage: put <key> <value...>".into());
            }
            Ok(Command::Put { key: key.to_string(), value: value.to_string() })
        }
        "get" => Ok(Command::Get { key: one_key("get <key>")? }),
        "delete" | "del" => Ok(Command::Delete { key: one_key("delete <key>")? }),
        "getall" | "all" => no_args(Command::GetAll),
        "status" => match args.trim() {
            "" => Ok(Command::Status { explain: false }),
            "--explain" | "explain" | "-e" => Ok(Command::Status { explain: true }),
            _ => Err("usage: status [--explain]".into()),
        },
        "help" | "?" => Ok(Command::Help),
        "exit" | "quit" => Ok(Command::Exit),
        _ => Err(format!("unknown command `{word}` (try `help`)")),
    }
}

/// The shell's command words, for tab completion.
pub const COMMANDS: &[&str] = &["delete", "exit", "get", "getall", "help", "put", "status"];

/// Tab completion of a shell line with the cursor at byte `pos`: the start of the word being
/// completed and the candidates for it (command names in the first word, `--explain` after
/// `status`; keys are not completed, as that would cost a read of every key).
pub fn complete(line: &str, pos: usize) -> (usize, Vec<String>) {
    let Some(before) = line.get(..pos) else {
        return (pos, Vec::new());
    };
    let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let word = &before[start..];
    let earlier: Vec<&str> = before[..start].split_whitespace().collect();
    let candidates: Vec<String> = match earlier.as_slice() {
        [] => COMMANDS.iter().filter(|c| c.starts_with(word)).map(|c| c.to_string()).collect(),
        [cmd] if cmd.eq_ignore_ascii_case("status") && "--explain".starts_with(word) => {
            vec!["--explain".to_string()]
        }
        _ => Vec::new(),
    };
    (start, candidates)
}

/// Splits off the first whitespace-delimited word; the rest keeps its leading whitespace.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// How to run and print commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Print JSON instead of text.
    pub json: bool,
    /// Use stale (local) reads for `get` and `getall`.
    pub stale: bool,
    /// Use lease reads for `get` (`?consistency=lease`; `stale` wins if both are set).
    pub lease: bool,
}

/// Runs a command and returns what to print on standard output (without a final newline).
///
/// A `get` of a missing key is an error (`NotFound`), so that the one-shot mode exits non-zero.
/// `status` fails only if no server answered. `Help`, `Exit` and `Nothing` do not touch the
/// network.
pub fn run(client: &Client, command: &Command, options: RunOptions) -> Result<String> {
    match command {
        Command::Put { key, value } => {
            let put = client.put(key, value)?;
            Ok(if options.json {
                json!({"status": "ok", "key": put.key, "index": put.index, "term": put.term})
                    .to_string()
            } else {
                format!("OK (index {}, term {})", put.index, put.term)
            })
        }
        Command::Get { key } => {
            let value = match (options.stale, options.lease) {
                (true, _) => client.get_stale(key)?,
                (false, true) => client.get_with(key, crate::client::Consistency::Lease)?,
                (false, false) => client.get(key)?,
            };
            match value {
                Some(value) if options.json => Ok(json!({"key": key, "value": value}).to_string()),
                Some(value) => Ok(value),
                None => Err(Error::NotFound(format!("no such key: {key:?}"))),
            }
        }
        Command::Delete { key } => {
            client.delete(key)?;
            Ok(if options.json {
                json!({"status": "ok", "key": key}).to_string()
            } else {
                "OK".to_string()
            })
        }
        Command::GetAll => {
            let all = if options.stale { client.get_all_stale()? } else { client.get_all()? };
            if options.json {
                return Ok(json!(all).to_string());
            }
            if all.is_empty() {
                return Ok("(no keys)".to_string());
            }
            let mut out = String::new();
            for (k, v) in &all {
                let _ = writeln!(out, "{k} = {v}");
            }
            out.pop();
            Ok(out)
        }
        Command::Status { explain } => status(client, *explain, options),
        Command::Help => Ok(HELP.to_string()),
        Command::Exit | Command::Nothing => Ok(String::new()),
    }
}

/// `status`: the table (or JSON) of [`super::status_table`], or with `explain` the sentences of
/// [`super::explain`] (one per line; as JSON `{"explain": [...], "servers": [...]}`).
fn status(client: &Client, explain: bool, options: RunOptions) -> Result<String> {
    use super::status_table::{as_replies, rows, table, to_json};
    let all = client.cluster_status();
    let answered = all.iter().filter(|(_, r)| r.is_ok()).count();
    let text = match (explain, options.json) {
        (false, true) => to_json(&all).to_string(),
        (false, false) => table(&rows(&as_replies(&all))),
        (true, json) => {
            let sentences = super::explain::explain(&as_replies(&all));
            if json {
                json!({"explain": sentences, "servers": to_json(&all)}).to_string()
            } else {
                sentences.join("\n")
            }
        }
    };
    if answered == 0 {
        // Still show what each server said, as the error.
        return Err(Error::Unavailable(format!("no server answered:\n{text}")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Command {
        Command::Put { key: key.into(), value: value.into() }
    }

    #[test]
    fn completes_commands_and_the_explain_flag() {
        let c = |line: &str| complete(line, line.len());
        assert_eq!(c("st"), (0, vec!["status".to_string()]));
        assert_eq!(c("ge"), (0, vec!["get".to_string(), "getall".to_string()]));
        assert_eq!(c(""), (0, COMMANDS.iter().map(|s| s.to_string()).collect()));
        assert_eq!(c("  del"), (2, vec!["delete".to_string()]));
        assert_eq!(c("status --e"), (7, vec!["--explain".to_string()]));
        assert_eq!(c("status "), (7, vec!["--explain".to_string()]));
        assert_eq!(c("put k"), (4, Vec::<String>::new()));
        assert_eq!(c("xyz"), (0, Vec::<String>::new()));
        // The cursor inside the line, and not on a character boundary: no panic.
        assert_eq!(complete("get k", 2), (0, vec!["get".to_string(), "getall".to_string()]));
        assert_eq!(complete("é", 1), (1, Vec::<String>::new()));
        // Every candidate is a command the shell knows.
        for cmd in COMMANDS {
            let line = match *cmd {
                "put" => "put k v".to_string(),
                "get" | "delete" => format!("{cmd} k"),
                other => other.to_string(),
            };
            assert!(parse_line(&line).is_ok(), "{line}");
        }
    }

    #[test]
    fn parses_the_shell_commands() {
        assert_eq!(parse_line("put k v"), Ok(put("k", "v")));
        assert_eq!(parse_line("  put   k   hello   world  "), Ok(put("k", "hello   world")));
        assert_eq!(parse_line("PUT k v\r\n"), Ok(put("k", "v")));
        assert_eq!(parse_line("get a/b"), Ok(Command::Get { key: "a/b".into() }));
        assert_eq!(parse_line("delete é"), Ok(Command::Delete { key: "é".into() }));
        assert_eq!(parse_line("getall"), Ok(Command::GetAll));
        assert_eq!(parse_line("status"), Ok(Command::Status { explain: false }));
        assert_eq!(parse_line("status --explain"), Ok(Command::Status { explain: true }));
        assert!(parse_line("status --bogus").is_err());
        assert_eq!(parse_line("help"), Ok(Command::Help));
        assert_eq!(parse_line("exit"), Ok(Command::Exit));
        assert_eq!(parse_line("quit"), Ok(Command::Exit));
        assert_eq!(parse_line(""), Ok(Command::Nothing));
        assert_eq!(parse_line("   \t "), Ok(Command::Nothing));
    }

    #[test]
    fn rejects_bad_lines_with_usage() {
        for line in [
            "put",
            "put k",
            "put k   ",
            "get",
            "get a b",
            "delete",
            "getall x",
            "status now",
            "frobnicate",
        ] {
            let err = parse_line(line).expect_err(line);
            assert!(!err.is_empty(), "{line}");
        }
    }
}
