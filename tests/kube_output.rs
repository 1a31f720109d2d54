//! What people see of the Kubernetes API side, pinned with insta: the help of the
//! commands that gained API options, and the seeding summary of `sandbox create`.

use crate::common;

#[test]
fn help_of_the_api_commands() {
    let w = common::sandbox(1, 0, false);
    insta::assert_snapshot!("help_sandbox_up", w.ok(&["sandbox", "up", "--help"]));
    insta::assert_snapshot!(
        "help_sandbox_create",
        w.ok(&["sandbox", "create", "--help"])
    );
    insta::assert_snapshot!("help_init", w.ok(&["init", "--help"]));
}

#[test]
fn a_seeded_sandbox_says_what_it_holds() {
    let w = common::Workdir {
        tmp: tempfile::tempdir().expect("tempdir"),
    };
    let (code, out, err) = w.run(&[
        "sandbox",
        "create",
        "cluster",
        "--control-planes",
        "1",
        "--workers",
        "2",
        "--key-algorithm",
        "ecdsa-p256",
        "--namespaces",
        "3",
        "--workloads",
        "5",
        "--legacy-token-secrets",
        "7",
        "--webhooks",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty());
    insta::with_settings!({filters => vec![(r"in \d+\.\d+s", "in [time]")]}, {
        insta::assert_snapshot!("sandbox_create_seeded", err);
    });
}
