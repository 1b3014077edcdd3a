//! Docker-like rendering shared by every command module: aligned tables, human sizes ("12.3MB"),
//! human durations ("2 minutes ago"), short IDs, and size parsing ("512m").
//!
//! The formats follow docker's `go-units` so output reads the same as docker's.

// Helpers for every command module; each module uses only some of them.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A table printed with columns separated by at least three spaces, as docker's tabwriter does.
///
/// ```ignore
/// let mut t = Table::new(["IMAGE ID", "SIZE"]);
/// t.row([short_id(&digest), human_size(size)]);
/// print!("{t}");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with this header row.
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { rows: vec![headers.into_iter().map(Into::into).collect()] }
    }

    /// Appends a row; missing trailing cells print empty.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    /// Number of data rows (without the header).
    pub fn len(&self) -> usize {
        self.rows.len() - 1
    }

    /// True when there are no data rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; cols];
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        for r in &self.rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                line.push_str(c);
                if i + 1 < r.len() {
                    let pad = widths[i] - c.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Bytes in docker's decimal units with 3–4 significant digits: "0B", "999B", "1.5kB", "12.3MB",
/// "4.26GB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", sig_digits(v, 3), UNITS[i])
}

/// Formats like Go's `%.Ng` (N significant digits, no trailing zeros).
fn sig_digits(v: f64, n: i32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    let decimals = (n - 1 - mag).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A duration as docker words it: "Less than a second", "5 seconds", "About a minute",
/// "12 minutes", "About an hour", "3 hours", "4 days", "2 weeks", "3 months", "2 years".
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let minutes = secs / 60;
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", secs / 3600 / 24 / 365)
    }
}

/// "2 minutes ago" for a Unix timestamp in seconds (as `docker images` CREATED). Times in the
/// future or unknown (0) print as "N/A" and "Less than a second ago" respectively as docker does.
pub fn time_ago_unix(secs: i64) -> String {
    if secs <= 0 {
        return "N/A".into();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    format!("{} ago", human_duration(Duration::from_secs(now.saturating_sub(secs).max(0) as u64)))
}

/// "2 minutes ago" for a [`SystemTime`].
pub fn time_ago(t: SystemTime) -> String {
    format!("{} ago", human_duration(SystemTime::now().duration_since(t).unwrap_or_default()))
}

/// "Up 5 minutes" / "Exited (0) 2 hours ago" style helper: the duration since `secs` without
/// "ago" (e.g. for "Up {}").
pub fn since_unix(secs: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    human_duration(Duration::from_secs(now.saturating_sub(secs).max(0) as u64))
}

/// The 12-hex-character short form of a digest or ID: "sha256:abcdef…" → "abcdef012345".
pub fn short_id(id: &str) -> String {
    let hex = id.split_once(':').map(|(_, h)| h).unwrap_or(id);
    hex.chars().take(12).collect()
}

/// Shortens `s` to at most `max` characters, ending in "…" when cut (docker's `--no-trunc` off).
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Parses a size as docker's `--memory`/`--shm-size` do (binary units): "512", "512b", "64k",
/// "512m", "1.5g", "2GiB", "1t".
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size: {s:?}"))?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => return Err(format!("invalid size: {s:?} (use a number with an optional unit b, k, m, g, t)")),
    };
    if n < 0.0 {
        return Err(format!("invalid size: {s:?}"));
    }
    Ok((n * mult as f64) as u64)
}

/// A percentage as docker df shows it: "(42%)".
pub fn percent(part: u64, total: u64) -> String {
    if total == 0 {
        return "(0%)".into();
    }
    format!("({}%)", (part as f64 * 100.0 / total as f64).round() as u64)
}

/// Renders `s` indented by `n` spaces on every line.
pub fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    let mut out = String::new();
    for l in s.lines() {
        let _ = writeln!(out, "{pad}{l}");
    }
    out
}

/// JSON indented with four spaces, as docker's `inspect` prints it.
pub fn json_pretty<T: serde::Serialize + ?Sized>(v: &T) -> serde_json::Result<String> {
    let mut buf = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut buf, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    v.serialize(&mut ser)?;
    Ok(String::from_utf8(buf).expect("serde_json writes UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1500), "1.5kB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(4_261_000_000), "4.26GB");
        assert_eq!(human_size(123_456_789), "123MB");
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(Duration::from_millis(300)), "Less than a second");
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(human_duration(Duration::from_secs(45)), "45 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(120)), "2 minutes");
        assert_eq!(human_duration(Duration::from_secs(3600)), "About an hour");
        assert_eq!(human_duration(Duration::from_secs(5 * 3600)), "5 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3 days");
        assert_eq!(human_duration(Duration::from_secs(21 * 86400)), "3 weeks");
        assert_eq!(human_duration(Duration::from_secs(90 * 86400)), "3 months");
        assert_eq!(human_duration(Duration::from_secs(800 * 86400)), "2 years");
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(["TYPE", "TOTAL"]);
        t.row(["Images", "3"]).row(["Build Cache", "10"]);
        assert_eq!(t.to_string(), "TYPE          TOTAL\nImages        3\nBuild Cache   10\n");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("12q").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn short_ids() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(ellipsis("hello world", 5), "hell…");
        assert_eq!(percent(1, 4), "(25%)");
    }
}
