//! Injected faults: a fraction of requests answered 500, a fraction of writes answered
//! 409, added latency. Clients of the sandbox (trustform's own Kubernetes layer first)
//! must survive what a busy real API server does to them.

use super::ids;
use std::time::Duration;

/// The environment variable [`Faults::from_env`] reads.
pub const ENV: &str = "TRUSTFORM_SANDBOX_FAULTS";

/// What to inject. The default injects nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Fraction of requests answered 500 InternalError (before doing anything).
    pub error_rate: f64,
    /// Fraction of writes answered 409 Conflict (before doing anything).
    pub conflict_rate: f64,
    /// Latency added to every request.
    pub latency: Duration,
}

impl Faults {
    /// Parse `500=0.05,409=0.05,latency=20ms` (any subset, in any order; `""` = none).
    pub fn parse(text: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected KEY=VALUE"))?;
            let rate = || -> Result<f64, String> {
                let r: f64 = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("{part:?}: {v:?} is not a number"))?;
                if (0.0..=1.0).contains(&r) {
                    Ok(r)
                } else {
                    Err(format!("{part:?}: a rate is between 0 and 1"))
                }
            };
            match k.trim() {
                "500" => f.error_rate = rate()?,
                "409" => f.conflict_rate = rate()?,
                "latency" => {
                    f.latency = humantime::parse_duration(v.trim())
                        .map_err(|e| format!("{part:?}: {e}"))?;
                }
                other => {
                    return Err(format!(
                        "{other:?} is not a fault: use 500=RATE, 409=RATE or latency=DURATION"
                    ));
                }
            }
        }
        Ok(f)
    }

    /// From `TRUSTFORM_SANDBOX_FAULTS="500=0.05,409=0.05,latency=20ms"`; none when unset or
    /// malformed (the CLI parses it with [`Faults::parse`] to report mistakes).
    pub fn from_env() -> Faults {
        std::env::var(ENV)
            .ok()
            .and_then(|t| Faults::parse(&t).ok())
            .unwrap_or_default()
    }

    /// Whether this request is to fail with 500.
    pub fn roll_error(&self) -> bool {
        self.error_rate > 0.0 && ids::random_unit() < self.error_rate
    }

    /// Whether this write is to fail with 409.
    pub fn roll_conflict(&self) -> bool {
        self.conflict_rate > 0.0 && ids::random_unit() < self.conflict_rate
    }
}

impl std::fmt::Display for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "500={},409={},latency={}",
            self.error_rate,
            self.conflict_rate,
            humantime::format_duration(self.latency)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rolls() {
        let f = Faults::parse("500=0.05, 409=1,latency=20ms").unwrap();
        assert_eq!(f.error_rate, 0.05);
        assert_eq!(f.conflict_rate, 1.0);
        assert_eq!(f.latency, Duration::from_millis(20));
        assert!(f.roll_conflict());
        assert_eq!(Faults::parse("").unwrap(), Faults::default());
        assert!(!Faults::default().roll_error());
        assert!(Faults::parse("500=2").is_err());
        assert!(Faults::parse("503=0.1").is_err());
        assert!(Faults::parse("latency=fast").is_err());
        assert_eq!(Faults::parse(&f.to_string()).unwrap(), f);
    }
}
