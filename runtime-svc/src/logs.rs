//! Container logs: the json-file log the shim writes (`<dir>/log.json`, rotated by the shim to
//! `log.json.1` … at `max-size`), its options (docker's `--log-opt max-size=…,max-file=…`), and
//! reading it back for `berth logs` — rotated files oldest first, filtered by stream and time,
//! `--tail`, and `-f` following new lines across rotations and restarts until the container
//! stops.

use crate::error::RuntimeError;
use crate::manager::Manager;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The log options a container gets: runtime-svc's defaults overridden by the request's,
/// validated. Only json-file's `max-size` and `max-file` are known.
pub fn effective_opts(
    defaults: &BTreeMap<String, String>,
    requested: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, RuntimeError> {
    let mut opts = defaults.clone();
    opts.extend(requested.iter().map(|(k, v)| (k.clone(), v.clone())));
    limits(&opts)?;
    Ok(opts)
}

/// (max size in bytes, 0 = unlimited; files kept) from log options.
pub fn limits(opts: &BTreeMap<String, String>) -> Result<(u64, u32), RuntimeError> {
    let mut size = 0u64;
    let mut files = 1u32;
    for (k, v) in opts {
        match k.as_str() {
            "max-size" => {
                size = if v == "-1" { 0 } else { parse_size(v).map_err(RuntimeError::Invalid)? };
            }
            "max-file" => {
                files = v.parse().map_err(|_| RuntimeError::Invalid(format!("invalid value for max-file: {v:?}")))?;
                if files < 1 {
                    return Err(RuntimeError::Invalid("max-file cannot be less than 1".into()));
                }
            }
            other => {
                return Err(RuntimeError::Invalid(format!("unknown log opt '{other}' for json-file log driver")));
            }
        }
    }
    if files > 1 && size == 0 {
        return Err(RuntimeError::Invalid("max-file can only be used together with max-size".into()));
    }
    Ok((size, files))
}

/// docker's sizes: "10m", "1.5k", "2g", "100" (bytes); units are powers of 1024.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size: '{s}'"))?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("invalid size: '{s}'")),
    };
    if n <= 0.0 {
        return Err(format!("invalid size: '{s}'"));
    }
    Ok((n * mult as f64) as u64)
}

/// What to read.
#[derive(Clone, Debug, Default)]
pub struct LogsQuery {
    /// Keep following until the container stops.
    pub follow: bool,
    /// Only the last N lines of what exists now.
    pub tail: Option<usize>,
    /// Lines at or after (ns since the epoch; 0 = no bound).
    pub since: i64,
    /// Lines at or before (ns since the epoch; 0 = no bound).
    pub until: i64,
    /// Include stdout.
    pub stdout: bool,
    /// Include stderr.
    pub stderr: bool,
}

/// One logged line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// From stderr.
    pub stderr: bool,
    /// When logged, ns since the epoch.
    pub time: i64,
    /// The bytes (with the trailing newline the line had).
    pub line: Vec<u8>,
}

/// Streams a container's log to `out` in batches; returns when done (or the receiver is gone).
pub async fn logs(
    m: Arc<Manager>,
    what: &str,
    q: LogsQuery,
    out: mpsc::Sender<Vec<LogLine>>,
) -> Result<(), RuntimeError> {
    let (rec, dir) = m.record_and_dir(what)?;
    let id = rec.id;
    let live = move || match m.record_and_dir(&id) {
        Ok((r, _)) => r.status == crate::container::Status::Running || r.restarting,
        Err(_) => false,
    };
    tokio::task::spawn_blocking(move || read_log(&dir, &q, &out, live))
        .await
        .map_err(|e| RuntimeError::Io { what: "reading the log".into(), source: std::io::Error::other(e) })
}

