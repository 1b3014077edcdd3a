//! `berth logs`: a container's logged output over runtime-svc's Logs stream, as `docker logs`
//! (stdout lines to stdout, stderr lines to stderr; -f, --tail, -t, --since, --until).

use super::{client, daemon_err};
use crate::context::Context;
use anyhow::{anyhow, Result};
use berth_proto::runtime::v1 as pb;
use std::process::ExitCode;
use tokio::io::AsyncWriteExt;

/// `berth logs` options.
#[derive(clap::Args, Debug)]
pub struct LogsOpts {
    /// Follow log output.
    #[arg(short, long)]
    pub follow: bool,
    /// Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42
    /// minutes).
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m").
    #[arg(long)]
    pub until: Option<String>,
    /// Number of lines to show from the end of the logs ("all" for all).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// The container (ID, ID prefix or name).
    pub container: String,
}

/// `berth logs`.
pub async fn logs(ctx: &Context, o: LogsOpts) -> Result<ExitCode> {
    let now = now_nanos();
    let since = o.since.as_deref().map(|s| parse_time(s, now)).transpose()?.unwrap_or(0);
    let until = o.until.as_deref().map(|s| parse_time(s, now)).transpose()?.unwrap_or(0);
    let tail = match o.tail.as_str() {
        "all" | "" => -1,
        n => n.parse::<i64>().map_err(|_| anyhow!("invalid value for --tail: {n:?}"))?.max(-1),
    };
    let mut rt = client(ctx).await?;
    let req = pb::LogsRequest {
        container: o.container.clone(),
        follow: o.follow,
        tail,
        since_unix_nanos: since,
        until_unix_nanos: until,
        stdout: true,
        stderr: true,
    };
    let mut stream = rt.logs(req).await.map_err(daemon_err)?.into_inner();
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    while let Some(batch) = stream.message().await.map_err(daemon_err)? {
        let (mut o_buf, mut e_buf) = (Vec::new(), Vec::new());
        for l in batch.entries {
            let buf = if l.stderr { &mut e_buf } else { &mut o_buf };
            if o.timestamps {
                buf.extend_from_slice(format_time(l.time_unix_nanos).as_bytes());
                buf.push(b' ');
            }
            buf.extend_from_slice(&l.line);
        }
        // Interleaving within one batch is per stream; each stream keeps its order.
        if !o_buf.is_empty() {
            out.write_all(&o_buf).await?;
            out.flush().await?;
        }
        if !e_buf.is_empty() {
            err.write_all(&e_buf).await?;
            err.flush().await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// docker's RFC3339NanoFixed: "2026-11-22T16:40:00.123456789Z".
pub fn format_time(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:09}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// docker's --since/--until values: a Go duration relative to now ("10m", "1h30m", "1.5h",
/// "300ms"), a Unix timestamp ("1700000000[.nnn]"), or RFC 3339 / its shorter forms
/// ("2026-11-22", "2026-11-22T10:00", "2026-11-22T10:00:00[.nnn][Z|±hh:mm]"; no zone = UTC).
pub fn parse_time(s: &str, now: i64) -> Result<i64> {
    let bad = || {
        anyhow!(
            "invalid value for time {s:?}: use RFC 3339 (2006-01-02T15:04:05Z), a Unix timestamp or a duration (10m)"
        )
    };
    let s = s.trim();
    if let Some(d) = parse_duration(s) {
        return Ok(now - d);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
        let sec: i64 = sec.parse().map_err(|_| bad())?;
        let mut nanos = 0i64;
        for (i, c) in frac.bytes().take(9).enumerate() {
            nanos += i64::from(c - b'0') * 10i64.pow(8 - i as u32);
        }
        return Ok(sec * 1_000_000_000 + nanos);
    }
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|v| v.parse::<i64>().ok()).ok_or_else(bad);
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (mut h, mut mi, mut se, mut nanos, mut offset) = (0, 0, 0, 0i64, 0i64);
    let mut rest = &s[10..];
    if let Some(r) = rest.strip_prefix('T') {
        h = r.get(0..2).and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        mi = r.get(3..5).and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        rest = &r[5..];
        if let Some(r) = rest.strip_prefix(':') {
            se = r.get(0..2).and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            rest = &r[2..];
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                for (i, c) in r[..end].bytes().take(9).enumerate() {
                    nanos += i64::from(c - b'0') * 10i64.pow(8 - i as u32);
                }
                rest = &r[end..];
            }
        }
        if rest == "Z" || rest.is_empty() {
        } else if let (Some(sign), Some(hh), Some(mm)) = (rest.get(0..1), rest.get(1..3), rest.get(4..6)) {
            let (hh, mm): (i64, i64) = (hh.parse().map_err(|_| bad())?, mm.parse().map_err(|_| bad())?);
            offset = (hh * 3600 + mm * 60) * if sign == "-" { -1 } else { 1 };
        } else {
            return Err(bad());
        }
    } else if !rest.is_empty() {
        return Err(bad());
    }
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset;
    Ok(secs * 1_000_000_000 + nanos)
}

/// A Go duration ("1h30m", "10m", "1.5s", "300ms", "2us", "5ns") in nanoseconds.
fn parse_duration(s: &str) -> Option<i64> {
    if s.is_empty() || !s.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let uend = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..uend] {
            "h" => 3600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[uend..];
    }
    Some(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_like_docker() {
        let now = 10_000 * 1_000_000_000;
        assert_eq!(parse_time("10m", now).unwrap(), now - 600 * 1_000_000_000);
        assert_eq!(parse_time("1h30m", now).unwrap(), now - 5400 * 1_000_000_000);
        assert_eq!(parse_time("1700000000.5", now).unwrap(), 1_700_000_000_500_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:01Z", now).unwrap(), 1_000_000_000);
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00", now).unwrap(), 0);
        assert_eq!(parse_time("1970-01-02", now).unwrap(), 86400 * 1_000_000_000);
        assert_eq!(parse_time("2026-11-22T16:40:00.000000001Z", now).unwrap(), 1_795_365_600_000_000_001);
        assert!(parse_time("yesterday", now).is_err());
        assert_eq!(format_time(1_795_365_600_000_000_001), "2026-11-22T16:40:00.000000001Z");
    }
}
