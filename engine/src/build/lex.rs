//! Variable expansion and word splitting as docker's builder does them (its shell lexer):
//! `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`; single
//! quotes keep everything literally, double quotes expand but keep blanks, the escape
//! character (`\`, or the `# escape=` one) keeps the next character literally (inside double
//! quotes only before `"`, `$` and itself). Quotes are removed from the result.
//!
//! Which instructions expand is the parser's business (docker: ADD, COPY, ENV, EXPOSE, FROM,
//! LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR, ARG; never RUN, CMD, ENTRYPOINT, SHELL,
//! HEALTHCHECK, whose text the shell sees).

/// Looks a variable up: `None` when it is not set (an empty value is set).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Docker's shell lexer with an escape character.
#[derive(Clone, Copy, Debug)]
pub struct Lexer {
    pub escape: char,
}

impl Default for Lexer {
    fn default() -> Lexer {
        Lexer { escape: '\\' }
    }
}

/// One word being built: its text, and whether anything (even `""`) started it.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    cur: String,
    started: bool,
}

impl Words {
    fn push(&mut self, c: char) {
        self.cur.push(c);
        self.started = true;
    }
    fn push_str(&mut self, s: &str) {
        self.cur.push_str(s);
        self.started = true;
    }
    fn end(&mut self) {
        if self.started {
            self.done.push(std::mem::take(&mut self.cur));
            self.started = false;
        }
    }
}

impl Lexer {
    /// `text` expanded as one word (blanks kept, quotes removed).
    pub fn word(&self, text: &str, vars: Lookup<'_>) -> Result<String, String> {
        Ok(self.process(text, vars, false)?.concat())
    }

    /// `text` expanded and split into words on unquoted blanks (an unquoted variable's
    /// value splits too, as the shell does).
    pub fn words(&self, text: &str, vars: Lookup<'_>) -> Result<Vec<String>, String> {
        self.process(text, vars, true)
    }

