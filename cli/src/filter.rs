//! `images -f KEY=VALUE` filters, with docker's semantics: values of one key are alternatives
//! (OR), different keys must all hold (AND).
//!
//! - `dangling=true|false`: images without any name / with one;
//! - `reference=PATTERN`: names matching a `path.Match` glob, against the familiar
//!   `name:tag` and then the familiar name alone; only the matching names are shown;
//! - `before=IMAGE`, `since=IMAGE`: created before / after that image;
//! - `label=KEY` or `label=KEY=VALUE`: the config's labels.

use anyhow::{bail, Result};

use crate::reference::Reference;
use crate::store::image::Image;

#[derive(Debug, Default)]
pub struct Filters {
    pub dangling: Option<bool>,
    pub references: Vec<String>,
    pub before: Vec<String>,
    pub since: Vec<String>,
    pub labels: Vec<(String, Option<String>)>,
}

impl Filters {
    pub fn parse(args: &[String]) -> Result<Filters> {
        let mut f = Filters::default();
        for a in args {
            let Some((key, value)) = a.split_once('=') else {
                bail!("bad format of filter (expected name=value): {a}");
            };
            match key.trim().to_lowercase().as_str() {
                "dangling" => {
                    let v = match value.to_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => bail!("invalid filter 'dangling={value}': want true or false"),
                    };
                    if f.dangling.is_some_and(|d| d != v) {
                        bail!("conflicting dangling filters");
                    }
                    f.dangling = Some(v);
                }
                "reference" => f.references.push(value.to_string()),
                "before" => f.before.push(value.to_string()),
                "since" => f.since.push(value.to_string()),
                "label" => f.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value.to_string(), None),
                }),
                other => bail!("invalid filter '{other}'"),
            }
        }
        Ok(f)
    }

    /// Keeps the images that pass; with reference filters, an image keeps only its matching
    /// names. `created_of` resolves `before=`/`since=` images to their creation times.
    pub fn apply(
        &self,
        images: Vec<Image>,
        created_of: impl Fn(&str) -> Result<Option<i64>>,
    ) -> Result<Vec<Image>> {
        let before: Vec<Option<i64>> = self
            .before
            .iter()
            .map(|b| created_of(b))
            .collect::<Result<_>>()?;
        let since: Vec<Option<i64>> = self
            .since
            .iter()
            .map(|s| created_of(s))
            .collect::<Result<_>>()?;
        let mut out = Vec::new();
        for mut img in images {
            if let Some(d) = self.dangling {
                if img.dangling() != d {
                    continue;
                }
            }
            let created = img.created_unix();
            if !before.is_empty()
                && !before
                    .iter()
                    .any(|b| matches!((created, b), (Some(c), Some(b)) if c < *b))
            {
                continue;
            }
            if !since.is_empty()
                && !since
                    .iter()
                    .any(|s| matches!((created, s), (Some(c), Some(s)) if c > *s))
            {
                continue;
            }
            if !self.labels.is_empty() {
                let labels = img.config.labels();
                let ok = self.labels.iter().any(|(k, v)| match (labels.get(k), v) {
                    (Some(_), None) => true,
                    (Some(have), Some(want)) => have == want,
                    (None, _) => false,
                });
                if !ok {
                    continue;
                }
            }
            if !self.references.is_empty() {
                let keep = |r: &Reference| self.references.iter().any(|p| familiar_match(p, r));
                img.tags.retain(keep);
                img.repo_digests.retain(keep);
                if img.tags.is_empty() && img.repo_digests.is_empty() {
                    continue;
                }
            }
            out.push(img);
        }
        Ok(out)
    }
}

/// docker's `reference.FamiliarMatch`.
pub fn familiar_match(pattern: &str, r: &Reference) -> bool {
    glob_match(pattern, &r.familiar()) || glob_match(pattern, &r.familiar_name())
}

/// Go's `path.Match`: `*` any run of non-`/` characters, `?` one non-`/` character,
/// `[...]` classes (`^` or `!` negates, ranges), `\` escapes. A malformed pattern matches
/// nothing.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob(&p, &n).unwrap_or(false)
}

fn glob(p: &[char], n: &[char]) -> Option<bool> {
    match p.first() {
        None => Some(n.is_empty()),
        Some('*') => {
            let rest = &p[1..];
            for i in 0..=n.len() {
                if glob(rest, &n[i..])? {
                    return Some(true);
                }
                if i < n.len() && n[i] == '/' {
                    break;
                }
            }
            Some(false)
        }
        Some('?') => match n.first() {
            Some(c) if *c != '/' => glob(&p[1..], &n[1..]),
            _ => Some(false),
        },
        Some('[') => {
            let (matched, used) = class(&p[1..], *n.first()?)?;
            if !matched || n.first() == Some(&'/') {
                return Some(false);
            }
            glob(&p[1 + used..], &n[1..])
        }
        Some('\\') => {
            let c = *p.get(1)?;
            match n.first() {
                Some(x) if *x == c => glob(&p[2..], &n[1..]),
                _ => Some(false),
            }
        }
        Some(c) => match n.first() {
            Some(x) if x == c => glob(&p[1..], &n[1..]),
            _ => Some(false),
        },
    }
}

