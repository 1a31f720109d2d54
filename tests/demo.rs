//! The README's first command: `trustform demo`, end to end, as a user runs it.

use crate::common;

#[test]
fn the_demo_rotates_a_3_plus_3_sandbox_under_the_prober_with_no_failed_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = assert_cmd::Command::cargo_bin("trustform")
        .unwrap()
        .args(["demo", "--dir"])
        .arg(&dir)
        .env("NO_COLOR", "1")
        .env_remove("TRUSTFORM_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The order of the flow, as the README tells it.
    let mut at = 0;
    for step in [
        "==> trustform sandbox create",
        "--control-planes 3 --workers 3",
        "==> trustform sandbox up",
        "==> trustform init",
        "==> trustform rotate kubernetes --to-end",
        "==> trustform rotate front-proxy --to-end",
        "==> trustform plan -out plan.json",
        "==> trustform apply plan.json --probe",
        "==> trustform status",
    ] {
        let i = stderr[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step} after byte {at}:\n{stderr}"));
        at += i;
    }
    // The plan's continuity line, the prober's table, a clean end.
    let continuity = stdout
        .lines()
        .find(|l| l.starts_with("Continuity: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        continuity.contains("edges stay live through all"),
        "{continuity}"
    );
    let all = stdout
        .lines()
        .find(|l| l.starts_with("| all "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let cells: Vec<&str> = all.split('|').map(str::trim).collect();
    let (edges, handshakes, failures): (u64, u64, u64) = (
        cells[2].parse().unwrap(),
        cells[3].parse().unwrap(),
        cells[4].parse().unwrap(),
    );
    assert!(edges > 100, "{all}");
    assert!(handshakes >= edges * 10, "every edge, many times: {all}");
    assert_eq!(failures, 0, "{all}");
    for kind in [
        "clients → API servers",
        "pods → API servers",
        "API servers → kubelets",
        "API servers → etcd",
        "etcd ↔ etcd (peers)",
        "front proxy → aggregated",
    ] {
        assert!(stdout.contains(&format!("| {kind}")), "{kind}: {stdout}");
    }
    assert!(stdout.contains("No changes. The cluster's trust matches trustform.yaml."));
    assert!(dir.join("plan.json").is_file() && dir.join("plan.txt").is_file());
    // No key material in anything it printed or wrote, but where keys live: the nodes'
    // own files, the simulated processes' memory, the new CAs' keys and the backups of
    // key files (each of those 0600).
    let needles = common::key_needles(&[&dir]);
    assert!(
        needles.len() > 50,
        "the keys of a 3 + 3 sandbox: {}",
        needles.len()
    );
    let mut found = common::leaks("stdout", &stdout, &needles);
    found.extend(common::leaks("stderr", &stderr, &needles));
    let (mut scanned, mut guarded) = (0, 0);
    for p in common::files_under(&dir) {
        let rel = p.strip_prefix(&dir).unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&p).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let where_keys_live = rel.starts_with("cluster/nodes/")
            || rel.starts_with(".trustform/keys/")
            || rel.starts_with(".trustform/backup/");
        if !where_keys_live {
            scanned += 1;
            found.extend(common::leaks(&rel, &text, &needles));
        } else if rel.starts_with(".trustform/") && !common::leaks(&rel, &text, &needles).is_empty()
        {
            guarded += 1;
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&p).unwrap().permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{rel} holds key material: 0600");
        }
    }
    assert!(
        found.is_empty(),
        "key material leaked:\n{}",
        found.join("\n")
    );
    assert!(
        scanned >= 8,
        "plan, journal, config, cas, API store…: {scanned} files"
    );
    assert!(
        guarded >= 2,
        "the new CA keys and key backups are 0600: {guarded}"
    );
}
