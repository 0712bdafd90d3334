//! Dockerfile instructions as changes to an image's runtime config (the config's `config`:
//! Cmd, Entrypoint, Env, …): what `commit -c`, `import -c` and `build`'s metadata
//! instructions do. One applier, [`ConfigChanger::apply`], takes an instruction name and its
//! argument text (after any variable expansion, which is the Dockerfile parser's), in JSON
//! (exec) form or shell form, as docker's builder dispatches them.

use serde_json::{json, Map, Value};

use crate::{Error, Result};

/// The instructions `commit -c` and `import -c` take (docker's list).
pub const COMMIT_CHANGES: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Splits a change line (`CMD ["sh"]`, `env A=1`) into its upper-cased instruction name and
/// its argument text.
pub fn split_instruction(line: &str) -> (String, &str) {
    let line = line.trim_start();
    let end = line.find(char::is_whitespace).unwrap_or(line.len());
    (line[..end].to_ascii_uppercase(), line[end..].trim())
}

/// Applies instructions to a runtime config, remembering what docker's builder remembers
/// between them (whether CMD was set, which ENTRYPOINT clears otherwise).
#[derive(Clone, Debug, Default)]
pub struct ConfigChanger {
    /// The runtime config being changed (a JSON object).
    pub config: Map<String, Value>,
    cmd_set: bool,
}

impl ConfigChanger {
    /// Starts from `config` (an image's or a container's `config`; `None` or null is empty).
    pub fn new(config: Option<&Value>) -> ConfigChanger {
        ConfigChanger {
            config: config
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            cmd_set: false,
        }
    }

    /// The changed config.
    pub fn into_value(self) -> Value {
        Value::Object(self.config)
    }

    /// Applies a `commit -c`/`import -c` line, refusing instructions not in
    /// [`COMMIT_CHANGES`] as docker does.
    pub fn apply_line(&mut self, line: &str) -> Result<()> {
        let (name, args) = split_instruction(line);
        if !COMMIT_CHANGES.contains(&name.as_str()) {
            return Err(Error::ConfigChange {
                instruction: line.trim().to_string(),
                reason: format!("{name} is not a valid change command"),
            });
        }
        self.apply(&name, args)
    }

