//! Output as docker prints it: human sizes and durations, timestamps, `--format` handling
//! (`table …`, `json`, Go-template text) and tab-aligned tables.

pub mod template;

use std::io::Write;

use anyhow::Result;
use serde_json::Value;

pub use template::Template;

/// docker's `units.HumanSizeWithPrecision(size, 3)`: decimal units, `%.3g`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    custom_size(bytes, 1000.0, &UNITS, 3)
}

/// docker's `units.BytesSize`: binary units, `%.4g` (`3.832GiB`).
pub fn bytes_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    custom_size(bytes, 1024.0, &UNITS, 4)
}

/// docker's `units.CustomSize`: `bytes` in the largest unit of `base` below it, `%.{prec}g`.
fn custom_size(bytes: u64, base: f64, units: &[&str], prec: usize) -> String {
    let mut size = bytes as f64;
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    format!("{}{}", go_g(size, prec), units[i])
}

/// Go's `%.{prec}g`.
pub fn go_g(x: f64, prec: usize) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    let sci = format!("{:.*e}", prec - 1, x);
    let (mant, exp) = sci.split_once('e').expect("rust {:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    if exp < -4 || exp >= prec as i32 {
        let mant = trim_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{x:.decimals$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// docker's `units.HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds;
    if s < 1 {
        return "Less than a second".into();
    }
    if s == 1 {
        return "1 second".into();
    }
    if s < 60 {
        return format!("{s} seconds");
    }
    let minutes = s / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (s as f64 / 3600.0 + 0.5) as i64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", s / 3600 / 24 / 365)
}

pub fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// "3 weeks ago", or "N/A" without a time.
pub fn since(created: Option<i64>) -> String {
    match created {
        Some(t) => format!("{} ago", human_duration(now_unix() - t)),
        None => "N/A".to_string(),
    }
}

/// An RFC 3339 timestamp as Unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// Go's `time.Time.String()` in UTC: `2024-01-02 03:04:05 +0000 UTC`.
pub fn go_time(unix: i64) -> String {
    match jiff::Timestamp::from_second(unix) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC").to_string(),
        Err(_) => "N/A".to_string(),
    }
}

/// docker's RFC3339Nano (inspect's times): UTC, fractional seconds without trailing zeros.
pub fn rfc3339_nano(t: &str) -> String {
    match t.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.fZ").to_string(),
        Err(_) => t.to_string(),
    }
}

/// docker's `logs -t` time: RFC 3339 with exactly nine fractional digits
/// (`RFC3339NanoFixed`), UTC.
pub fn rfc3339_nano_fixed(t: &str) -> String {
    match t.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string(),
        Err(_) => t.to_string(),
    }
}

/// docker's `Ellipsis`: at most `max` characters, the last one `…` when cut.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// How `--format` asked rows to be printed.
pub enum Format {
    /// A table with a header line, tab-aligned (`table …`, or the command's default).
    Table(Template),
    /// One JSON object per row.
    Json,
    /// The template per row, no header.
    Raw(Template),
}

impl Format {
    /// Parses a `--format` value; `default` is the command's table template (without the
    /// `table ` prefix). `\t` and `\n` typed literally become tab and newline, as docker.
    pub fn parse(format: Option<&str>, default: &str) -> Result<Format> {
        let f = match format {
            None | Some("") | Some("table") => return Ok(Format::Table(Template::parse(default)?)),
            Some(f) => f,
        };
        if f.trim() == "json" {
            return Ok(Format::Json);
        }
        let (table, body) = match f.strip_prefix("table") {
            Some(rest) if rest.starts_with([' ', '\t']) || rest.is_empty() => (true, rest),
            _ => (false, f),
        };
        let body = body
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        let t = Template::parse(&body)?;
        Ok(if table {
            Format::Table(t)
        } else {
            Format::Raw(t)
        })
    }

    /// Prints `rows` (each a JSON object of the command's fields); `headers` names the
    /// columns for the table header (field → header text).
    pub fn print(&self, out: &mut dyn Write, headers: &Value, rows: &[Value]) -> Result<()> {
        match self {
            Format::Json => {
                for r in rows {
                    writeln!(out, "{}", serde_json::to_string(r)?)?;
                }
            }
            Format::Raw(t) => {
                for r in rows {
                    writeln!(out, "{}", t.render(r)?)?;
                }
            }
            Format::Table(t) => {
                let mut lines = vec![t.render(headers)?];
                for r in rows {
                    lines.push(t.render(r)?);
                }
                write!(out, "{}", tabwrite(&lines.join("\n")))?;
                if !lines.is_empty() {
                    writeln!(out)?;
                }
            }
        }
        Ok(())
    }
}

/// Go's `tabwriter.NewWriter(w, 10, 1, 3, ' ', 0)` as docker uses it: tab-terminated cells
/// padded to the widest cell of their column plus 3, at least 10; the last cell of a line
/// is not padded. Columns are aligned over consecutive lines that have them.
pub fn tabwrite(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for cells in &lines {
        for (i, c) in cells.iter().enumerate().take(cells.len().saturating_sub(1)) {
            let w = (c.chars().count() + 3).max(10);
            if widths.len() <= i {
                widths.push(w);
            } else {
                widths[i] = widths[i].max(w);
            }
        }
    }
    let mut out = String::new();
    for (n, cells) in lines.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i + 1 < cells.len() {
                let pad = widths[i] - c.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(4_261_550), "4.26MB");
        assert_eq!(human_size(1_240_000_000), "1.24GB");
        assert_eq!(human_size(856_000), "856kB");
        assert_eq!(human_size(12_345), "12.3kB");
        assert_eq!(human_size(999_950), "1e+03kB");
        assert_eq!(bytes_size(1023), "1023B");
        assert_eq!(bytes_size(4_114_616_320), "3.832GiB");
        assert_eq!(bytes_size(1 << 20), "1MiB");
        assert_eq!(go_g(0.000012345, 3), "1.23e-05");
    }

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(59 * 60), "59 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(20 * 86400), "2 weeks");
        assert_eq!(human_duration(100 * 86400), "3 months");
        assert_eq!(human_duration(3 * 365 * 86400), "3 years");
    }

    #[test]
    fn times() {
        let t = parse_time("2024-01-02T03:04:05.123456789Z").unwrap();
        assert_eq!(go_time(t), "2024-01-02 03:04:05 +0000 UTC");
        assert_eq!(parse_time("2024-01-02T05:04:05+02:00"), Some(t));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(ellipsis("abcdef", 4), "abc…");
        assert_eq!(ellipsis("abc", 4), "abc");
    }

    #[test]
    fn tables_align_like_tabwriter() {
        assert_eq!(
            tabwrite("REPOSITORY\tTAG\tSIZE\nbusybox\tlatest\t4.26MB"),
            "REPOSITORY   TAG       SIZE\nbusybox      latest    4.26MB"
        );
        let f = Format::parse(Some("table {{.A}}\\t{{.B}}"), "").unwrap();
        let mut out = Vec::new();
        f.print(
            &mut out,
            &json!({"A": "AA", "B": "BB"}),
            &[json!({"A": "x", "B": "y"})],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "AA        BB\nx         y\n"
        );
        let f = Format::parse(Some("{{.A}}:{{.B}}"), "").unwrap();
        let mut out = Vec::new();
        f.print(&mut out, &json!({}), &[json!({"A": "x", "B": "y"})])
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "x:y\n");
        let mut out = Vec::new();
        Format::parse(Some("json"), "")
            .unwrap()
            .print(&mut out, &json!({}), &[json!({"A": 1})])
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"A\":1}\n");
    }
}
