//! A Go `text/template` subset over JSON values, for `--format`: `{{.Field.Path}}`, `{{.}}`,
//! `$` and `$.X`, string/number/bool literals, pipelines (`{{.X | json}}`), parentheses,
//! `if`/`else if`/`else`/`end`, `range` (with `$v :=` / `$i, $v :=`), `with`, trim markers
//! (`{{-`, `-}}`), and docker's functions: `json`, `join`, `split`, `title`, `lower`, `upper`,
//! `pad`, `truncate`, `println`, plus Go's `print`, `printf` (%s %d %v %q), `len`, `index`,
//! `eq`, `ne`, `not`, `and`, `or`.
//!
//! Values print as Go prints the same data decoded from JSON: lists as `[a b]`, maps as
//! `map[k:v]` (sorted keys), null as `<nil>`, a missing map key as `<no value>`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

#[derive(Clone, Debug)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    Range {
        vars: Vec<String>,
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With(Pipeline, Vec<Node>, Vec<Node>),
}

#[derive(Clone, Debug)]
struct Pipeline {
    cmds: Vec<Vec<Arg>>,
}

#[derive(Clone, Debug)]
enum Arg {
    Dot,
    /// `.A.B` (root false) or `$.A.B` / `$x.A` (root = variable name, "" for `$`)
    Field(Option<String>, Vec<String>),
    Var(String),
    Str(String),
    Num(f64),
    Int(i64),
    Bool(bool),
    Nil,
    Func(String),
    Sub(Pipeline),
    /// `(pipeline).Field`
    SubField(Pipeline, Vec<String>),
}

/// The value of an expression: a JSON value, or "no value" (a missing map key).
type Val = Option<Value>;

impl Template {
    pub fn parse(src: &str) -> Result<Template> {
        let tokens = lex(src).map_err(|e| anyhow!("template parsing error: {e}"))?;
        let mut p = Parser { tokens, pos: 0 };
        let (nodes, end) = p
            .nodes()
            .map_err(|e| anyhow!("template parsing error: {e}"))?;
        if let Some(end) = end {
            bail!("template parsing error: unexpected {{{{{end}}}}}");
        }
        Ok(Template { nodes })
    }

    pub fn render(&self, data: &Value) -> Result<String> {
        let mut out = String::new();
        let mut scope = Scope {
            root: data,
            vars: Vec::new(),
        };
        exec(&self.nodes, data, &mut scope, &mut out)
            .map_err(|e| anyhow!("template: executing: {e}"))?;
        Ok(out)
    }
}

// ---- lexing: text and actions -------------------------------------------------------

enum Tok {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut rest = src;
    let mut trim_next_text = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next_text {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let (trim_left, body_start) = match after.strip_prefix("- ") {
            Some(_) => (true, &after[2..]),
            None => (false, after),
        };
        if trim_left {
            text = text.trim_end();
        }
        if !text.is_empty() {
            toks.push(Tok::Text(text.to_string()));
        }
        let end = find_action_end(body_start).ok_or("unclosed action")?;
        let mut body = &body_start[..end];
        trim_next_text = false;
        if let Some(b) = body.strip_suffix(" -") {
            body = b;
            trim_next_text = true;
        }
        let body = body.trim();
        if !body.starts_with("/*") {
            toks.push(Tok::Action(body.to_string()));
        }
        rest = &body_start[end + 2..];
    }
    let text = if trim_next_text {
        rest.trim_start()
    } else {
        rest
    };
    if !text.is_empty() {
        toks.push(Tok::Text(text.to_string()));
    }
    Ok(toks)
}

/// The `}}` that ends an action, skipping string literals.
fn find_action_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