    /// Applies one instruction (`name` in any case; `args` its text after the name).
    /// Knows CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR,
    /// STOPSIGNAL and SHELL.
    pub fn apply(&mut self, name: &str, args: &str) -> Result<()> {
        let name = name.to_ascii_uppercase();
        let err = |reason: String| Error::ConfigChange {
            instruction: format!("{name} {args}").trim().to_string(),
            reason,
        };
        let args = args.trim();
        match name.as_str() {
            "CMD" => {
                let v = self.command(args);
                self.config.insert("Cmd".into(), v);
                self.cmd_set = true;
            }
            "ENTRYPOINT" => {
                let v = self.command(args);
                self.config.insert("Entrypoint".into(), v);
                // As docker's builder: an ENTRYPOINT resets a CMD inherited from before.
                if !self.cmd_set {
                    self.config.insert("Cmd".into(), Value::Null);
                }
            }
            "ENV" => {
                let pairs = key_values(args, "ENV").map_err(err)?;
                let env = self
                    .config
                    .entry("Env")
                    .or_insert_with(|| json!([]))
                    .as_array_mut();
                let env = match env {
                    Some(e) => e,
                    None => {
                        self.config.insert("Env".into(), json!([]));
                        self.config["Env"].as_array_mut().expect("just set")
                    }
                };
                for (k, v) in pairs {
                    let item = Value::String(format!("{k}={v}"));
                    let prefix = format!("{k}=");
                    match env
                        .iter_mut()
                        .find(|e| e.as_str().is_some_and(|s| s.starts_with(&prefix) || s == k))
                    {
                        Some(slot) => *slot = item,
                        None => env.push(item),
                    }
                }
            }
            "LABEL" => {
                let pairs = key_values(args, "LABEL").map_err(err)?;
                let labels = object_at(&mut self.config, "Labels");
                for (k, v) in pairs {
                    labels.insert(k, Value::String(v));
                }
            }
            "EXPOSE" => {
                let ports = words(args).map_err(err)?;
                if ports.is_empty() {
                    return Err(err("EXPOSE requires at least one argument".into()));
                }
                let mut keys = Vec::new();
                for p in ports {
                    keys.extend(expose_keys(&p).map_err(err)?);
                }
                let exposed = object_at(&mut self.config, "ExposedPorts");
                for k in keys {
                    exposed.insert(k, json!({}));
                }
            }
            "VOLUME" => {
                let paths = match json_array(args) {
                    Some(v) => v,
                    None => words(args).map_err(err)?,
                };
                if paths.is_empty() || paths.iter().any(|p| p.is_empty()) {
                    return Err(err("VOLUME specified can not be an empty string".into()));
                }
                let volumes = object_at(&mut self.config, "Volumes");
                for p in paths {
                    volumes.insert(p, json!({}));
                }
            }
            "USER" => {
                if args.is_empty() {
                    return Err(err("USER requires exactly one argument".into()));
                }
                self.config
                    .insert("User".into(), Value::String(args.into()));
            }
            "WORKDIR" => {
                if args.is_empty() {
                    return Err(err("WORKDIR requires exactly one argument".into()));
                }
                let dir = if args.starts_with('/') {
                    args.to_string()
                } else {
                    let cur = self
                        .config
                        .get("WorkingDir")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .unwrap_or("/");
                    format!("{}/{args}", cur.trim_end_matches('/'))
                };
                self.config.insert("WorkingDir".into(), Value::String(dir));
            }
            "STOPSIGNAL" => {
                if args.is_empty() || args.contains(char::is_whitespace) {
                    return Err(err("STOPSIGNAL requires exactly one argument".into()));
                }
                self.config
                    .insert("StopSignal".into(), Value::String(args.into()));
            }
            "SHELL" => {
                let shell = json_array(args)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| err("SHELL requires the arguments in JSON form".into()))?;
                self.config.insert("Shell".into(), json!(shell));
            }
            "ONBUILD" => {
                if args.is_empty() {
                    return Err(err("ONBUILD requires at least one argument".into()));
                }
                let (inner, _) = split_instruction(args);
                if matches!(inner.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(err(format!("{inner} isn't allowed as an ONBUILD trigger")));
                }
                let on = self.config.entry("OnBuild").or_insert_with(|| json!([]));
                if !on.is_array() {
                    *on = json!([]);
                }
                on.as_array_mut()
                    .expect("an array")
                    .push(Value::String(args.into()));
            }
            _ => return Err(err(format!("unknown instruction: {name}"))),
        }
        Ok(())
    }

    /// CMD/ENTRYPOINT's value: the JSON form as it is, the shell form through the config's
    /// Shell (`/bin/sh -c` by default).
    fn command(&self, args: &str) -> Value {
        if let Some(v) = json_array(args) {
            return json!(v);
        }
        let mut shell: Vec<String> = self
            .config
            .get("Shell")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .filter(|s: &Vec<String>| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        shell.push(args.to_string());
        json!(shell)
    }
}

/// `config[key]` as an object, made one if it is missing or null.
fn object_at<'a>(config: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = config.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("an object")
}

/// The JSON (exec) form: a JSON array of strings, else `None` (the shell form).
pub fn json_array(args: &str) -> Option<Vec<String>> {
    if !args.trim_start().starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(args.trim()).ok()
}

