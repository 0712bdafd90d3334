//! `.dockerignore`, with docker's rules (its pattern matcher): one pattern a line, `#`
//! comment lines, blanks trimmed, paths cleaned (`./a/../b` is `b`) and taken from the
//! context's root (a leading `/` is dropped); `*` and `?` stop at `/`, `[a-z]`/`[^a]`
//! classes, `\` escapes, `**` crosses directories (`**/x`, `a/**/b`, `a/**`); `!` makes an
//! exception; the last pattern that matches decides. A pattern that matches a directory
//! excludes everything below it (unless a later exception takes a name back).
//!
//! Why not a crate: gitignore matchers (`ignore`) anchor and float patterns differently
//! (a gitignore `foo` matches at any depth, docker's only at the root), and `globset` has
//! `{a,b}` alternation and `[!a]` classes that docker's patterns do not; the rules above fit
//! in this file.

use std::path::Path;

/// The patterns of a context's `.dockerignore`.
#[derive(Clone, Debug, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Clone, Debug)]
struct Pattern {
    exception: bool,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Lit(char),
    /// `?`: one character but `/`.
    One,
    /// `*`: any run of characters without `/`.
    Star,
    /// `**` followed by more: nothing, or anything ending in `/` (`(.*/)?`).
    AnyDirs,
    /// `**` at the end: anything.
    Rest,
    /// `[...]`: ranges, negated with a leading `^`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Ignore {
    /// Reads `.dockerignore` in `context` (none: nothing is ignored).
    pub fn load(context: &Path) -> std::io::Result<Ignore> {
        match std::fs::read_to_string(context.join(".dockerignore")) {
            Ok(text) => Ok(Ignore::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ignore::default()),
            Err(e) => Err(e),
        }
    }

    /// The patterns of a `.dockerignore` text.
    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let exception = p.starts_with('!');
            if exception {
                p = p[1..].trim();
                if p.is_empty() {
                    continue;
                }
            }
            let cleaned = clean(p);
            patterns.push(Pattern {
                exception,
                tokens: compile(&cleaned),
            });
        }
        Ignore { patterns }
    }

    /// Whether there are exceptions: then an excluded directory must still be walked.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded: by a pattern
    /// matching it or one of its parent directories, the last matching pattern deciding.
    pub fn excluded(&self, path: &str) -> bool {
        let path = clean(path);
        if path == "." {
            return false;
        }
        let parts: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for p in &self.patterns {
            // An exclusion can change nothing once excluded, an exception nothing before.
            if p.exception != excluded {
                continue;
            }
            let mut hit = matches(&p.tokens, &path);
            if !hit && parts.len() > 1 {
                hit = (1..parts.len()).any(|i| matches(&p.tokens, &parts[..i].join("/")));
            }
            if hit {
                excluded = !p.exception;
            }
        }
        excluded
    }
}

/// Go's `filepath.Clean` on a relative `/` path, leading `/` dropped: `.` and empty parts
/// gone, `..` taking one back (never above the root).
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

fn compile(p: &str) -> Vec<Token> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                while chars.get(i) == Some(&'*') {
                    i += 1;
                }
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                out.push(match i >= chars.len() {
                    true => Token::Rest,
                    false => Token::AnyDirs,
                });
            }
            '*' => out.push(Token::Star),
            '?' => out.push(Token::One),
            '\\' if i < chars.len() => {
                out.push(Token::Lit(chars[i]));
                i += 1;
            }
            '[' => {
                let start = i;
                let negated = chars.get(i) == Some(&'^');
                if negated {
                    i += 1;
                }
                let mut ranges = Vec::new();
                let mut closed = false;
                while i < chars.len() {
                    let mut a = chars[i];
                    if a == ']' && (i > start + usize::from(negated)) {
                        closed = true;
                        i += 1;
                        break;
                    }
                    if a == '\\' && i + 1 < chars.len() {
                        i += 1;
                        a = chars[i];
                    }
                    i += 1;
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
                        let b = chars[i + 1];
                        ranges.push((a, b));
                        i += 2;
                    } else {
                        ranges.push((a, a));
                    }
                }
                if closed {
                    out.push(Token::Class { negated, ranges });
                } else {
                    // An unclosed class matches nothing, as a bad pattern in docker does.
                    out.push(Token::Class {
                        negated: false,
                        ranges: Vec::new(),
                    });
                }
            }
            c => out.push(Token::Lit(c)),
        }
    }
    out
}