// ---- parsing ------------------------------------------------------------------------

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    /// Nodes up to an `end`/`else…` action, which is returned (None at the end of input).
    fn nodes(&mut self) -> Result<(Vec<Node>, Option<String>), String> {
        let mut nodes = Vec::new();
        while self.pos < self.tokens.len() {
            let tok = &self.tokens[self.pos];
            self.pos += 1;
            match tok {
                Tok::Text(t) => nodes.push(Node::Text(t.clone())),
                Tok::Action(a) => {
                    let a = a.clone();
                    let (word, rest) = split_word(&a);
                    match word {
                        "end" | "else" => return Ok((nodes, Some(a))),
                        "if" => nodes.push(self.if_node(rest)?),
                        "range" => {
                            let (vars, pipe) = parse_decl(rest)?;
                            let (body, end) = self.nodes()?;
                            let otherwise = match end.as_deref() {
                                Some("else") => self.until_end()?,
                                Some("end") => Vec::new(),
                                _ => return Err("range without end".into()),
                            };
                            nodes.push(Node::Range {
                                vars,
                                pipe,
                                body,
                                otherwise,
                            });
                        }
                        "with" => {
                            let pipe = parse_pipeline(rest)?;
                            let (body, end) = self.nodes()?;
                            let otherwise = match end.as_deref() {
                                Some("else") => self.until_end()?,
                                Some("end") => Vec::new(),
                                _ => return Err("with without end".into()),
                            };
                            nodes.push(Node::With(pipe, body, otherwise));
                        }
                        "" => return Err("empty action".into()),
                        "define" | "template" | "block" | "break" | "continue" => {
                            return Err(format!("{word} is not supported"))
                        }
                        _ => nodes.push(Node::Action(parse_pipeline(&a)?)),
                    }
                }
            }
        }
        Ok((nodes, None))
    }

    fn until_end(&mut self) -> Result<Vec<Node>, String> {
        match self.nodes()? {
            (n, Some(e)) if e == "end" => Ok(n),
            _ => Err("missing end".into()),
        }
    }

    fn if_node(&mut self, cond: &str) -> Result<Node, String> {
        let mut branches = vec![(parse_pipeline(cond)?, Vec::new())];
        loop {
            let (body, end) = self.nodes()?;
            branches.last_mut().expect("one branch").1 = body;
            let end = end.ok_or("if without end")?;
            let (word, rest) = split_word(&end);
            match (word, split_word(rest)) {
                ("end", _) => return Ok(Node::If(branches, Vec::new())),
                ("else", ("if", c)) => branches.push((parse_pipeline(c)?, Vec::new())),
                ("else", ("", _)) => return Ok(Node::If(branches, self.until_end()?)),
                _ => return Err(format!("unexpected {end}")),
            }
        }
    }
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// `$i, $v := pipeline` or `$v := pipeline` or just `pipeline`.
fn parse_decl(s: &str) -> Result<(Vec<String>, Pipeline), String> {
    if let Some((lhs, rhs)) = s.split_once(":=") {
        let vars: Vec<String> = lhs
            .split(',')
            .map(|v| v.trim().trim_start_matches('$').to_string())
            .collect();
        if vars.is_empty() || vars.len() > 2 || lhs.split(',').any(|v| !v.trim().starts_with('$')) {
            return Err(format!("bad variable declaration {lhs:?}"));
        }
        return Ok((vars, parse_pipeline(rhs)?));
    }
    Ok((Vec::new(), parse_pipeline(s)?))
}

fn parse_pipeline(s: &str) -> Result<Pipeline, String> {
    let mut args = tokenize_args(s)?;
    let mut cmds = vec![Vec::new()];
    for a in args.drain(..) {
        match a {
            ArgTok::Pipe => cmds.push(Vec::new()),
            ArgTok::Arg(a) => cmds.last_mut().expect("one command").push(a),
        }
    }
    if cmds.iter().any(Vec::is_empty) {
        return Err(format!("missing command in {s:?}"));
    }
    Ok(Pipeline { cmds })
}

enum ArgTok {
    Pipe,
    Arg(Arg),
}

