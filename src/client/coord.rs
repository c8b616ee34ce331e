//! The command line of the coordination API: the text format `raftlabkv-client txn` reads (as
//! `etcdctl txn` does), and how ranges, transactions and conditional writes are printed
//! (`-w simple|table|json`).
//!
//! # The `txn` text format
//!
//! Three sections separated by a blank line: compares, then the operations to run when they all
//! hold, then those to run otherwise. A key or value is a bare word or a JSON string in double
//! quotes (for spaces, quotes, unicode escapes).
//!
//! ```text
//! mod("cfg/a") == 42
//! version(cfg/lock) == 0
//!
//! put cfg/a "new value"
//! del cfg/b
//! get cfg/c
//! range cfg/
//!
//! get cfg/a
//! ```
//!
//! Compares: `value(K)`, `version(K)`, `create(K)`, `mod(K)`, then `==` (or `=`), `!=`, `<` or
//! `>`, then a value (a number for all but `value`). Operations: `put K V`, `get K`, `del K`,
//! `del --prefix P`, `range P` (every key with prefix `P`).

use std::fmt::Write as _;

use super::{CasResult, PutIf, TxnResult};
use crate::error::{Error, Result};
use crate::kv::{
    Compare, CompareOp, DeleteSpec, KvItem, RangeReply, RangeSpec, Target, Txn, TxnOp, TxnResponse,
};

/// How results are printed (`-w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Plain text, one thing per line.
    #[default]
    Simple,
    /// Aligned columns with a header.
    Table,
    /// JSON, as the server answered.
    Json,
}