/// Whether context path `path` matches a COPY source pattern (the same syntax).
pub fn glob(pattern: &str, path: &str) -> bool {
    matches(&compile(pattern), path)
}

/// Whether the whole of `s` matches `tokens` (backtracking; patterns are short).
fn matches(tokens: &[Token], s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    match_at(tokens, &chars)
}

fn match_at(tokens: &[Token], s: &[char]) -> bool {
    let Some((t, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match t {
        Token::Lit(c) => s.first() == Some(c) && match_at(rest, &s[1..]),
        Token::One => s.first().is_some_and(|c| *c != '/') && match_at(rest, &s[1..]),
        Token::Class { negated, ranges } => {
            s.first().is_some_and(|c| {
                *c != '/' && ranges.iter().any(|(a, b)| a <= c && c <= b) != *negated
            }) && match_at(rest, &s[1..])
        }
        Token::Star => {
            let run = s.iter().position(|c| *c == '/').unwrap_or(s.len());
            (0..=run).any(|n| match_at(rest, &s[n..]))
        }
        Token::Rest => true,
        Token::AnyDirs => {
            match_at(rest, s) || (0..s.len()).any(|i| s[i] == '/' && match_at(rest, &s[i + 1..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(text: &str) -> Ignore {
        Ignore::parse(text)
    }

    #[test]
    fn names_are_anchored_at_the_root_and_cover_what_is_below() {
        let i = ig("# comment\n  secret.txt  \n/build\n./tmp/../logs\n");
        assert!(i.excluded("secret.txt"));
        assert!(!i.excluded("sub/secret.txt"));
        assert!(i.excluded("build"));
        assert!(i.excluded("build/out/a.o"));
        assert!(i.excluded("logs/x"));
        assert!(!i.excluded("tmp"));
        assert!(!i.excluded("# comment"));
    }

    #[test]
    fn star_and_question_stop_at_slashes() {
        let i = ig("*.log\n?.md\ndocs/*/draft\n");
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("dir/a.log"));
        assert!(i.excluded("a.md"));
        assert!(!i.excluded("ab.md"));
        assert!(i.excluded("docs/x/draft"));
        assert!(!i.excluded("docs/x/y/draft"));
    }

    #[test]
    fn double_star_crosses_directories() {
        let i = ig("**/*.tmp\na/**/z\nvendor/**\n");
        assert!(i.excluded("x.tmp"));
        assert!(i.excluded("d/e/x.tmp"));
        assert!(i.excluded("a/z"));
        assert!(i.excluded("a/b/c/z"));
        assert!(!i.excluded("b/z"));
        assert!(i.excluded("vendor/a/b"));
        assert!(!i.excluded("vendor"));
    }

    #[test]
    fn exceptions_and_the_last_match_deciding() {
        let i = ig("*.md\n!README.md\ndocs\n!docs/keep\nREADME*\n");
        assert!(i.excluded("CHANGES.md"));
        // README.md: excepted, then excluded again by the later README*.
        assert!(i.excluded("README.md"));
        assert!(i.excluded("docs/other"));
        assert!(!i.excluded("docs/keep"));
        assert!(!i.excluded("docs/keep/deep"));
        assert!(i.has_exceptions());
        let i = ig("*\n!src\n");
        assert!(i.excluded("Dockerfile"));
        assert!(!i.excluded("src/main.rs"));
    }

    #[test]
    fn classes_and_escapes() {
        let i = ig("file[0-9]\nx[^a]y\n\\*star\n");
        assert!(i.excluded("file3"));
        assert!(!i.excluded("filex"));
        assert!(i.excluded("xby"));
        assert!(!i.excluded("xay"));
        assert!(i.excluded("*star"));
        assert!(!i.excluded("astar"));
    }

    #[test]
    fn clean_as_go() {
        assert_eq!(clean("/a//b/./c/../d/"), "a/b/d");
        assert_eq!(clean("../.."), ".");
        assert_eq!(clean(""), ".");
    }
}
