//! The Dockerfile's syntax, as docker's parser reads it: parser directives (`# escape=`,
//! `# syntax=`) at the very top, comments, `\` (or the escape character) continuing a line,
//! instruction names in any case, `--flag=value` options, the JSON (exec) form. Nothing is
//! expanded here: which instruction expands what is the builder's business (see [`super::lex`]).
//!
//! Not read: heredocs (`RUN <<EOF`), which only BuildKit knows.

use crate::{Error, Result};

/// The instructions docker's builder knows.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A parsed Dockerfile.
#[derive(Clone, Debug, PartialEq)]
pub struct Dockerfile {
    /// The escape character (`\`, or `` ` `` from `# escape=`).
    pub escape: char,
    /// The `# syntax=` directive, kept (strata has one frontend: the classic builder's).
    pub syntax: Option<String>,
    pub instructions: Vec<Instruction>,
}

/// One instruction, continuations joined.
#[derive(Clone, Debug, PartialEq)]
pub struct Instruction {
    /// The line it starts on (1-based).
    pub line: usize,
    /// Its name, upper-cased.
    pub keyword: String,
    /// Its `--name=value` options, in order (`--name` alone has no value).
    pub flags: Vec<(String, Option<String>)>,
    /// The text after the name and the flags.
    pub args: String,
    /// The instruction as written (continuations joined), as docker's `Step` lines show it.
    pub original: String,
}

impl Instruction {
    /// The JSON (exec) form of the arguments, when they are one.
    pub fn json_args(&self) -> Option<Vec<String>> {
        json_form(&self.args)
    }

    /// The value of flag `name`.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// Refuses a flag not in `known`, in docker's words.
    pub fn check_flags(&self, known: &[&str]) -> Result<()> {
        for (n, _) in &self.flags {
            if !known.contains(&n.as_str()) {
                return Err(self.error(format!("Unknown flag: {n}")));
            }
        }
        Ok(())
    }

    /// An error about this instruction, with its line.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::Dockerfile {
            line: self.line,
            message: message.into(),
        }
    }
}

/// A JSON array of strings (the exec form), else `None` (the shell form).
pub fn json_form(args: &str) -> Option<Vec<String>> {
    let t = args.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

/// `# name=value` at the top of the file.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (name, value) = rest.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.trim().to_string()))
}

/// Parses a Dockerfile's text.
pub fn parse(text: &str) -> Result<Dockerfile> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut escape = '\\';
    let mut syntax = None;
    let mut first = 0;
    // Directives: only before any comment, blank line or instruction.
    let mut seen = Vec::new();
    while let Some(l) = lines.get(first) {
        let Some((name, value)) = directive(l) else {
            break;
        };
        if seen.contains(&name) {
            return Err(Error::Dockerfile {
                line: first + 1,
                message: format!("only one {name} parser directive can be used"),
            });
        }
        match name.as_str() {
            "escape" => {
                escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(Error::Dockerfile {
                            line: first + 1,
                            message: format!(
                                "invalid escape token '{value}' does not match ` or \\"
                            ),
                        })
                    }
                }
            }
            "syntax" => syntax = Some(value),
            // Another directive name is a comment, and ends the directives.
            _ => break,
        }
        seen.push(name);
        first += 1;
    }

    let mut instructions = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, raw) in lines.iter().enumerate().skip(first) {
        let line = raw.trim_start();
        if line.starts_with('#') || (line.is_empty() && pending.is_some()) {
            // Comments, also inside a continuation; blank lines inside one are dropped.
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let trimmed = line.trim_end();
        let (body, continues) = match trimmed.strip_suffix(escape) {
            Some(b) => (b, true),
            None => (line, false),
        };
        let (start, mut text) = pending.take().unwrap_or((n + 1, String::new()));
        text.push_str(body);
        if continues {
            pending = Some((start, text));
            continue;
        }
        instructions.push(instruction(start, &text)?);
    }
    if let Some((start, text)) = pending {
        // A continuation at the end of the file ends the instruction.
        if !text.trim().is_empty() {
            instructions.push(instruction(start, &text)?);
        }
    }
    Ok(Dockerfile {
        escape,
        syntax,
        instructions,
    })
}