fn tokenize_args(s: &str) -> Result<Vec<ArgTok>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'|' {
            out.push(ArgTok::Pipe);
            i += 1;
            continue;
        }
        if c == b'(' {
            let mut depth = 0;
            let start = i;
            while i < b.len() {
                match b[i] {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b'"' => {
                        i += 1;
                        while i < b.len() && b[i] != b'"' {
                            i += if b[i] == b'\\' { 2 } else { 1 };
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if i >= b.len() {
                return Err("unclosed parenthesis".into());
            }
            let inner = parse_pipeline(&s[start + 1..i])?;
            i += 1;
            let fstart = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'|' && b[i] != b')' {
                i += 1;
            }
            let fields = &s[fstart..i];
            out.push(ArgTok::Arg(if fields.is_empty() {
                Arg::Sub(inner)
            } else {
                Arg::SubField(inner, field_path(fields)?)
            }));
            continue;
        }
        if c == b'"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            if i >= b.len() {
                return Err("unterminated quoted string".into());
            }
            i += 1;
            let lit: String = serde_json::from_str(&s[start..i])
                .map_err(|e| format!("bad string {}: {e}", &s[start..i]))?;
            out.push(ArgTok::Arg(Arg::Str(lit)));
            continue;
        }
        if c == b'`' {
            let start = i + 1;
            let end = s[start..].find('`').ok_or("unterminated raw string")? + start;
            out.push(ArgTok::Arg(Arg::Str(s[start..end].to_string())));
            i = end + 1;
            continue;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'|' && b[i] != b'(' {
            i += 1;
        }
        out.push(ArgTok::Arg(word_arg(&s[start..i])?));
    }
    Ok(out)
}

fn field_path(s: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = s.split('.').skip(1).map(str::to_string).collect();
    if !s.starts_with('.') || parts.iter().any(String::is_empty) {
        return Err(format!("bad field {s:?}"));
    }
    Ok(parts)
}

fn word_arg(w: &str) -> Result<Arg, String> {
    Ok(match w {
        "." => Arg::Dot,
        "true" => Arg::Bool(true),
        "false" => Arg::Bool(false),
        "nil" => Arg::Nil,
        _ if w.starts_with('.') => Arg::Field(None, field_path(w)?),
        _ if w.starts_with('$') => {
            let (var, path) = match w[1..].find('.') {
                Some(i) => (&w[1..i + 1], &w[i + 1..]),
                None => (&w[1..], ""),
            };
            if path.is_empty() {
                Arg::Var(var.to_string())
            } else {
                Arg::Field(Some(var.to_string()), field_path(path)?)
            }
        }
        _ if w.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
            if let Ok(i) = w.parse::<i64>() {
                Arg::Int(i)
            } else {
                Arg::Num(w.parse().map_err(|_| format!("bad number {w:?}"))?)
            }
        }
        _ if w.chars().all(|c| c.is_alphanumeric() || c == '_') => Arg::Func(w.to_string()),
        _ => return Err(format!("unexpected {w:?}")),
    })
}

// ---- execution ----------------------------------------------------------------------

struct Scope<'a> {
    root: &'a Value,
    vars: Vec<(String, Value)>,
}

fn exec(nodes: &[Node], dot: &Value, scope: &mut Scope<'_>, out: &mut String) -> Result<()> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipeline(p, dot, scope)?;
                out.push_str(&display(&v));
            }
            Node::If(branches, otherwise) => {
                let mut done = false;
                for (cond, body) in branches {
                    if truthy(&eval_pipeline(cond, dot, scope)?) {
                        exec(body, dot, scope, out)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    exec(otherwise, dot, scope, out)?;
                }
            }
            Node::With(p, body, otherwise) => {
                let v = eval_pipeline(p, dot, scope)?;
                if truthy(&v) {
                    exec(body, &v.unwrap_or(Value::Null), scope, out)?;
                } else {
                    exec(otherwise, dot, scope, out)?;
                }
            }
            Node::Range {
                vars,
                pipe,
                body,
                otherwise,
            } => {
                let v = eval_pipeline(pipe, dot, scope)?;
                let items: Vec<(Value, Value)> = match v {
                    Some(Value::Array(a)) => a
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (Value::from(i), v))
                        .collect(),
                    Some(Value::Object(m)) => {
                        let sorted: BTreeMap<String, Value> = m.into_iter().collect();
                        sorted
                            .into_iter()
                            .map(|(k, v)| (Value::from(k), v))
                            .collect()
                    }
                    None | Some(Value::Null) => Vec::new(),
                    Some(other) => bail!("range can't iterate over {}", display(&Some(other))),
                };
                if items.is_empty() {
                    exec(otherwise, dot, scope, out)?;
                }
                for (k, v) in items {
                    let depth = scope.vars.len();
                    match vars.as_slice() {
                        [one] => scope.vars.push((one.clone(), v.clone())),
                        [i, e] => {
                            scope.vars.push((i.clone(), k));
                            scope.vars.push((e.clone(), v.clone()));
                        }
                        _ => {}
                    }
                    let r = exec(body, &v, scope, out);
                    scope.vars.truncate(depth);
                    r?;
                }
            }
        }
    }
    Ok(())
}

