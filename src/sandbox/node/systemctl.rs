//! `systemctl` on a sandbox node, for `kubelet.service` (the only unit a kubeadm node's
//! rotation touches):
//!
//! - `systemctl restart|start|stop kubelet` (exit 0, silent; an unknown unit: exit 5,
//!   `Failed to restart foo.service: Unit foo.service not found.`);
//! - `systemctl is-active kubelet`: `active` (exit 0), or `activating`, `inactive`,
//!   `failed` (exit 3); `-q` prints nothing;
//! - `systemctl show kubelet [-p|--property=NAME[,NAME…]]… [--value]`: `NAME=VALUE`
//!   lines, or the values only; properties `Id`, `Names`, `Description`, `LoadState`,
//!   `ActiveState`, `SubState`, `Result`, `MainPID`, `ExecMainPID`, `NRestarts`,
//!   `Restart`, `RestartUSec`, `ActiveEnterTimestamp[Monotonic]`,
//!   `ActiveExitTimestamp[Monotonic]`, `StateChangeTimestamp[Monotonic]`,
//!   `UnitFileState`; monotonic ones in µs since the node's boot;
//! - `systemctl status kubelet`: the short human status and the last journal lines
//!   (exit 0 if active, 3 if not);
//! - `systemctl is-enabled kubelet` (`enabled`), `systemctl daemon-reload`.

use super::journalctl;
use super::kubelet::{ActiveState, Machine, State};
use super::logs::{self, Nanos};
use super::output;
use crate::transport::Output;

const UNIT: &str = "kubelet.service";
const DESCRIPTION: &str = "kubelet: The Kubernetes Node Agent";
const EXEC: &str = "/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS";