/// Matches `c` against a class body starting after `[`; returns (matched, chars used incl. `]`).
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('^') | Some('!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        i += 1;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|x| *x != ']') {
            i += 1;
            let h = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
            h
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    Some((matched != negate, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_path_match() {
        assert!(glob_match("busybox", "busybox"));
        assert!(glob_match("busy*", "busybox"));
        assert!(glob_match("*box:*", "busybox:latest"));
        assert!(!glob_match("*", "test/busybox"));
        assert!(glob_match("*/*", "test/busybox"));
        assert!(glob_match("b?sybox", "busybox"));
        assert!(glob_match("[a-c]usybox", "busybox"));
        assert!(!glob_match("[^a-c]usybox", "busybox"));
        assert!(glob_match("\\*x", "*x"));
        assert!(!glob_match("[a-", "a"));
        assert!(glob_match(
            "127.0.0.1:5055/*/*",
            "127.0.0.1:5055/test/busybox"
        ));
    }

    #[test]
    fn reference_matching_is_familiar() {
        let r = Reference::parse("docker.io/library/busybox:1.36").unwrap();
        assert!(familiar_match("busybox", &r));
        assert!(familiar_match("busybox:1.*", &r));
        assert!(!familiar_match("busybox:latest", &r));
        assert!(!familiar_match("library/busybox", &r));
        let r = Reference::parse("127.0.0.1:5055/test/busybox").unwrap();
        assert!(familiar_match("127.0.0.1:5055/test/*", &r));
        assert!(!familiar_match("test/*", &r));
    }

    #[test]
    fn parses_filters() {
        let f = Filters::parse(&[
            "dangling=true".into(),
            "label=a=b".into(),
            "label=c".into(),
            "reference=bu*".into(),
        ])
        .unwrap();
        assert_eq!(f.dangling, Some(true));
        assert_eq!(
            f.labels,
            vec![("a".into(), Some("b".into())), ("c".into(), None)]
        );
        assert!(Filters::parse(&["nope=1".into()]).is_err());
        assert!(Filters::parse(&["dangling=maybe".into()]).is_err());
        assert!(Filters::parse(&["dangling".into()]).is_err());
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;
    use crate::store::image::testing::{name_image, put_image};
    use crate::store::Store;
    use serde_json::json;

    #[test]
    fn filters_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let old = put_image(&store, "2024-01-01T00:00:00Z", json!({"tier": "db"}), b"1");
        let mid = put_image(&store, "2024-02-01T00:00:00Z", json!({"tier": "web"}), b"2");
        let new = put_image(&store, "2024-03-01T00:00:00Z", json!(null), b"3");
        name_image(&store, &old, &["db:1", "db:2"]);
        name_image(&store, &mid, &["web:1"]);
        store
            .update(|t| {
                t.ensure(&new);
                Ok::<_, anyhow::Error>(())
            })
            .unwrap();
        let table = store.table().unwrap();
        let run = |args: &[&str]| -> Vec<String> {
            let f =
                Filters::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            f.apply(store.images().unwrap(), |n| {
                Ok(store.find(&table, n)?.image().created_unix())
            })
            .unwrap()
            .iter()
            .map(|i| match i.tags.first() {
                Some(t) => format!("{}:{}", t.familiar(), i.tags.len()),
                None => "<none>".to_string(),
            })
            .collect()
        };
        assert_eq!(run(&["dangling=true"]), vec!["<none>"]);
        assert_eq!(run(&["dangling=false"]).len(), 2);
        assert_eq!(run(&["reference=db:2"]), vec!["db:2:1"]);
        assert_eq!(run(&["reference=db"]), vec!["db:1:2"]);
        assert_eq!(run(&["reference=db", "reference=web"]).len(), 2);
        assert_eq!(run(&["before=web:1"]), vec!["db:1:2"]);
        assert_eq!(run(&["since=web:1"]), vec!["<none>"]);
        assert_eq!(run(&["since=db:1", "dangling=false"]), vec!["web:1:1"]);
        assert_eq!(run(&["label=tier"]).len(), 2);
        assert_eq!(run(&["label=tier=web"]), vec!["web:1:1"]);
        assert!(run(&["label=nope"]).is_empty());
    }
}
