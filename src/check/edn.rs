//! A reader for porcupine's Jepsen-EDN key-value histories (`test_data/kv/*.txt`).
//!
//! One EDN map per line, in real-time order:
//!
//! ```text
//! {:process 3, :type :invoke, :f :append, :key "1", :value "x 3 0 y"}
//! {:process 3, :type :ok, :f :append, :key "1", :value "x 3 0 y"}
//! {:process 0, :type :invoke, :f :get, :key "5", :value nil}
//! {:process 0, :type :ok, :f :get, :key "5", :value ""}
//! ```
//!
//! Only the small subset of EDN these files use is understood: a flat map of keywords to
//! keywords, strings, integers and `nil`.

use std::collections::HashMap;

use super::{KvInput, KvOutput, Operation};

/// Parses porcupine's kv history format into operations.
///
/// * `:f` is `:get`, `:put` or `:append`; `:type` is `:invoke`, `:ok`, `:info` or `:fail`.
/// * Call and return times are the (1-based) line numbers of the `:invoke` and its completion.
/// * `:info` (and an `:invoke` never completed) is an unknown outcome: `return_time: None`,
///   output [`KvOutput::Unknown`].
/// * `:fail` means the operation definitely did not happen, so it is left out of the history.
/// * Lines whose `:process` is a keyword (Jepsen's `:nemesis`) are ignored; blank lines too.
///
/// In these data sets every key starts as "": check the result with
/// [`KvModel::porcupine`](super::KvModel::porcupine).
///
/// Errors name the line number.
pub fn parse_porcupine_kv(text: &str) -> Result<Vec<Operation>, String> {
    let mut ops: Vec<Option<Operation>> = Vec::new();
    // process -> (index into ops, line of its invoke)
    let mut pending: HashMap<u64, (usize, usize)> = HashMap::new();

    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let err = |msg: String| format!("line {line_no}: {msg}");
        let Some(record) = Record::parse(line).map_err(err)? else { continue };
        let process = record.process;
        match record.kind.as_str() {
            "invoke" => {
                if let Some((_, at)) = pending.get(&process) {
                    return Err(err(format!(
                        "process {process} invokes while its operation from line {at} is pending"
                    )));
                }
                let input = record.input().map_err(err)?;
                pending.insert(process, (ops.len(), line_no));
                ops.push(Some(Operation {
                    client_id: process,
                    input,
                    call: line_no as u64,
                    output: KvOutput::Unknown,
                    return_time: None,
                }));
            }
            "ok" | "fail" | "info" => {
                let (idx, at) = pending
                    .remove(&process)
                    .ok_or_else(|| err(format!("process {process} completes nothing pending")))?;
                let slot = ops
                    .get_mut(idx)
                    .ok_or_else(|| err("internal: lost pending operation".into()))?;
                record.complete(slot, at, line_no).map_err(err)?;
            }
            other => return Err(err(format!("unknown :type :{other}"))),
        }
    }
    Ok(ops.into_iter().flatten().collect())
}

/// One line of a history: an event of one process.
struct Record {
    process: u64,
    /// `:type`: `invoke`, `ok`, `fail` or `info`.
    kind: String,
    /// `:f`: `get`, `put` or `append`.
    f: String,
    key: String,
    value: Option<String>,
}

impl Record {
    /// The record on `line`; `None` for the nemesis's (whose `:process` is a keyword).
    fn parse(line: &str) -> Result<Option<Record>, String> {
        let map = parse_map(line)?;
        let field = |name: &str| -> Result<&Value, String> {
            map.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("missing :{name}"))
        };
        let process = match field("process")? {
            Value::Int(p) if *p >= 0 => *p as u64,
            Value::Keyword(_) => return Ok(None), // the nemesis
            other => return Err(format!(":process must be a number, got {other:?}")),
        };
        let kind = keyword(field("type")?).ok_or(":type must be a keyword")?.to_string();
        let f = keyword(field("f")?).ok_or(":f must be a keyword")?.to_string();
        let key = match field("key")? {
            Value::Str(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            other => return Err(format!(":key must be a string, got {other:?}")),
        };
        let value = match map.iter().find(|(k, _)| k == "value").map(|(_, v)| v) {
            None | Some(Value::Nil) => None,
            Some(Value::Str(s)) => Some(s.clone()),
            Some(Value::Int(n)) => Some(n.to_string()),
            Some(other) => return Err(format!(":value must be a string, got {other:?}")),
        };
        Ok(Some(Record { process, kind, f, key, value }))
    }