fn eval_pipeline(p: &Pipeline, dot: &Value, scope: &mut Scope<'_>) -> Result<Val> {
    let mut prev: Option<Val> = None;
    for cmd in &p.cmds {
        prev = Some(eval_command(cmd, dot, scope, prev)?);
    }
    Ok(prev.expect("pipelines have a command"))
}

fn eval_command(
    cmd: &[Arg],
    dot: &Value,
    scope: &mut Scope<'_>,
    piped: Option<Val>,
) -> Result<Val> {
    if let Arg::Func(name) = &cmd[0] {
        let mut args = Vec::new();
        for a in &cmd[1..] {
            args.push(eval_arg(a, dot, scope)?);
        }
        if let Some(p) = piped {
            args.push(p);
        }
        return call(name, args);
    }
    if cmd.len() > 1 || piped.is_some() {
        bail!("can't give argument to non-function {:?}", cmd[0]);
    }
    eval_arg(&cmd[0], dot, scope)
}

fn eval_arg(a: &Arg, dot: &Value, scope: &mut Scope<'_>) -> Result<Val> {
    Ok(match a {
        Arg::Dot => Some(dot.clone()),
        Arg::Field(None, path) => walk(Some(dot.clone()), path)?,
        Arg::Field(Some(var), path) => walk(Some(lookup_var(var, scope)?), path)?,
        Arg::Var(v) => Some(lookup_var(v, scope)?),
        Arg::Str(s) => Some(Value::from(s.clone())),
        Arg::Int(i) => Some(Value::from(*i)),
        Arg::Num(n) => Some(Value::from(*n)),
        Arg::Bool(b) => Some(Value::from(*b)),
        Arg::Nil => Some(Value::Null),
        Arg::Func(f) => call(f, Vec::new())?,
        Arg::Sub(p) => eval_pipeline(p, dot, scope)?,
        Arg::SubField(p, path) => walk(eval_pipeline(p, dot, scope)?, path)?,
    })
}

fn lookup_var(name: &str, scope: &Scope<'_>) -> Result<Value> {
    if name.is_empty() {
        return Ok(scope.root.clone());
    }
    scope
        .vars
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| anyhow!("undefined variable ${name}"))
}

fn walk(mut v: Val, path: &[String]) -> Result<Val> {
    for (i, key) in path.iter().enumerate() {
        v = match v {
            Some(Value::Object(m)) => m.get(key).cloned(),
            None | Some(Value::Null) => {
                bail!("nil pointer evaluating .{}", path[..=i].join("."))
            }
            Some(other) => bail!("can't evaluate field {key} in type {}", type_name(&other)),
        };
    }
    Ok(v)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn truthy(v: &Val) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
    }
}

/// Go's `%v` of the value.
pub fn display(v: &Val) -> String {
    match v {
        None => "<no value>".to_string(),
        Some(v) => display_value(v),
    }
}

