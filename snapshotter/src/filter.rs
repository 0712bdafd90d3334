//! Walk filters, the part of containerd's filter syntax its metadata layer sends: a list of
//! filters (any may match), each clauses joined by `,` (all must hold), a clause
//! `FIELD==VALUE`, `FIELD!=VALUE` or `FIELD` (present); fields `name`, `parent`, `kind`,
//! `labels.KEY`; keys and values bare or in double quotes (`\` escapes inside). Regular
//! expressions (`~=`) are refused by name.

use crate::{Kind, Record};

/// One clause.
#[derive(Debug, PartialEq, Eq)]
struct Clause {
    field: Vec<String>,
    op: Op,
}

#[derive(Debug, PartialEq, Eq)]
enum Op {
    Present,
    Eq(String),
    Ne(String),
}

/// Parsed filters: a snapshot passes if any filter's clauses all hold (no filters: all
/// pass).
#[derive(Debug, Default)]
pub struct Filters(Vec<Vec<Clause>>);

impl Filters {
    /// Parses `filters`; `Err` names the filter and what is wrong.
    pub fn parse(filters: &[String]) -> Result<Filters, String> {
        let mut out = Vec::new();
        for f in filters.iter().filter(|f| !f.trim().is_empty()) {
            let mut clauses = Vec::new();
            for c in split_unquoted(f, ',') {
                clauses.push(clause(&c).map_err(|e| format!("filter {f:?}: {e}"))?);
            }
            out.push(clauses);
        }
        Ok(Filters(out))
    }

    pub fn matches(&self, name: &str, r: &Record) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|clauses| clauses.iter().all(|c| holds(c, name, r)))
    }
}

fn holds(c: &Clause, name: &str, r: &Record) -> bool {
    let kind = match r.kind {
        Kind::View => "view",
        Kind::Active => "active",
        Kind::Committed => "committed",
    };
    let value: Option<&str> = match c.field.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["name"] => Some(name),
        ["parent"] => Some(&r.parent),
        ["kind"] => Some(kind),
        ["labels", key] => r.labels.get(key).map(String::as_str),
        _ => None,
    };
    match &c.op {
        Op::Present => value.is_some(),
        Op::Eq(v) => value == Some(v.as_str()),
        Op::Ne(v) => value != Some(v.as_str()),
    }
}

/// Splits `s` at `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    for ch in s.chars() {
        if escaped {
            escaped = false;
        } else if ch == '\\' && quoted {
            escaped = true;
        } else if ch == '"' {
            quoted = !quoted;
        } else if ch == sep && !quoted {
            out.push(String::new());
            continue;
        }
        out.last_mut().expect("never empty").push(ch);
    }
    out
}

/// A bare or quoted word.
fn unquote(s: &str) -> String {
    let s = s.trim();
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::new();
            let mut escaped = false;
            for ch in inner.chars() {
                if escaped || ch != '\\' {
                    out.push(ch);
                    escaped = false;
                } else {
                    escaped = true;
                }
            }
            out
        }
        None => s.to_string(),
    }
}

fn clause(c: &str) -> Result<Clause, String> {
    if c.contains("~=") {
        return Err("regular expressions (~=) are not supported".into());
    }
    let (field, op) = if let Some((f, v)) = c.split_once("==") {
        (f, Op::Eq(unquote(v)))
    } else if let Some((f, v)) = c.split_once("!=") {
        (f, Op::Ne(unquote(v)))
    } else {
        (c, Op::Present)
    };
    let field: Vec<String> = match field.trim().split_once('.') {
        Some((head, rest)) => vec![head.to_string(), unquote(rest)],
        None => vec![field.trim().to_string()],
    };
    if field[0].is_empty() {
        return Err(format!("clause {c:?} names no field"));
    }
    Ok(Clause { field, op })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    fn record(parent: &str, labels: &[(&str, &str)]) -> Record {
        Record {
            id: 1,
            kind: Kind::Committed,
            parent: parent.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            created: SystemTime::UNIX_EPOCH,
            updated: SystemTime::UNIX_EPOCH,
            usage: None,
            remote: None,
        }
    }

    #[test]
    fn containerds_target_lookup_matches_only_the_target() {
        // What containerd 1.6's metadata layer sends after a remote snapshotter's
        // ALREADY_EXISTS.
        let f = Filters::parse(&[
            r#"labels."containerd.io/snapshot.ref"==sha256:ab,parent=="""#.to_string(),
        ])
        .unwrap();
        let target = record("", &[("containerd.io/snapshot.ref", "sha256:ab")]);
        assert!(f.matches("x", &target));
        assert!(!f.matches(
            "x",
            &record("p", &[("containerd.io/snapshot.ref", "sha256:ab")])
        ));
        assert!(!f.matches(
            "x",
            &record("", &[("containerd.io/snapshot.ref", "sha256:cd")])
        ));
        assert!(!f.matches("x", &record("", &[])));
    }

    #[test]
    fn filters_or_clauses_and_and_presence_and_inequality_work() {
        let f = Filters::parse(&["kind==active".into(), "labels.a,name!=n".into()]).unwrap();
        assert!(f.matches("m", &record("", &[("a", "1")])));
        assert!(!f.matches("n", &record("", &[("a", "1")])));
        assert!(Filters::parse(&["name~=x".into()]).is_err());
        assert!(Filters::default().matches("any", &record("", &[])));
    }
}