/// systemd's timestamp format: `Fri 2026-01-02 03:04:05 UTC`; empty for 0.
pub fn timestamp(t: Nanos) -> String {
    if t == 0 {
        return String::new();
    }
    let d = logs::datetime(t);
    let day = &d.weekday().to_string()[..3];
    format!(
        "{day} {:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        d.year(),
        d.month() as u8,
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// `3min 2s ago`.
fn ago(now: Nanos, t: Nanos) -> String {
    let s = ((now - t).max(0) / 1_000_000_000) as u64;
    let ms = ((now - t).max(0) / 1_000_000) as u64;
    match s {
        0 => format!("{ms}ms ago"),
        1..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}min {}s ago", s / 60, s % 60),
        _ => format!("{}h {}min ago", s / 3600, (s % 3600) / 60),
    }
}

fn unit_name(u: &str) -> String {
    if u.contains('.') {
        u.to_string()
    } else {
        format!("{u}.service")
    }
}

fn properties(m: &Machine, st: &State, found: bool, unit: &str) -> Vec<(&'static str, String)> {
    let u = &st.kubelet;
    if !found {
        return vec![
            ("Id", unit.to_string()),
            ("Names", unit.to_string()),
            ("LoadState", "not-found".into()),
            ("ActiveState", "inactive".into()),
            ("SubState", "dead".into()),
            ("MainPID", "0".into()),
            ("NRestarts", "0".into()),
        ];
    }
    let result = if u.failure.is_some() {
        "exit-code"
    } else {
        "success"
    };
    let sub = if u.sub.is_empty() {
        "dead"
    } else {
        u.sub.as_str()
    };
    vec![
        ("Id", UNIT.into()),
        ("Names", UNIT.into()),
        ("Description", DESCRIPTION.into()),
        ("LoadState", "loaded".into()),
        ("ActiveState", u.state.as_str().into()),
        ("SubState", sub.into()),
        ("Result", result.into()),
        ("MainPID", u.main_pid.to_string()),
        ("ExecMainPID", u.last_pid.to_string()),
        ("NRestarts", u.n_restarts.to_string()),
        ("Restart", "always".into()),
        ("RestartUSec", format!("{}", m.restart.unit().as_micros())),
        ("ActiveEnterTimestamp", timestamp(u.active_enter)),
        (
            "ActiveEnterTimestampMonotonic",
            st.monotonic_us(u.active_enter).to_string(),
        ),
        ("ActiveExitTimestamp", timestamp(u.active_exit)),
        (
            "ActiveExitTimestampMonotonic",
            st.monotonic_us(u.active_exit).to_string(),
        ),
        ("StateChangeTimestamp", timestamp(u.changed)),
        (
            "StateChangeTimestampMonotonic",
            st.monotonic_us(u.changed).to_string(),
        ),
        ("UnitFileState", "enabled".into()),
    ]
}

fn status(m: &Machine, st: &State, now: Nanos, lines: usize) -> Output {
    let u = &st.kubelet;
    let bullet = match u.state {
        ActiveState::Active | ActiveState::Activating => "●",
        ActiveState::Failed => "×",
        ActiveState::Inactive => "○",
    };
    let mut out = format!(
        "{bullet} {UNIT} - {DESCRIPTION}\n     Loaded: loaded (/lib/systemd/system/kubelet.service; enabled; preset: enabled)\n    Drop-In: /usr/lib/systemd/system/kubelet.service.d\n             └─10-kubeadm.conf\n"
    );
    let result = if u.failure.is_some() {
        " (Result: exit-code)"
    } else {
        ""
    };
    let since = if u.changed == 0 {
        String::new()
    } else {
        format!(" since {}; {}", timestamp(u.changed), ago(now, u.changed))
    };
    let sub = if u.sub.is_empty() {
        "dead"
    } else {
        u.sub.as_str()
    };
    out.push_str(&format!(
        "     Active: {} ({sub}){result}{since}\n       Docs: https://kubernetes.io/docs/\n",
        u.state.as_str()
    ));
    if u.main_pid != 0 {
        out.push_str(&format!(
            "   Main PID: {pid} (kubelet)\n     CGroup: /system.slice/kubelet.service\n             └─{pid} /usr/bin/kubelet --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml\n",
            pid = u.main_pid
        ));
    } else if u.last_pid != 0 && u.failure.is_some() {
        out.push_str(&format!(
            "    Process: {pid} ExecStart={EXEC} (code=exited, status=1/FAILURE)\n   Main PID: {pid} (code=exited, status=1/FAILURE)\n",
            pid = u.last_pid
        ));
    }
    let journal = logs::journal_lines(&m.root);
    let tail: Vec<String> = journal
        .iter()
        .skip(journal.len().saturating_sub(lines))
        .map(|l| journalctl::short(&m.name, l))
        .collect();
    if !tail.is_empty() {
        out.push('\n');
        for l in tail {
            out.push_str(&l);
            out.push('\n');
        }
    }
    let code = if u.state == ActiveState::Active { 0 } else { 3 };
    output(code, out, "")
}

/// Run `systemctl ARGS`.
pub fn run(m: &Machine, args: &[&str]) -> std::io::Result<Output> {
    let mut verb: Option<&str> = None;
    let mut units: Vec<String> = vec![];
    let mut props: Vec<String> = vec![];
    let mut value = false;
    let mut quiet = false;
    let mut lines = 10usize;
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "--version" => {
                return Ok(Output {
                    code: Some(0),
                    stdout: b"systemd 252 (252.36-1~deb12u1)\n+PAM +AUDIT +SELINUX +APPARMOR +IMA +SMACK +SECCOMP\n".to_vec(),
                    stderr: vec![],
                });
            }
            "--value" => value = true,
            "-q" | "--quiet" => quiet = true,
            "--no-pager" | "--no-block" | "--no-legend" | "-l" | "--full" | "--plain"
            | "--system" => {}
            "-p" | "--property" => props.extend(
                it.next()
                    .map(|p| p.split(',').map(str::to_string).collect::<Vec<_>>())
                    .unwrap_or_default(),
            ),
            "-n" | "--lines" => lines = it.next().and_then(|n| n.parse().ok()).unwrap_or(10),
            _ if a.starts_with("--property=") => {
                props.extend(a["--property=".len()..].split(',').map(str::to_string))
            }
            _ if a.starts_with("-p") && a.len() > 2 => {
                props.extend(a[2..].split(',').map(str::to_string))
            }
            _ if a.starts_with("--lines=") => lines = a["--lines=".len()..].parse().unwrap_or(10),
            _ if a.starts_with('-') => {
                m.reconcile()?;
                return Ok(output(
                    1,
                    "",
                    format!("systemctl: unrecognized option '{a}'\n"),
                ));
            }
            _ if verb.is_none() => verb = Some(a),
            _ => units.push(unit_name(a)),
        }
    }
    let now = logs::now();
    let has_kubelet = m.has_kubelet();
    let found = |u: &str| u == UNIT && has_kubelet;
    let verb = verb.unwrap_or("list-units");
    if matches!(verb, "restart" | "start" | "stop" | "try-restart") {
        if units.is_empty() {
            m.reconcile_at(now)?;
            return Ok(output(1, "", "Too few arguments.\n"));
        }
        if let Some(u) = units.iter().find(|u| !found(u)) {
            m.reconcile_at(now)?;
            return Ok(output(
                5,
                "",
                format!("Failed to {verb} {u}: Unit {u} not found.\n"),
            ));
        }
        m.with(now, |m, st| match verb {
            "stop" => m.kubelet_stop(st, now),
            "start" => m.kubelet_start(st, now),
            "try-restart" if st.kubelet.state != ActiveState::Active => {}
            _ => m.kubelet_restart(st, now),
        })?;
        return Ok(output(0, "", ""));
    }
    let st = m.reconcile_at(now)?;
    Ok(match verb {
        "daemon-reload" => output(0, "", ""),
        "is-active" => {
            if units.is_empty() {
                return Ok(output(1, "", "Too few arguments.\n"));
            }
            let mut text = String::new();
            let mut any = false;
            for u in &units {
                let s = if found(u) {
                    st.kubelet.state
                } else {
                    ActiveState::Inactive
                };
                any |= s == ActiveState::Active;
                text.push_str(s.as_str());
                text.push('\n');
            }
            output(
                if any { 0 } else { 3 },
                if quiet { String::new() } else { text },
                "",
            )
        }
        "is-enabled" => {
            if units.iter().all(|u| found(u)) && !units.is_empty() {
                output(0, if quiet { "" } else { "enabled\n" }, "")
            } else {
                let u = units.first().cloned().unwrap_or_default();
                output(
                    1,
                    "",
                    format!("Failed to get unit file state for {u}: No such file or directory\n"),
                )
            }
        }
        "show" => {
            let unit = units.first().cloned().unwrap_or_else(|| UNIT.into());
            let all = properties(m, &st, found(&unit), &unit);
            let mut text = String::new();
            let wanted: Vec<&str> = if props.is_empty() {
                all.iter().map(|(k, _)| *k).collect()
            } else {
                props.iter().map(String::as_str).collect()
            };
            for p in wanted {
                if let Some((k, v)) = all.iter().find(|(k, _)| *k == p) {
                    if value {
                        text.push_str(&format!("{v}\n"));
                    } else {
                        text.push_str(&format!("{k}={v}\n"));
                    }
                } else if !props.is_empty() {
                    // systemd prints unknown properties empty.
                    if value {
                        text.push('\n');
                    } else {
                        text.push_str(&format!("{p}=\n"));
                    }
                }
            }
            output(0, text, "")
        }
        "status" => {
            let unit = units.first().cloned().unwrap_or_else(|| UNIT.into());
            if !found(&unit) {
                output(4, "", format!("Unit {unit} could not be found.\n"))
            } else {
                status(m, &st, now, lines)
            }
        }
        other => output(1, "", format!("Unknown command verb '{other}'.\n")),
    })
}
