//! `journalctl` on a sandbox node: the journal of `kubelet.service` (the kubelet's own
//! klog lines and systemd's lines about the unit).
//!
//! `journalctl [-u|--unit kubelet[.service]] [-S|--since T] [-U|--until T]
//! [-n|--lines N] [-o|--output short|short-iso|short-precise|cat] [-r] [-q]
//! [--no-pager] [--no-hostname] [-b]`. Times as systemd.time(7) takes them:
//! `2026-01-02 03:04:05[.ffffff]`, `2026-01-02`, `03:04:05` (today), RFC 3339
//! (`2026-01-02T03:04:05Z`), `@EPOCH`, `now`, `today`, `yesterday`, `-5min`,
//! `5 min ago`; the machine's time zone is UTC. Nothing to print: `-- No entries --`.

use super::kubelet::Machine;
use super::logs::{self, JournalLine, Nanos};
use super::output;
use crate::transport::Output;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A journal line in journalctl's default (`short`) format.
pub fn short(host: &str, l: &JournalLine) -> String {
    format_line("short", host, l)
}

fn format_line(fmt: &str, host: &str, l: &JournalLine) -> String {
    let d = logs::datetime(l.time);
    let month = MONTHS[d.month() as usize - 1];
    let who = if host.is_empty() {
        format!("{}[{}]:", l.identifier, l.pid)
    } else {
        format!("{host} {}[{}]:", l.identifier, l.pid)
    };
    match fmt {
        "cat" => l.message.clone(),
        "short-iso" => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00 {who} {}",
            d.year(),
            d.month() as u8,
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            l.message
        ),
        "short-precise" => format!(
            "{month} {:02} {:02}:{:02}:{:02}.{:06} {who} {}",
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            d.microsecond(),
            l.message
        ),
        _ => format!(
            "{month} {:02} {:02}:{:02}:{:02} {who} {}",
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            l.message
        ),
    }
}

fn relative(text: &str) -> Option<i64> {
    let t = text.trim();
    let (sign, rest) = if let Some(r) = t.strip_suffix(" ago") {
        (-1, r.trim())
    } else if let Some(r) = t.strip_prefix('-') {
        (-1, r.trim())
    } else if let Some(r) = t.strip_prefix('+') {
        (1, r.trim())
    } else {
        return None;
    };
    let mut total: f64 = 0.0;
    let mut rest = rest.replace(' ', "");
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (n, tail) = rest.split_at(split);
        let n: f64 = n.parse().ok()?;
        let end = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, more) = tail.split_at(end);
        let secs = match unit {
            "us" | "usec" => 1e-6,
            "ms" | "msec" => 1e-3,
            "s" | "sec" | "second" | "seconds" => 1.0,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "week" | "weeks" => 604800.0,
            _ => return None,
        };
        total += n * secs;
        rest = more.to_string();
    }
    Some(sign * (total * 1e9) as i64)
}

/// A time as journalctl's `--since`/`--until` take it (UTC).
pub fn parse_time(text: &str, now: Nanos) -> Option<Nanos> {
    let t = text.trim();
    let today = logs::datetime(now).date();
    let midnight = |d: Date| PrimitiveDateTime::new(d, Time::MIDNIGHT).assume_utc();
    let nanos = |d: OffsetDateTime| d.unix_timestamp_nanos() as Nanos;
    match t {
        "now" => return Some(now),
        "today" => return Some(nanos(midnight(today))),
        "yesterday" => return today.previous_day().map(|d| nanos(midnight(d))),
        "tomorrow" => return today.next_day().map(|d| nanos(midnight(d))),
        _ => {}
    }
    if let Some(r) = relative(t) {
        return Some(now + r);
    }
    if let Some(epoch) = t.strip_prefix('@') {
        let s: f64 = epoch.parse().ok()?;
        return Some((s * 1e9) as Nanos);
    }
    if let Some(n) = logs::parse_rfc3339(t) {
        return Some(n);
    }
    let (date, clock) = match t.split_once([' ', 'T']) {
        Some((d, c)) => (Some(d), Some(c)),
        None if t.contains(':') => (None, Some(t)),
        None => (Some(t), None),
    };
    let date = match date {
        Some(d) => {
            let f = time::macros::format_description!("[year]-[month]-[day]");
            Date::parse(d, &f).ok()?
        }
        None => today,
    };
    let clock = match clock {
        None => Time::MIDNIGHT,
        Some(c) => {
            let (hms, frac) = c.split_once('.').unwrap_or((c, ""));
            let parts: Vec<u8> = hms
                .split(':')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let (h, mi, s) = match parts.as_slice() {
                [h, m] => (*h, *m, 0),
                [h, m, s] => (*h, *m, *s),
                _ => return None,
            };
            let mut nano = 0u32;
            if !frac.is_empty() {
                let digits: String = frac.chars().take(9).collect();
                nano = format!("{digits:0<9}").parse().ok()?;
            }
            Time::from_hms_nano(h, mi, s, nano).ok()?
        }
    };
    Some(nanos(PrimitiveDateTime::new(date, clock).assume_utc()))
}