/// The rotated files, oldest first (log.json.N … log.json.1).
fn rotated(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|de| {
                    let name = de.file_name().to_string_lossy().into_owned();
                    let n = name.strip_prefix("log.json.")?.parse().ok()?;
                    Some((n, de.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|e| std::cmp::Reverse(e.0));
    v.into_iter().map(|(_, p)| p).collect()
}

/// Reads complete lines from `r` (a partial last line is left for later); returns false when
/// the receiver is gone.
struct Reader {
    r: BufReader<File>,
    ino: u64,
    offset: u64,
}

impl Reader {
    fn open(p: &Path) -> Option<Reader> {
        let f = File::open(p).ok()?;
        let ino = f.metadata().ok()?.ino();
        Some(Reader { r: BufReader::new(f), ino, offset: 0 })
    }

    fn read(&mut self, q: &LogsQuery, sink: &mut Vec<LogLine>) {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match self.r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) if buf.last() != Some(&b'\n') => {
                    // The shim is still writing this line: read it again next time.
                    let _ = self.r.seek(SeekFrom::Start(self.offset));
                    let _ = n;
                    break;
                }
                Ok(n) => {
                    self.offset += n as u64;
                    if let Some(l) = parse_line(&buf) {
                        if wanted(q, &l) {
                            sink.push(l);
                        }
                    }
                }
            }
        }
    }
}

fn wanted(q: &LogsQuery, l: &LogLine) -> bool {
    let stream_ok = (!q.stdout && !q.stderr) || (if l.stderr { q.stderr } else { q.stdout });
    stream_ok && (q.since == 0 || l.time >= q.since) && (q.until == 0 || l.time <= q.until)
}

fn send(out: &mpsc::Sender<Vec<LogLine>>, lines: &mut Vec<LogLine>) -> bool {
    while !lines.is_empty() {
        let n = lines.len().min(512);
        let batch: Vec<LogLine> = lines.drain(..n).collect();
        if out.blocking_send(batch).is_err() {
            return false;
        }
    }
    true
}

fn now_nanos() -> i64 {
    crate::container::now_nanos()
}