    /// What an `:invoke` asks for.
    fn input(self) -> Result<KvInput, String> {
        let Record { f, key, value, .. } = self;
        match f.as_str() {
            "get" => Ok(KvInput::Get { key }),
            "put" | "append" => {
                let value = value.ok_or_else(|| format!(":{f} needs a :value"))?;
                if f == "put" {
                    Ok(KvInput::Put { key, value })
                } else {
                    Ok(KvInput::Append { key, value })
                }
            }
            other => Err(format!("unknown :f :{other}")),
        }
    }

    /// Completes the operation in `slot`, invoked on line `at`, with this `:ok`, `:fail` or
    /// `:info` on line `line_no`.
    fn complete(
        self,
        slot: &mut Option<Operation>,
        at: usize,
        line_no: usize,
    ) -> Result<(), String> {
        let Some(op) = slot.as_mut() else {
            return Err("internal: pending operation already removed".into());
        };
        let invoked_f = match op.input {
            KvInput::Get { .. } => "get",
            KvInput::Put { .. } => "put",
            _ => "append",
        };
        let (f, key) = (self.f.as_str(), self.key.as_str());
        if invoked_f != f || op.input.key() != Some(key) {
            return Err(format!("completion :{f} {key:?} does not match the invoke on line {at}"));
        }
        match self.kind.as_str() {
            "ok" => {
                op.return_time = Some(line_no as u64);
                op.output = match f {
                    "get" => KvOutput::Value(self.value),
                    _ => KvOutput::Ok,
                };
            }
            "fail" => *slot = None,
            _ => {} // info: stays Unknown with no return
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Keyword(String),
    Str(String),
    Int(i64),
    Nil,
}

fn keyword(v: &Value) -> Option<&str> {
    match v {
        Value::Keyword(k) => Some(k),
        _ => None,
    }
}

/// Parses `{:k v, :k v ...}` into (keyword name without the colon, value) pairs.
fn parse_map(line: &str) -> Result<Vec<(String, Value)>, String> {
    let mut p = Parser { chars: line.char_indices().peekable(), text: line };
    p.skip_separators();
    p.expect('{')?;
    let mut out = Vec::new();
    loop {
        p.skip_separators();
        match p.peek() {
            Some('}') => {
                p.bump();
                break;
            }
            Some(':') => {
                let Value::Keyword(k) = p.value()? else {
                    return Err("internal: keyword expected".into());
                };
                p.skip_separators();
                let v = p.value()?;
                out.push((k, v));
            }
            Some(c) => return Err(format!("expected a keyword or '}}', found {c:?}")),
            None => return Err("unterminated map".into()),
        }
    }
    p.skip_separators();
    if let Some(c) = p.peek() {
        return Err(format!("unexpected {c:?} after the map"));
    }
    Ok(out)
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    text: &'a str,
}

impl Parser<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().map(|&(_, c)| c)
    }

    fn bump(&mut self) -> Option<char> {
        self.chars.next().map(|(_, c)| c)
    }

    fn pos(&mut self) -> usize {
        self.chars.peek().map_or(self.text.len(), |&(i, _)| i)
    }

    /// EDN treats commas as whitespace.
    fn skip_separators(&mut self) {
        while self.peek().is_some_and(|c| c.is_whitespace() || c == ',') {
            self.bump();
        }
    }

    fn expect(&mut self, want: char) -> Result<(), String> {
        match self.bump() {
            Some(c) if c == want => Ok(()),
            Some(c) => Err(format!("expected {want:?}, found {c:?}")),
            None => Err(format!("expected {want:?}, found end of line")),
        }
    }