/// Run `journalctl ARGS`.
pub fn run(m: &Machine, args: &[&str]) -> std::io::Result<Output> {
    let now = logs::now();
    let mut units: Vec<String> = vec![];
    let mut since = None;
    let mut until = None;
    let mut lines: Option<usize> = None;
    let mut fmt = "short".to_string();
    let mut reverse = false;
    let mut quiet = false;
    let mut hostname = true;
    let mut it = args.iter();
    let bad_time = |t: &str| output(1, "", format!("Failed to parse timestamp: {t}\n"));
    while let Some(&a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a, None),
        };
        let mut value = || inline.clone().or_else(|| it.next().map(|s| s.to_string()));
        match flag {
            "-u" | "--unit" => units.extend(value()),
            "-S" | "--since" => {
                let v = value().unwrap_or_default();
                match parse_time(&v, now) {
                    Some(t) => since = Some(t),
                    None => return Ok(bad_time(&v)),
                }
            }
            "-U" | "--until" => {
                let v = value().unwrap_or_default();
                match parse_time(&v, now) {
                    Some(t) => until = Some(t),
                    None => return Ok(bad_time(&v)),
                }
            }
            "-n" | "--lines" => lines = value().and_then(|n| n.parse().ok()),
            "-o" | "--output" => fmt = value().unwrap_or_default(),
            "-r" | "--reverse" => reverse = true,
            "-q" | "--quiet" => quiet = true,
            "--no-hostname" => hostname = false,
            "-e" | "--pager-end" => lines = lines.or(Some(1000)),
            "--no-pager" | "-b" | "--boot" | "-x" | "--catalog" | "-a" | "--all" | "--no-tail"
            | "--utc" => {}
            _ if a.starts_with("-n") && a.len() > 2 => lines = a[2..].parse().ok(),
            _ if a.starts_with("-u") && a.len() > 2 => units.push(a[2..].to_string()),
            _ => {
                m.reconcile_at(now)?;
                return Ok(output(
                    1,
                    "",
                    format!("journalctl: unrecognized option '{a}'\n"),
                ));
            }
        }
    }
    if !matches!(
        fmt.as_str(),
        "short" | "short-iso" | "short-precise" | "cat"
    ) {
        return Ok(output(
            1,
            "",
            format!("Failed to parse output format '{fmt}'.\n"),
        ));
    }
    m.reconcile_at(now)?;
    let kubelet = units.is_empty()
        || units
            .iter()
            .any(|u| u == "kubelet" || u == "kubelet.service");
    let mut entries: Vec<JournalLine> = if kubelet {
        logs::journal_lines(&m.root)
    } else {
        vec![]
    };
    entries.sort_by_key(|l| l.time);
    entries.retain(|l| since.is_none_or(|s| l.time >= s) && until.is_none_or(|u| l.time <= u));
    if let Some(n) = lines {
        entries.drain(..entries.len().saturating_sub(n));
    }
    if reverse {
        entries.reverse();
    }
    let host = if hostname { m.name.as_str() } else { "" };
    let mut out = String::new();
    if entries.is_empty() && !quiet {
        out.push_str("-- No entries --\n");
    }
    for l in &entries {
        out.push_str(&format_line(&fmt, host, l));
        out.push('\n');
    }
    Ok(output(0, out, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let now = 1_767_323_045_000_000_000; // 2026-01-02T03:04:05Z
        assert_eq!(parse_time("now", now), Some(now));
        assert_eq!(parse_time("-5s", now), Some(now - 5_000_000_000));
        assert_eq!(parse_time("2 min ago", now), Some(now - 120_000_000_000));
        assert_eq!(parse_time("2026-01-02 03:04:05", now), Some(now));
        assert_eq!(parse_time("2026-01-02T03:04:05Z", now), Some(now));
        assert_eq!(parse_time("03:04:05.5", now), Some(now + 500_000_000));
        assert_eq!(parse_time("@1767323045", now), Some(now));
        assert_eq!(
            parse_time("2026-01-02", now),
            Some(now - (3 * 3600 + 4 * 60 + 5) * 1_000_000_000)
        );
        assert_eq!(parse_time("bogus", now), None);
    }
}