fn display_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.to_string(),
            (_, Some(u)) => u.to_string(),
            _ => {
                let f = n.as_f64().unwrap_or_default();
                if f.fract() == 0.0 && f.abs() < 1e21 {
                    format!("{f:.0}")
                } else {
                    crate::format::go_g(f, 17)
                }
            }
        },
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(display_value).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            format!(
                "map[{}]",
                sorted
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", display_value(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

fn as_string(v: &Val) -> String {
    display(v)
}

fn call(name: &str, args: Vec<Val>) -> Result<Val> {
    let want = |n: usize| -> Result<()> {
        if args.len() != n {
            bail!(
                "wrong number of args for {name}: want {n} got {}",
                args.len()
            );
        }
        Ok(())
    };
    let s = |v: Option<&Val>| v.map(as_string).unwrap_or_default();
    let out = match name {
        "json" => {
            want(1)?;
            let v = args[0].clone().unwrap_or(Value::Null);
            Value::from(serde_json::to_string(&v)?)
        }
        "join" => {
            want(2)?;
            let sep = s(args.get(1));
            match &args[0] {
                Some(Value::Array(a)) => {
                    Value::from(a.iter().map(display_value).collect::<Vec<_>>().join(&sep))
                }
                None | Some(Value::Null) => Value::from(""),
                other => bail!("join: not a list: {}", display(other)),
            }
        }
        "split" => {
            want(2)?;
            let sep = s(args.get(1));
            Value::Array(
                s(args.first())
                    .split(sep.as_str())
                    .map(Value::from)
                    .collect(),
            )
        }
        "lower" => {
            want(1)?;
            Value::from(s(args.first()).to_lowercase())
        }
        "upper" => {
            want(1)?;
            Value::from(s(args.first()).to_uppercase())
        }
        "title" => {
            want(1)?;
            let t = s(args.first());
            let mut out = String::new();
            let mut start = true;
            for c in t.chars() {
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = !c.is_alphanumeric();
            }
            Value::from(out)
        }
        "pad" => {
            want(3)?;
            let l = int_arg(&args[1])?.max(0) as usize;
            let r = int_arg(&args[2])?.max(0) as usize;
            Value::from(format!(
                "{}{}{}",
                " ".repeat(l),
                s(args.first()),
                " ".repeat(r)
            ))
        }
        "truncate" => {
            want(2)?;
            let n = int_arg(&args[1])?.max(0) as usize;
            Value::from(s(args.first()).chars().take(n).collect::<String>())
        }
        "len" => {
            want(1)?;
            Value::from(match &args[0] {
                Some(Value::Array(a)) => a.len(),
                Some(Value::Object(m)) => m.len(),
                Some(Value::String(t)) => t.len(),
                other => bail!("len of {}", display(other)),
            })
        }
        "index" => {
            if args.is_empty() {
                bail!("index needs arguments");
            }
            let mut v = args[0].clone();
            for k in &args[1..] {
                v = match (v, k) {
                    (Some(Value::Object(m)), Some(Value::String(k))) => m.get(k).cloned(),
                    (Some(Value::Array(a)), k) => {
                        let i = int_arg(k)?;
                        Some(
                            a.get(usize::try_from(i).unwrap_or(usize::MAX))
                                .cloned()
                                .ok_or_else(|| anyhow!("index out of range: {i}"))?,
                        )
                    }
                    (v, _) => bail!(
                        "can't index item of type {}",
                        v.as_ref().map(type_name).unwrap_or("nil")
                    ),
                };
            }
            return Ok(v);
        }
        "println" => Value::from(format!(
            "{}\n",
            args.iter().map(display).collect::<Vec<_>>().join(" ")
        )),
        "print" => Value::from(args.iter().map(display).collect::<Vec<_>>().join("")),
        "printf" => {
            if args.is_empty() {
                bail!("printf needs a format");
            }
            Value::from(printf(&s(args.first()), &args[1..]))
        }
        "eq" | "ne" => {
            want(2)?;
            let eq = args[0] == args[1];
            Value::from(if name == "eq" { eq } else { !eq })
        }
        "not" => {
            want(1)?;
            Value::from(!truthy(&args[0]))
        }
        "and" | "or" => {
            let pick = args
                .iter()
                .position(|a| truthy(a) == (name == "or"))
                .unwrap_or(args.len().saturating_sub(1));
            return Ok(args.get(pick).cloned().flatten());
        }
        other => bail!("function \"{other}\" not defined"),
    };
    Ok(Some(out))
}

fn int_arg(v: &Val) -> Result<i64> {
    match v {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| anyhow!("not an integer")),
        other => bail!("not an integer: {}", display(other)),
    }
}