    fn process(&self, text: &str, vars: Lookup<'_>, split: bool) -> Result<Vec<String>, String> {
        let chars: Vec<char> = text.chars().collect();
        let mut w = Words::default();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                c if split && c.is_whitespace() => w.end(),
                c if c == self.escape => match chars.get(i) {
                    Some(&n) => {
                        w.push(n);
                        i += 1;
                    }
                    // A lone escape at the end stays (docker keeps it).
                    None => w.push(c),
                },
                '\'' => {
                    w.started = true;
                    loop {
                        match chars.get(i) {
                            Some('\'') => {
                                i += 1;
                                break;
                            }
                            Some(&c) => {
                                w.cur.push(c);
                                i += 1;
                            }
                            None => {
                                return Err("unexpected end of statement while looking for \
                                            matching single-quote"
                                    .into())
                            }
                        }
                    }
                }
                '"' => {
                    w.started = true;
                    loop {
                        match chars.get(i) {
                            Some('"') => {
                                i += 1;
                                break;
                            }
                            Some(&c) if c == self.escape => {
                                i += 1;
                                match chars.get(i) {
                                    Some(&n) if n == '"' || n == '$' || n == self.escape => {
                                        w.cur.push(n);
                                        i += 1;
                                    }
                                    _ => w.cur.push(c),
                                }
                            }
                            Some('$') => {
                                i += 1;
                                let v = self.dollar(&chars, &mut i, vars)?;
                                w.cur.push_str(&v);
                            }
                            Some(&c) => {
                                w.cur.push(c);
                                i += 1;
                            }
                            None => {
                                return Err("unexpected end of statement while looking for \
                                            matching double-quote"
                                    .into())
                            }
                        }
                    }
                }
                '$' => {
                    let v = self.dollar(&chars, &mut i, vars)?;
                    if split {
                        // Unquoted: the value's blanks separate words.
                        let mut parts = v.split(char::is_whitespace).peekable();
                        while let Some(p) = parts.next() {
                            if !p.is_empty() {
                                w.push_str(p);
                            }
                            if parts.peek().is_some() {
                                w.end();
                            }
                        }
                    } else {
                        w.push_str(&v);
                    }
                }
                c => w.push(c),
            }
        }
        w.end();
        if !split && w.done.is_empty() {
            w.done.push(String::new());
        }
        Ok(w.done)
    }

    /// After a `$` at `chars[*i - 1]`: the expansion (a lone `$` stays `$`).
    fn dollar(&self, chars: &[char], i: &mut usize, vars: Lookup<'_>) -> Result<String, String> {
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
        match chars.get(*i) {
            Some('{') => {
                *i += 1;
                let start = *i;
                while chars.get(*i).is_some_and(|&c| is_name(c)) {
                    *i += 1;
                }
                let name: String = chars[start..*i].iter().collect();
                if name.is_empty() {
                    return Err("missing variable name in ${}".into());
                }
                match chars.get(*i) {
                    Some('}') => {
                        *i += 1;
                        Ok(vars(&name).unwrap_or_default())
                    }
                    Some(':') | Some('-') | Some('+') => {
                        let colon = chars[*i] == ':';
                        if colon {
                            *i += 1;
                        }
                        let op = match chars.get(*i) {
                            Some(&c @ ('-' | '+')) => c,
                            _ => {
                                return Err(format!(
                                    "unsupported modifier in ${{{name}...}}: only :-, -, :+ \
                                     and + are supported"
                                ))
                            }
                        };
                        *i += 1;
                        // The word runs to the matching `}` and is expanded itself.
                        let start = *i;
                        let mut depth = 1;
                        while let Some(&c) = chars.get(*i) {
                            if c == self.escape {
                                *i += 2;
                                continue;
                            }
                            if c == '{' {
                                depth += 1;
                            } else if c == '}' {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            *i += 1;
                        }
                        if chars.get(*i) != Some(&'}') {
                            return Err(format!("missing '}}' in ${{{name}...}}"));
                        }
                        let word: String = chars[start..*i].iter().collect();
                        *i += 1;
                        let value = vars(&name);
                        let set = match colon {
                            true => value.as_deref().is_some_and(|v| !v.is_empty()),
                            false => value.is_some(),
                        };
                        match (op, set) {
                            ('-', true) => Ok(value.unwrap_or_default()),
                            ('-', false) | ('+', true) => self.word(&word, vars),
                            _ => Ok(String::new()),
                        }
                    }
                    _ => Err(format!("missing '}}' in ${{{name}...}}")),
                }
            }
            Some(&c) if is_name(c) => {
                let start = *i;
                while chars.get(*i).is_some_and(|&c| is_name(c)) {
                    *i += 1;
                }
                let name: String = chars[start..*i].iter().collect();
                Ok(vars(&name).unwrap_or_default())
            }
            _ => Ok("$".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "EMPTY" => Some(String::new()),
            "SP" => Some("x y".into()),
            _ => None,
        }
    }

    fn word(s: &str) -> String {
        Lexer::default().word(s, &env).unwrap()
    }

    fn words(s: &str) -> Vec<String> {
        Lexer::default().words(s, &env).unwrap()
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(word("$A/${A}b$UNSET."), "a/ab.");
        assert_eq!(word("cost $ 5"), "cost $ 5");
        assert_eq!(word("${A}${EMPTY}"), "a");
    }

    #[test]
    fn default_and_alternative_values_as_docker() {
        assert_eq!(word("${UNSET:-def}"), "def");
        assert_eq!(word("${EMPTY:-def}"), "def");
        assert_eq!(word("${EMPTY-def}"), "");
        assert_eq!(word("${UNSET-def}"), "def");
        assert_eq!(word("${A:-def}"), "a");
        assert_eq!(word("${A:+alt}"), "alt");
        assert_eq!(word("${EMPTY:+alt}"), "");
        assert_eq!(word("${EMPTY+alt}"), "alt");
        assert_eq!(word("${UNSET:+alt}"), "");
        // The word is expanded itself.
        assert_eq!(word("${UNSET:-$A-x}"), "a-x");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(word("'$A'"), "$A");
        assert_eq!(word("\"$A b\""), "a b");
        assert_eq!(word("\\$A"), "$A");
        assert_eq!(word("\"\\$A \\\" \\n\""), "$A \" \\n");
        let backtick = Lexer { escape: '`' };
        assert_eq!(backtick.word("`$A C:\\dir", &env).unwrap(), "$A C:\\dir");
    }

    #[test]
    fn words_split_on_unquoted_blanks_and_values() {
        assert_eq!(words("a  'b c' \"d $A\""), ["a", "b c", "d a"]);
        assert_eq!(words("$SP z"), ["x", "y", "z"]);
        assert_eq!(words("\"$SP\""), ["x y"]);
        assert_eq!(words("a\\ b"), ["a b"]);
        assert_eq!(words("'' x"), ["", "x"]);
    }

    #[test]
    fn bad_syntax_is_refused() {
        let l = Lexer::default();
        assert!(l.word("'open", &env).unwrap_err().contains("single-quote"));
        assert!(l.word("\"open", &env).unwrap_err().contains("double-quote"));
        assert!(l.word("${A", &env).is_err());
        assert!(l.word("${A:?x}", &env).unwrap_err().contains("modifier"));
        assert!(l.word("${}", &env).is_err());
    }
}
