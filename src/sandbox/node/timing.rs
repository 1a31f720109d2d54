//! How long the sandbox's simulated processes take to come back: the **restart time**
//! (`sandbox create --restart-time`, kept in `sandbox.json`, overridden by the environment
//! variable [`ENV`]) and the crash-loop back-off derived from it.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Environment variable that overrides a sandbox's restart time (same syntax).
pub const ENV: &str = "TRUSTFORM_SANDBOX_RESTART_TIME";

/// The default: a random duration from 0.2 s to 2 s for every restart.
pub const DEFAULT: &str = "0.2s-2s";

/// The shortest back-off unit, so that a restart time of 0 still crash-loops at a
/// bounded rate.
const MIN_UNIT: Duration = Duration::from_millis(100);

/// How long a restarting process stays down: `MIN-MAX` (a random duration in that
/// range for every restart) or one duration. Written as text: `0.2s-2s`, `500ms`, `0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartTime {
    /// Shortest.
    pub min: Duration,
    /// Longest.
    pub max: Duration,
}

impl Default for RestartTime {
    fn default() -> Self {
        Self::parse(DEFAULT).expect("the default parses")
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{t}` has no unit (ms, s or m)"))?;
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{t}` is not a duration"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("`{t}`: unknown unit `{unit}` (ms, s or m)")),
    };
    if !seconds.is_finite() || !(0.0..=3600.0).contains(&seconds) {
        return Err(format!("`{t}` is out of range (0 to 1 hour)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn show(d: Duration) -> String {
    if d.is_zero() {
        "0".into()
    } else if d.subsec_millis() == 0 && d.as_nanos().is_multiple_of(1_000_000_000) {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

impl RestartTime {
    /// Parse `0.2s-2s`, `500ms` or `0`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (min, max) = match text.split_once('-') {
            Some((a, b)) => (duration(a)?, duration(b)?),
            None => {
                let d = duration(text)?;
                (d, d)
            }
        };
        if min > max {
            return Err(format!(
                "`{text}`: the first duration is longer than the second"
            ));
        }
        Ok(Self { min, max })
    }

    /// The restart time of the environment ([`ENV`]) if set and valid, else `self`.
    pub fn or_env(self) -> Self {
        std::env::var(ENV)
            .ok()
            .and_then(|v| Self::parse(&v).ok())
            .unwrap_or(self)
    }

    /// One restart's duration.
    pub fn sample(&self) -> Duration {
        if self.min == self.max {
            return self.min;
        }
        let span = (self.max - self.min).as_nanos() as u64;
        self.min + Duration::from_nanos(super::random_u64() % (span + 1))
    }

    /// The crash-loop back-off unit: the kubelet's 10 s (and systemd's `RestartSec=10`
    /// of kubelet.service), scaled down to the longest restart time, at least 100 ms.
    pub fn unit(&self) -> Duration {
        self.max.max(MIN_UNIT)
    }

    /// The kubelet's back-off before the `n`th restart (n ≥ 1) of a crashing container:
    /// 10 s doubling to 5 min, scaled: `unit × 2^(n-1)`, at most `unit × 30`.
    pub fn backoff(&self, n: u32) -> Duration {
        let unit = self.unit();
        let factor = 1u32 << n.saturating_sub(1).min(5);
        (unit * factor).min(unit * 30)
    }
}

impl std::fmt::Display for RestartTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            f.write_str(&show(self.min))
        } else {
            write!(f, "{}-{}", show(self.min), show(self.max))
        }
    }
}

impl std::str::FromStr for RestartTime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl Serialize for RestartTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RestartTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = RestartTime::default();
        assert_eq!(d.min, Duration::from_millis(200));
        assert_eq!(d.max, Duration::from_secs(2));
        assert_eq!(d.to_string(), "200ms-2s");
        assert_eq!(RestartTime::parse("0").unwrap().to_string(), "0");
        assert_eq!(
            RestartTime::parse("500ms").unwrap().max,
            Duration::from_millis(500)
        );
        assert_eq!(
            RestartTime::parse("1.5s").unwrap().min,
            Duration::from_millis(1500)
        );
        for bad in ["", "2", "1s-0", "x", "5h", "-1s"] {
            assert!(RestartTime::parse(bad).is_err(), "{bad:?}");
        }
        for _ in 0..100 {
            let s = d.sample();
            assert!(s >= d.min && s <= d.max);
        }
    }

    #[test]
    fn backoff_doubles_to_thirty_units() {
        let rt = RestartTime::parse("0").unwrap();
        let ms = |n| rt.backoff(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(6), ms(7), ms(40)],
            [100, 200, 400, 3000, 3000, 3000]
        );
    }
}