fn printf(fmt: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut it = args.iter();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('q') => out.push_str(
                &serde_json::to_string(&it.next().map(as_string).unwrap_or_default())
                    .unwrap_or_default(),
            ),
            Some(_) => out.push_str(
                &it.next()
                    .map(as_string)
                    .unwrap_or_else(|| "%!v(MISSING)".into()),
            ),
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    fn data() -> Value {
        json!({
            "Id": "sha256:abc",
            "RepoTags": ["busybox:latest", "busybox:1"],
            "Size": 4261550,
            "Config": {"Env": ["PATH=/bin", "A=b"], "Cmd": null,
                       "Labels": {"z": "1", "a": "x y"}, "Entrypoint": []},
            "Ratio": 1.5,
            "Flag": false
        })
    }

    #[test]
    fn fields_and_printing() {
        let d = data();
        assert_eq!(r("{{.Id}}", &d), "sha256:abc");
        assert_eq!(r("id={{ .Id }}!", &d), "id=sha256:abc!");
        assert_eq!(r("{{.Config.Env}}", &d), "[PATH=/bin A=b]");
        assert_eq!(r("{{.Config.Labels}}", &d), "map[a:x y z:1]");
        assert_eq!(r("{{.Config.Cmd}}", &d), "<nil>");
        assert_eq!(r("{{.Nope}}", &d), "<no value>");
        assert_eq!(r("{{.Size}} {{.Ratio}} {{.Flag}}", &d), "4261550 1.5 false");
        assert_eq!(r("{{json .Config.Env}}", &d), r#"["PATH=/bin","A=b"]"#);
        assert_eq!(
            r("{{.Config | json}}", &d),
            serde_json::to_string(&d["Config"]).unwrap()
        );
        assert_eq!(r("{{json .Config.Cmd}}", &d), "null");
        assert_eq!(
            r("{{join .RepoTags \", \"}}", &d),
            "busybox:latest, busybox:1"
        );
        assert_eq!(r("{{index .Config.Labels \"a\"}}", &d), "x y");
        assert_eq!(r("{{index .RepoTags 1}}", &d), "busybox:1");
        assert_eq!(r("{{upper .Id}} {{len .RepoTags}}", &d), "SHA256:ABC 2");
        assert_eq!(
            r("{{printf \"%s-%d\" .Id .Size}}", &d),
            "sha256:abc-4261550"
        );
        assert_eq!(r("{{(index .RepoTags 0)}}", &d), "busybox:latest");
        assert_eq!(r("{{$.Id}}", &d), "sha256:abc");
        assert_eq!(r("{{.}}", &json!("x")), "x");
        assert_eq!(r("{{println .Id}}", &d), "sha256:abc\n");
        assert_eq!(r("{{title \"hello world\"}}", &d), "Hello World");
        assert_eq!(r("{{`raw\"`}}", &d), "raw\"");
    }

    #[test]
    fn control_flow() {
        let d = data();
        assert_eq!(
            r("{{range .RepoTags}}[{{.}}]{{end}}", &d),
            "[busybox:latest][busybox:1]"
        );
        assert_eq!(
            r("{{range $i, $t := .RepoTags}}{{$i}}={{$t}} {{end}}", &d),
            "0=busybox:latest 1=busybox:1 "
        );
        assert_eq!(
            r(
                "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
                &d
            ),
            "a=x y;z=1;"
        );
        assert_eq!(
            r("{{range .Config.Entrypoint}}x{{else}}empty{{end}}", &d),
            "empty"
        );
        assert_eq!(r("{{if .Flag}}yes{{else}}no{{end}}", &d), "no");
        assert_eq!(
            r("{{if .Flag}}a{{else if .Size}}b{{else}}c{{end}}", &d),
            "b"
        );
        assert_eq!(r("{{with .Config}}{{.Env}}{{end}}", &d), "[PATH=/bin A=b]");
        assert_eq!(r("{{if eq .Id \"sha256:abc\"}}same{{end}}", &d), "same");
        assert_eq!(r("a  {{- .Id -}}  b", &d), "asha256:abcb");
        assert_eq!(r("{{/* comment */}}x", &d), "x");
    }

    #[test]
    fn errors() {
        for bad in [
            "{{.Id",
            "{{if .Id}}x",
            "{{end}}",
            "{{nosuch .Id}}x",
            "{{.Id .Id}}",
        ] {
            let t = Template::parse(bad);
            let failed = match t {
                Err(_) => true,
                Ok(t) => t.render(&data()).is_err(),
            };
            assert!(failed, "{bad}");
        }
        let e = Template::parse("{{.Id.X}}")
            .unwrap()
            .render(&data())
            .unwrap_err();
        assert!(e.to_string().contains("can't evaluate field X"), "{e}");
    }
}