    /// A bare token: everything up to a separator or a closing brace.
    fn token(&mut self) -> &str {
        let start = self.pos();
        while self.peek().is_some_and(|c| !(c.is_whitespace() || c == ',' || c == '}' || c == '{'))
        {
            self.bump();
        }
        let end = self.pos();
        &self.text[start..end]
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some(':') => {
                self.bump();
                let name = self.token();
                if name.is_empty() {
                    return Err("empty keyword".into());
                }
                Ok(Value::Keyword(name.to_string()))
            }
            Some('"') => {
                self.bump();
                let mut s = String::new();
                loop {
                    match self.bump() {
                        Some('"') => return Ok(Value::Str(s)),
                        Some('\\') => match self.bump() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some('r') => s.push('\r'),
                            Some(c @ ('"' | '\\')) => s.push(c),
                            Some(c) => return Err(format!("unsupported escape \\{c}")),
                            None => return Err("unterminated string".into()),
                        },
                        Some(c) => s.push(c),
                        None => return Err("unterminated string".into()),
                    }
                }
            }
            Some(_) => {
                let tok = self.token();
                match tok {
                    "nil" => Ok(Value::Nil),
                    "" => Err("expected a value".into()),
                    _ => tok
                        .parse::<i64>()
                        .map(Value::Int)
                        .map_err(|_| format!("unsupported value {tok:?}")),
                }
            }
            None => Err("expected a value, found end of line".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pair_and_a_get() {
        let text = r#"{:process 3, :type :invoke, :f :append, :key "1", :value "x 3 0 y"}
{:process 0, :type :invoke, :f :get, :key "5", :value nil}
{:process 3, :type :ok, :f :append, :key "1", :value "x 3 0 y"}
{:process 0, :type :ok, :f :get, :key "5", :value "a \"q\""}
"#;
        let ops = parse_porcupine_kv(text).expect("parses");
        assert_eq!(ops.len(), 2);
        assert_eq!(
            ops[0],
            Operation {
                client_id: 3,
                input: KvInput::Append { key: "1".into(), value: "x 3 0 y".into() },
                call: 1,
                output: KvOutput::Ok,
                return_time: Some(3),
            }
        );
        assert_eq!(ops[1].input, KvInput::Get { key: "5".into() });
        assert_eq!(ops[1].output, KvOutput::Value(Some("a \"q\"".into())));
        assert_eq!((ops[1].call, ops[1].return_time), (2, Some(4)));
    }

    #[test]
    fn info_is_unknown_fail_is_dropped_and_unfinished_is_unknown() {
        let text = r#"{:process 1, :type :invoke, :f :put, :key "k", :value "a"}
{:process 2, :type :invoke, :f :put, :key "k", :value "b"}
{:process 1, :type :info, :f :put, :key "k", :value "a"}
{:process 2, :type :fail, :f :put, :key "k", :value "b"}
{:process 3, :type :invoke, :f :put, :key "k", :value "c"}
"#;
        let ops = parse_porcupine_kv(text).expect("parses");
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].output, KvOutput::Unknown);
        assert_eq!(ops[0].return_time, None);
        assert_eq!(ops[1].call, 5);
        assert_eq!(ops[1].return_time, None);
    }

    #[test]
    fn errors_name_the_line() {
        let bad = [
            ("{:process 1, :type :ok, :f :get, :key \"k\", :value nil}", "line 1"),
            ("\n{:process 1 :type :invoke, :f :get, :key \"k\"", "line 2"),
            ("{:process 1, :type :invoke, :f :cas, :key \"k\"}", "line 1"),
            ("{:process 1, :type :invoke, :f :get, :key \"k\", :value \"open}", "line 1"),
            ("{:process 1, :type :invoke, :f :get}", "line 1"),
        ];
        for (text, want) in bad {
            let e = parse_porcupine_kv(text).expect_err(text);
            assert!(e.starts_with(want), "{text:?} gave {e:?}");
        }
        let mismatch = "{:process 1, :type :invoke, :f :get, :key \"k\", :value nil}\n\
                        {:process 1, :type :ok, :f :put, :key \"k\", :value \"v\"}";
        let e = parse_porcupine_kv(mismatch).expect_err("mismatch");
        assert!(e.starts_with("line 2") && e.contains("line 1"), "{e}");
    }
}