fn read_log(dir: &Path, q: &LogsQuery, out: &mpsc::Sender<Vec<LogLine>>, live: impl Fn() -> bool) {
    let main = dir.join("log.json");
    // Open everything first, so a rotation while we read loses nothing.
    let old: Vec<Reader> = rotated(dir).iter().filter_map(|p| Reader::open(p)).collect();
    let mut cur = Reader::open(&main);
    let mut lines = Vec::new();
    for mut r in old {
        if cur.as_ref().is_some_and(|c| c.ino == r.ino) {
            continue;
        }
        r.read(q, &mut lines);
    }
    if let Some(c) = cur.as_mut() {
        c.read(q, &mut lines);
    }
    if let Some(n) = q.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    if !send(out, &mut lines) || !q.follow {
        return;
    }
    let mut stopped_polls = 0;
    loop {
        if let Some(c) = cur.as_mut() {
            c.read(q, &mut lines);
        }
        // Rotated (or created) since we opened it: finish the old file, catch up on a rotated
        // file we never saw, continue with the new one.
        let now_ino = std::fs::metadata(&main).map(|m| m.ino()).ok();
        if now_ino.is_some() && now_ino != cur.as_ref().map(|c| c.ino) {
            if let Some(c) = cur.as_ref() {
                let first = dir.join("log.json.1");
                if std::fs::metadata(&first).map(|m| m.ino()).ok() != Some(c.ino) {
                    if let Some(mut r) = Reader::open(&first) {
                        r.read(q, &mut lines);
                    }
                }
            }
            cur = Reader::open(&main);
            if !send(out, &mut lines) {
                return;
            }
            continue;
        }
        // Truncated in place (max-file 1).
        if let Some(c) = cur.as_mut() {
            if c.r.get_ref().metadata().map(|m| m.len()).unwrap_or(0) < c.offset {
                c.offset = 0;
                let _ = c.r.seek(SeekFrom::Start(0));
                continue;
            }
        }
        if !send(out, &mut lines) {
            return;
        }
        if q.until > 0 && now_nanos() > q.until {
            return;
        }
        if out.is_closed() {
            return;
        }
        // Ends once the container is seen stopped twice in a row (not restarting), after a last
        // read of what the shim wrote before it exited.
        if live() {
            stopped_polls = 0;
        } else {
            stopped_polls += 1;
            if stopped_polls >= 2 {
                if let Some(c) = cur.as_mut() {
                    c.read(q, &mut lines);
                }
                send(out, &mut lines);
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Parses one json-file line (`{"log":…,"stream":…,"time":…}`).
fn parse_line(b: &[u8]) -> Option<LogLine> {
    #[derive(serde::Deserialize)]
    struct J {
        log: String,
        stream: String,
        time: String,
    }
    let j: J = serde_json::from_slice(b).ok()?;
    Some(LogLine { stderr: j.stream == "stderr", time: parse_rfc3339(&j.time)?, line: j.log.into_bytes() })
}

/// "2026-11-22T16:40:00.123456789Z" (UTC, as the shim writes) → ns since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &s[19..];
    let (frac, _zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            (&r[..end], &r[end..])
        }
        None => ("", rest),
    };
    let mut nanos = 0i64;
    for (i, c) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(c - b'0') * 10i64.pow(8 - i as u32);
    }
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(((days * 86400 + h * 3600 + mi * 60 + se) * 1_000_000_000) + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn options_like_docker() {
        let none = BTreeMap::new();
        let mut o = BTreeMap::new();
        o.insert("max-size".to_string(), "10k".to_string());
        o.insert("max-file".to_string(), "3".to_string());
        assert_eq!(limits(&effective_opts(&none, &o).unwrap()).unwrap(), (10240, 3));
        let mut bad = BTreeMap::new();
        bad.insert("max-file".to_string(), "3".to_string());
        assert!(limits(&bad).is_err(), "max-file needs max-size");
        bad.insert("max-size".to_string(), "lots".to_string());
        assert!(limits(&bad).is_err());
        let mut unknown = BTreeMap::new();
        unknown.insert("mode".to_string(), "x".to_string());
        assert!(limits(&unknown).unwrap_err().to_string().contains("unknown log opt 'mode'"));
        // The request overrides runtime-svc's defaults.
        let mut d = BTreeMap::new();
        d.insert("max-size".to_string(), "1m".to_string());
        let mut r = BTreeMap::new();
        r.insert("max-size".to_string(), "2m".to_string());
        assert_eq!(limits(&effective_opts(&d, &r).unwrap()).unwrap(), (2 << 20, 1));
    }

    #[test]
    fn rfc3339_parses() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(parse_rfc3339("2026-11-22T16:40:00.000000001Z"), Some(1_795_365_600_000_000_001));
        assert_eq!(parse_rfc3339("nope"), None);
    }

    fn line(w: &mut File, s: &str, stream: &str, t: &str) {
        writeln!(w, "{{\"log\":\"{s}\\n\",\"stream\":\"{stream}\",\"time\":\"{t}\"}}").unwrap();
    }

    #[test]
    fn reads_rotated_files_in_order_with_filters_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut f2 = File::create(dir.path().join("log.json.2")).unwrap();
        line(&mut f2, "a", "stdout", "2026-01-01T00:00:01Z");
        let mut f1 = File::create(dir.path().join("log.json.1")).unwrap();
        line(&mut f1, "b", "stderr", "2026-01-01T00:00:02Z");
        let mut f0 = File::create(dir.path().join("log.json")).unwrap();
        line(&mut f0, "c", "stdout", "2026-01-01T00:00:03Z");
        write!(f0, "{{\"log\":\"partial").unwrap();
        let all = |q: LogsQuery| {
            let (tx, mut rx) = mpsc::channel(16);
            read_log(dir.path(), &q, &tx, || false);
            drop(tx);
            let mut v = vec![];
            while let Ok(b) = rx.try_recv() {
                v.extend(b.into_iter().map(|l| String::from_utf8(l.line).unwrap()));
            }
            v
        };
        assert_eq!(all(LogsQuery::default()), vec!["a\n", "b\n", "c\n"]);
        assert_eq!(all(LogsQuery { tail: Some(2), ..Default::default() }), vec!["b\n", "c\n"]);
        assert_eq!(all(LogsQuery { stdout: true, ..Default::default() }), vec!["a\n", "c\n"]);
        let since = parse_rfc3339("2026-01-01T00:00:02Z").unwrap();
        assert_eq!(all(LogsQuery { since, ..Default::default() }), vec!["b\n", "c\n"]);
        assert_eq!(all(LogsQuery { until: since, ..Default::default() }), vec!["a\n", "b\n"]);
    }
}