/// Splits on blanks as docker's builder does for ENV/LABEL/EXPOSE/VOLUME: single quotes keep
/// everything, double quotes keep all but `\"`/`\\` escapes, a backslash outside quotes
/// keeps the next character.
pub fn words(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unmatched single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unmatched double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unmatched double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// ENV/LABEL arguments: `K=V K2="V 2"`, or the legacy `K V with blanks` (one pair).
fn key_values(args: &str, what: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let ws = words(args)?;
    let Some(first) = ws.first() else {
        return Err(format!("{what} requires at least one argument"));
    };
    if !first.contains('=') {
        // The legacy form: the first word is the key, the rest of the text the value.
        let rest = args.trim_start()[args
            .trim_start()
            .find(char::is_whitespace)
            .unwrap_or(args.trim_start().len())..]
            .trim();
        if rest.is_empty() {
            return Err(format!("{what} {first}: a value is missing (KEY=VALUE)"));
        }
        let value = words(rest)?.join(" ");
        return Ok(vec![(first.clone(), value)]);
    }
    ws.into_iter()
        .map(|w| {
            let (k, v) = w.split_once('=').ok_or_else(|| {
                format!("{what} {w}: not KEY=VALUE (mixing the two forms is not allowed)")
            })?;
            if k.is_empty() {
                return Err(format!("{what} {w}: the key is empty"));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `80`, `80/udp`, `8000-8002/tcp` as ExposedPorts keys.
fn expose_keys(p: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let bad = || format!("invalid containerPort: {ports}");
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let n = ports.parse::<u16>().map_err(|_| bad())?;
            (n, n)
        }
    };
    if hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|n| format!("{n}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(base: Value, lines: &[&str]) -> Value {
        let mut c = ConfigChanger::new(Some(&base));
        for l in lines {
            c.apply_line(l).unwrap();
        }
        c.into_value()
    }

    #[test]
    fn each_commit_change() {
        let v = changed(
            json!({"Env": ["PATH=/bin", "A=old"], "Cmd": ["sh"]}),
            &[
                r#"CMD ["echo", "hi"]"#,
                "env A=new B=\"two words\"",
                "ENV LEGACY some value",
                "EXPOSE 80 53/udp 8000-8001",
                "LABEL a=1 \"b c\"='d e'",
                "USER nobody:nogroup",
                "VOLUME /data /logs",
                r#"VOLUME ["/j"]"#,
                "WORKDIR /srv",
                "WORKDIR app",
                "ONBUILD RUN true",
            ],
        );
        assert_eq!(v["Cmd"], json!(["echo", "hi"]));
        assert_eq!(
            v["Env"],
            json!(["PATH=/bin", "A=new", "B=two words", "LEGACY=some value"])
        );
        assert_eq!(
            v["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}})
        );
        assert_eq!(v["Labels"], json!({"a": "1", "b c": "d e"}));
        assert_eq!(v["User"], "nobody:nogroup");
        assert_eq!(v["Volumes"], json!({"/data": {}, "/logs": {}, "/j": {}}));
        assert_eq!(v["WorkingDir"], "/srv/app");
        assert_eq!(v["OnBuild"], json!(["RUN true"]));
    }

    #[test]
    fn shell_form_and_entrypoint_resets_an_inherited_cmd() {
        let v = changed(json!({"Cmd": ["sh"]}), &["ENTRYPOINT top -b"]);
        assert_eq!(v["Entrypoint"], json!(["/bin/sh", "-c", "top -b"]));
        assert_eq!(v["Cmd"], Value::Null);
        let v = changed(json!({}), &["CMD [\"x\"]", "ENTRYPOINT [\"e\"]"]);
        assert_eq!(v["Cmd"], json!(["x"]));
        let mut c = ConfigChanger::new(None);
        c.apply("SHELL", r#"["/bin/bash", "-o", "pipefail", "-c"]"#)
            .unwrap();
        c.apply("cmd", "echo $HOME").unwrap();
        c.apply("STOPSIGNAL", "SIGINT").unwrap();
        let v = c.into_value();
        assert_eq!(
            v["Cmd"],
            json!(["/bin/bash", "-o", "pipefail", "-c", "echo $HOME"])
        );
        assert_eq!(v["StopSignal"], "SIGINT");
    }

    #[test]
    fn bad_changes_say_what_was_wrong() {
        let mut c = ConfigChanger::new(None);
        for (line, want) in [
            ("FROM busybox", "FROM is not a valid change command"),
            ("RUN true", "RUN is not a valid change command"),
            ("EXPOSE http", "invalid containerPort: http"),
            ("EXPOSE 80/icmp", "invalid proto: icmp"),
            ("ENV", "ENV requires at least one argument"),
            ("ENV A=1 B", "not KEY=VALUE"),
            ("LABEL a=\"x", "unmatched double quote"),
            ("USER", "USER requires exactly one argument"),
        ] {
            let e = c.apply_line(line).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
        }
        assert!(c
            .apply("SHELL", "/bin/sh -c")
            .unwrap_err()
            .to_string()
            .contains("JSON form"));
        assert!(c.apply("FROBNICATE", "x").is_err());
    }
}