fn instruction(line: usize, text: &str) -> Result<Instruction> {
    let text = text.trim();
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    let keyword = text[..end].to_ascii_uppercase();
    if !INSTRUCTIONS.contains(&keyword.as_str()) {
        return Err(Error::Dockerfile {
            line,
            message: format!("unknown instruction: {}", &text[..end]),
        });
    }
    let mut rest = text[end..].trim_start();
    let mut flags = Vec::new();
    while let Some(f) = rest.strip_prefix("--") {
        let e = f.find(char::is_whitespace).unwrap_or(f.len());
        let flag = &f[..e];
        if flag.is_empty() {
            break;
        }
        match flag.split_once('=') {
            Some((n, v)) => flags.push((n.to_string(), Some(v.to_string()))),
            None => flags.push((flag.to_string(), None)),
        }
        rest = f[e..].trim_start();
    }
    Ok(Instruction {
        line,
        keyword,
        flags,
        args: rest.to_string(),
        original: text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keywords(d: &Dockerfile) -> Vec<(usize, &str)> {
        d.instructions
            .iter()
            .map(|i| (i.line, i.keyword.as_str()))
            .collect()
    }

    #[test]
    fn instructions_in_any_case_with_comments_and_continuations() {
        let d = parse(
            "# a comment\nfrom demo AS base\n\n  Run echo a \\\n   # inside\n\n  && echo b\n\
             copy --from=base --chown=1:2 a b\nCMD [\"sh\", \"-c\"]\n",
        )
        .unwrap();
        assert_eq!(
            keywords(&d),
            [(2, "FROM"), (4, "RUN"), (8, "COPY"), (9, "CMD")]
        );
        assert_eq!(d.instructions[0].args, "demo AS base");
        assert_eq!(d.instructions[1].args, "echo a && echo b");
        let copy = &d.instructions[2];
        assert_eq!(copy.flag("from"), Some("base"));
        assert_eq!(copy.flag("chown"), Some("1:2"));
        assert_eq!(copy.args, "a b");
        assert!(copy.check_flags(&["from", "chown"]).is_ok());
        let e = copy.check_flags(&["from"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "dockerfile parse error line 8: Unknown flag: chown"
        );
        assert_eq!(
            d.instructions[3].json_args(),
            Some(vec!["sh".to_string(), "-c".to_string()])
        );
        assert_eq!(d.instructions[1].json_args(), None);
        assert_eq!(d.escape, '\\');
    }

    #[test]
    fn unknown_instruction_names_its_line() {
        let e = parse("FROM demo\n\nFOO bar\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "dockerfile parse error line 3: unknown instruction: FOO"
        );
        let e = parse("FROM demo\nRUN a \\\n  b\nfoo").unwrap_err();
        assert!(e.to_string().contains("line 4"), "{e}");
    }

    #[test]
    fn directives_only_at_the_top() {
        let d =
            parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM demo\nRUN a `\n b\n").unwrap();
        assert_eq!(d.escape, '`');
        assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(d.instructions[1].args, "a b");
        // After a comment a directive is a comment: the backslash still continues.
        let d = parse("# hello\n# escape=`\nFROM demo\nRUN a \\\n b\n").unwrap();
        assert_eq!(d.escape, '\\');
        assert_eq!(d.instructions.len(), 2);
        assert!(parse("# escape=x\nFROM demo").is_err());
        assert!(parse("# escape=`\n# escape=`\nFROM demo").is_err());
    }

    #[test]
    fn a_continuation_at_the_end_and_trailing_blanks_after_the_escape() {
        let d = parse("FROM demo\nRUN a \\  \n b \\").unwrap();
        assert_eq!(d.instructions[1].args, "a b");
    }

    #[test]
    fn bool_flags_and_flags_only_before_the_arguments() {
        let d = parse("COPY --link a --b c\n").unwrap();
        let i = &d.instructions[0];
        assert_eq!(i.flags, [("link".to_string(), None)]);
        assert_eq!(i.args, "a --b c");
    }
}