/// Parses the `txn` text format (see the module docs).
pub fn parse_txn(text: &str) -> Result<Txn> {
    let mut txn = Txn::default();
    let mut section = 0;
    let mut seen_in_section = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = |what: String| Error::BadRequest(format!("line {}: {what}", n + 1));
        if line.is_empty() {
            if seen_in_section || section == 0 {
                section += 1;
                seen_in_section = false;
            }
            if section > 2 {
                return Err(at("more than three sections (compares, success, failure)".into()));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        seen_in_section = true;
        match section {
            0 => txn.compare.push(parse_compare(line).map_err(at)?),
            1 => txn.success.push(parse_op(line).map_err(at)?),
            _ => txn.failure.push(parse_op(line).map_err(at)?),
        }
    }
    Ok(txn)
}

/// Splits a line into words: bare words, or JSON strings in double quotes.
fn words(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<String>();
            let word = match stream.next() {
                Some(Ok(w)) => w,
                _ => return Err(format!("unterminated or bad quoted string: {rest}")),
            };
            let used = stream.byte_offset();
            out.push(word);
            rest = rest[used..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    Ok(out)
}

fn parse_compare(line: &str) -> std::result::Result<Compare, String> {
    let usage = || format!("expected a compare like mod(\"key\") == 42, got {line:?}");
    let open = line.find('(').ok_or_else(usage)?;
    let close = line.rfind(')').ok_or_else(usage)?;
    let target = match line[..open].trim() {
        "value" => Target::Value,
        "version" => Target::Version,
        "create" | "create_revision" => Target::CreateRevision,
        "mod" | "mod_revision" => Target::ModRevision,
        other => {
            return Err(format!("unknown compare target {other:?} (value, version, create, mod)"));
        }
    };
    let key = match words(&line[open + 1..close])?.as_slice() {
        [k] => k.clone(),
        _ => return Err(usage()),
    };
    let rest = words(&line[close + 1..])?;
    let [op, value] = rest.as_slice() else { return Err(usage()) };
    let op = match op.as_str() {
        "==" | "=" => CompareOp::Eq,
        "!=" => CompareOp::Ne,
        "<" => CompareOp::Lt,
        ">" => CompareOp::Gt,
        other => return Err(format!("unknown compare op {other:?} (==, !=, <, >)")),
    };
    let value = if target == Target::Value {
        serde_json::Value::String(value.clone())
    } else {
        let n: u64 =
            value.parse().map_err(|_| format!("{value:?} is not a revision or version"))?;
        n.into()
    };
    Ok(Compare { key, target, op, value })
}

fn parse_op(line: &str) -> std::result::Result<TxnOp, String> {
    let w = words(line)?;
    let s: Vec<&str> = w.iter().map(String::as_str).collect();
    Ok(match s.as_slice() {
        ["put", k, v] => TxnOp::Put { key: k.to_string(), value: v.to_string() },
        ["get", k] => TxnOp::Get { key: k.to_string() },
        ["del" | "delete", "--prefix", p] => {
            TxnOp::Delete(DeleteSpec { prefix: Some(p.to_string()), ..DeleteSpec::default() })
        }
        ["del" | "delete", k] => {
            TxnOp::Delete(DeleteSpec { key: Some(k.to_string()), ..DeleteSpec::default() })
        }
        ["range", p] => {
            TxnOp::Range(RangeSpec { prefix: Some(p.to_string()), ..RangeSpec::default() })
        }
        _ => {
            return Err(format!(
                "expected put K V, get K, del K, del --prefix P or range P, got {line:?}"
            ));
        }
    })
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The keys of a range (or a `get --prefix`).
pub fn render_range(r: &RangeReply, format: Format) -> String {
    match format {
        Format::Json => json(r),
        Format::Simple => {
            let mut out = String::new();
            for kv in &r.kvs {
                let _ = writeln!(out, "{}", kv.key);
                if let Some(v) = &kv.value {
                    let _ = writeln!(out, "{v}");
                }
            }
            if r.kvs.is_empty() || r.more {
                let _ = write!(out, "({} keys", r.count);
                if let Some(next) = &r.next {
                    let _ = write!(out, "; more from {next:?}");
                }
                out.push(')');
            }
            out.trim_end().to_string()
        }
        Format::Table => {
            let mut out = table(&r.kvs);
            let _ = write!(out, "{} keys at revision {}", r.count, r.revision);
            if let Some(next) = &r.next {
                let _ = write!(out, "; more from {next:?}");
            }
            out
        }
    }
}

fn table(kvs: &[KvItem]) -> String {
    let width = kvs.iter().map(|kv| kv.key.chars().count()).max().unwrap_or(3).max(3);
    let mut out =
        format!("{:<width$}  {:>8}  {:>8}  {:>7}  VALUE\n", "KEY", "CREATE", "MOD", "VERSION");
    for kv in kvs {
        let _ = writeln!(
            out,
            "{:<width$}  {:>8}  {:>8}  {:>7}  {}",
            kv.key,
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.value.as_deref().unwrap_or("")
        );
    }
    out
}

/// A transaction's outcome: `SUCCESS` or `FAILURE`, then each response.
pub fn render_txn(r: &TxnResult, format: Format) -> String {
    if format == Format::Json {
        return json(r);
    }
    let mut out = String::from(if r.succeeded { "SUCCESS" } else { "FAILURE" });
    let _ = write!(out, " (revision {})", r.revision);
    for resp in &r.responses {
        out.push('\n');
        match resp {
            TxnResponse::Put { key } => out.push_str(&format!("put {key}: OK")),
            TxnResponse::Delete { deleted } => out.push_str(&format!("del: {deleted} deleted")),
            TxnResponse::Get { key, kv: Some(kv) } => {
                out.push_str(&format!("get {key}: {}", kv.value.as_deref().unwrap_or("")))
            }
            TxnResponse::Get { key, kv: None } => out.push_str(&format!("get {key}: (absent)")),
            TxnResponse::Range(range) => out.push_str(&render_range(range, format)),
        }
    }
    out
}

/// A conditional put's outcome; `Err` (exit status 1) when it was refused.
pub fn render_put_if(key: &str, r: &PutIf, format: Format) -> std::result::Result<String, String> {
    let text = match (r, format) {
        (_, Format::Json) => json(r),
        (PutIf::Written { index, revision, .. }, _) => {
            format!("OK (index {index}, revision {revision})")
        }
        (PutIf::Refused { current: Some(kv) }, _) => format!(
            "not written: {key} is at mod_revision {} (version {}, value {:?})",
            kv.mod_revision,
            kv.version,
            kv.value.as_deref().unwrap_or("")
        ),
        (PutIf::Refused { current: None }, _) => format!("not written: {key} does not exist"),
    };
    match r {
        PutIf::Written { .. } => Ok(text),
        PutIf::Refused { .. } => Err(text),
    }
}

/// A compare-and-set's outcome; `Err` (exit status 1) when it did not swap.
pub fn render_cas(key: &str, r: &CasResult, format: Format) -> std::result::Result<String, String> {
    let text = match format {
        Format::Json => json(r),
        _ if r.succeeded => format!("OK (revision {})", r.revision),
        _ => match &r.current {
            Some(kv) => format!(
                "not swapped: {key} is {:?} (mod_revision {})",
                kv.value.as_deref().unwrap_or(""),
                kv.mod_revision
            ),
            None => format!("not swapped: {key} does not exist"),
        },
    };
    if r.succeeded { Ok(text) } else { Err(text) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_reads_compares_and_both_branches() {
        let text = "mod(\"cfg/a\") == 42\nversion(cfg/lock) = 0\nvalue(\"k w\") != \"a \\\"b\\\"\"\n\nput cfg/a \"new value\"\ndel cfg/b\ndel --prefix tmp/\nget cfg/c\nrange cfg/\n\nget cfg/a\n";
        let t = parse_txn(text).unwrap();
        assert_eq!(t.compare.len(), 3);
        assert_eq!(
            (t.compare[0].target, t.compare[0].value.clone()),
            (Target::ModRevision, 42.into())
        );
        assert_eq!(t.compare[1].op, CompareOp::Eq);
        assert_eq!(
            (t.compare[2].key.as_str(), t.compare[2].value.as_str()),
            ("k w", Some("a \"b\""))
        );
        assert_eq!(t.success.len(), 5);
        assert_eq!(t.success[0], TxnOp::Put { key: "cfg/a".into(), value: "new value".into() });
        assert!(matches!(&t.success[2], TxnOp::Delete(d) if d.prefix.as_deref() == Some("tmp/")));
        assert_eq!(t.failure, vec![TxnOp::Get { key: "cfg/a".into() }]);
        // No compares: start with a blank line.
        let t = parse_txn("\nput a 1\n").unwrap();
        assert_eq!((t.compare.len(), t.success.len()), (0, 1));
    }

    #[test]
    fn bad_text_names_the_line() {
        for (text, line) in [
            ("size(a) == 1", "line 1"),
            ("mod(a) ~ 1", "line 1"),
            ("mod(a) == x", "line 1"),
            ("mod(a) == 1\n\nfly a", "line 3"),
            ("mod(a) == 1\n\nput a", "line 3"),
            ("value(a) == \"open", "line 1"),
            ("\n\n\n\nput a 1\n\nget a\n\nget b", "line"),
        ] {
            let e = parse_txn(text).unwrap_err().to_string();
            assert!(e.contains(line), "{text:?}: {e}");
        }
    }

    #[test]
    fn ranges_render_in_each_format() {
        let kv = |k: &str, v: Option<&str>| KvItem {
            key: k.into(),
            value: v.map(str::to_string),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
        };
        let r = RangeReply {
            revision: 9,
            count: 3,
            more: true,
            next: Some("c".into()),
            kvs: vec![kv("a", Some("1")), kv("bé", Some("2"))],
        };
        assert_eq!(render_range(&r, Format::Simple), "a\n1\nbé\n2\n(3 keys; more from \"c\")");
        let t = render_range(&r, Format::Table);
        assert!(t.starts_with("KEY"), "{t}");
        let row: Vec<&str> = t.lines().nth(2).unwrap_or("").split_whitespace().collect();
        assert_eq!(row, ["bé", "2", "5", "3", "2"], "{t}");
        let back: RangeReply = serde_json::from_str(&render_range(&r, Format::Json)).unwrap();
        assert_eq!(back, r);
        let keys_only = RangeReply { kvs: vec![kv("a", None)], more: false, next: None, ..r };
        assert_eq!(render_range(&keys_only, Format::Simple), "a");
    }
}
