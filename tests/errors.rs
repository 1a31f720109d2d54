//! Every bad input is a miette diagnostic naming the file, the place and the fix; exit 1;
//! nothing written.

use crate::common;

fn edit(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} contains {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Run `plan -out plan.json`, expect exit 1, no plan file, and return stderr.
fn plan_fails(w: &common::Workdir) -> String {
    let (code, out, err) = w.run(&["plan", "-out", "plan.json"]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.is_empty(), "nothing on stdout: {out}");
    assert!(!w.path().join("plan.json").exists(), "nothing written");
    err
}

#[test]
fn yaml_syntax_error_points_at_the_line() {
    let w = common::initialised(1, 0);
    edit(
        &w.config(),
        "authorities:\n",
        "authorities:\n  kubernetes: [unclosed\n",
    );
    let err = plan_fails(&w);
    assert!(err.contains("trustform::config::syntax"), "{err}");
    assert!(
        err.contains("trustform.yaml:"),
        "names the file and line: {err}"
    );
    assert!(err.contains("help:"), "{err}");
}

#[test]
fn unknown_ca_name_points_at_the_reference() {
    let w = common::initialised(1, 0);
    edit(
        &w.config(),
        "issuer: kubernetes\n",
        "issuer: kubernetes-2099\n",
    );
    let err = plan_fails(&w);
    assert!(err.contains("trustform::config::invalid"), "{err}");
    assert!(
        err.contains("authority kubernetes names CA \"kubernetes-2099\", which is not in `cas`"),
        "{err}"
    );
    let line = std::fs::read_to_string(w.config())
        .unwrap()
        .lines()
        .position(|l| l.contains("kubernetes-2099"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("trustform.yaml:{line}:13")),
        "span at line {line}, column 13: {err}"
    );
    assert!(err.contains("unknown CA"), "label: {err}");
    assert!(
        err.contains("help: use one of: etcd, front-proxy, kubernetes"),
        "{err}"
    );
}

#[test]
fn issuer_outside_the_trust_set_is_refused() {
    let w = common::initialised(1, 0);
    w.ok(&["rotate", "kubernetes", "--algorithm", "ecdsa-p256"]);
    let text = std::fs::read_to_string(w.config()).unwrap();
    let new = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("kubernetes-")
                .and_then(|r| r.split(':').next())
                .map(|r| format!("kubernetes-{r}"))
        })
        .unwrap();
    edit(
        &w.config(),
        "    issuer: kubernetes\n",
        &format!("    issuer: {new}\n"),
    );
    edit(
        &w.config(),
        &format!("trust: [kubernetes, {new}]"),
        "trust: [kubernetes]",
    );
    let err = plan_fails(&w);
    assert!(
        err.contains(&format!("issuer {new} is not in its trust set")),
        "{err}"
    );
    assert!(err.contains("issuer not trusted"), "{err}");
    assert!(
        err.contains("help: every leaf it signs would be rejected"),
        "{err}"
    );
}

#[test]
fn missing_ca_file_names_the_file() {
    let w = common::initialised(1, 0);
    w.ok(&["rotate", "kubernetes", "--algorithm", "ecdsa-p256"]);
    for f in common::files_under(&w.path().join("cas")) {
        std::fs::remove_file(f).unwrap();
    }
    let err = plan_fails(&w);
    assert!(
        err.contains("cannot read") && err.contains("cas/kubernetes-"),
        "{err}"
    );
    assert!(err.contains("missing file"), "{err}");
    assert!(err.contains("trustform.yaml:"), "{err}");
}

#[test]
fn missing_file_behind_a_flag_points_at_the_manifest_line() {
    let w = common::initialised(1, 0);
    std::fs::remove_file(w.node("cp-1").join("etc/kubernetes/pki/sa.pub")).unwrap();
    let err = plan_fails(&w);
    assert!(err.contains("trustform::observe::missing_file"), "{err}");
    let flat = err
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(flat.contains("node cp-1: /etc/kubernetes/manifests/kube-apiserver.yaml points --service-account-key-file at /etc/kubernetes/pki/sa.pub"), "{err}");
    assert!(
        err.contains("cp-1:/etc/kubernetes/manifests/kube-apiserver.yaml:"),
        "{err}"
    );
    assert!(err.contains("this file is missing"), "{err}");
}

#[test]
fn corrupt_pem_points_at_the_block() {
    let w = common::initialised(1, 0);
    let p = w.node("cp-1").join("etc/kubernetes/pki/apiserver.crt");
    let text = std::fs::read_to_string(&p).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[2] = "!!!! not base64 !!!!".into();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    let err = plan_fails(&w);
    assert!(err.contains("trustform::observe::corrupt_file"), "{err}");
    assert!(
        err.contains("node cp-1: /etc/kubernetes/pki/apiserver.crt: corrupt PEM block"),
        "{err}"
    );
    assert!(
        err.contains("cp-1:/etc/kubernetes/pki/apiserver.crt:1:1"),
        "span at the BEGIN line: {err}"
    );
    assert!(
        err.contains("help: restore this file from a backup"),
        "{err}"
    );
}

#[test]
fn kubeconfig_without_ca_is_refused() {
    let w = common::initialised(1, 0);
    let p = w.node("cp-1").join("etc/kubernetes/scheduler.conf");
    let text = std::fs::read_to_string(&p).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("certificate-authority-data"))
        .collect();
    std::fs::write(&p, kept.join("\n") + "\n").unwrap();
    let err = plan_fails(&w);
    assert!(
        err.contains("scheduler.conf: cluster kubernetes has no certificate-authority-"),
        "{err}"
    );
    let line = kept
        .iter()
        .position(|l| l.trim_start().starts_with("server:"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("cp-1:/etc/kubernetes/scheduler.conf:{line}:")),
        "span at the server line {line}: {err}"
    );
    assert!(
        err.contains("help: add certificate-authority-data"),
        "{err}"
    );
    assert!(
        err.contains("╰── cluster kubernetes has no certificate-authority-data"),
        "label under the line: {err}"
    );
}

#[test]
fn missing_config_says_how_to_make_one() {
    let w = common::sandbox(1, 0, false);
    let err = plan_fails(&w);
    assert!(
        err.contains("cannot read trustform.yaml") && err.contains("trustform init"),
        "{err}"
    );
}

#[test]
fn an_external_etcd_is_refused_naming_its_servers() {
    // etcd's procedure rotates stacked etcd: with no member among the control planes'
    // static pods (etcd is external), the plan is refused with the reason.
    let w = common::initialised(1, 0);
    std::fs::remove_file(w.node("cp-1").join("etc/kubernetes/manifests/etcd.yaml")).unwrap();
    w.ok(&["rotate", "etcd"]);
    let err = plan_fails(&w);
    assert!(err.contains("trustform::plan::external_etcd"), "{err}");
    assert!(
        err.contains(&format!("--etcd-servers=https://{}:2379", w.ip("cp-1"))),
        "{err}"
    );
    assert!(
        err.contains("plans/etcd-ca.yaml rotates stacked etcd"),
        "{err}"
    );
}

/// `plan` on a sandbox whose trustform.yaml (from `init`) lists cp-1's copy of admin.conf,
/// after `change` broke it; stderr, with the temp-free paths it names.
fn copy_error(change: impl FnOnce(&common::Workdir)) -> String {
    let w = common::initialised(1, 0);
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    assert!(
        cfg.contains("kubeconfigs: [/root/.kube/config]"),
        "init lists the copy:\n{cfg}"
    );
    change(&w);
    plan_fails(&w)
}

#[test]
fn a_relative_kubeconfig_path_points_at_the_entry() {
    let err = copy_error(|w| {
        edit(
            &w.config(),
            "kubeconfigs: [/root/.kube/config]",
            "kubeconfigs: [~/.kube/config]",
        )
    });
    assert!(err.contains("trustform::config::invalid"), "{err}");
    insta::assert_snapshot!("kubeconfig_relative_path", err);
    let err = copy_error(|w| {
        edit(
            &w.config(),
            "kubeconfigs: [/root/.kube/config]",
            "kubeconfigs: [/root/.kube/config, /etc/kubernetes/admin.conf]",
        )
    });
    assert!(err.contains("trustform::config::invalid"), "{err}");
    assert!(
        err.contains("node cp-1: /etc/kubernetes/admin.conf is under /etc/kubernetes"),
        "{err}"
    );
    assert!(
        err.contains("trustform reads /etc/kubernetes already"),
        "label: {err}"
    );
    let err = copy_error(|w| {
        edit(
            &w.config(),
            "kubeconfigs: [/root/.kube/config]",
            "kubeconfigs: [/root/../etc/kubernetes/admin.conf]",
        )
    });
    assert!(err.contains("is not a plain"), "{err}");
    assert!(err.contains("empty, `.` or `..` component"), "label: {err}");
}

#[test]
fn a_missing_listed_kubeconfig_points_at_the_entry() {
    let err = copy_error(|w| {
        std::fs::remove_file(w.node("cp-1").join("root/.kube/config")).unwrap();
    });
    assert!(
        err.contains("trustform::observe::missing_kubeconfig"),
        "{err}"
    );
    insta::assert_snapshot!("kubeconfig_missing", err);
}

#[test]
fn a_listed_file_that_is_not_a_kubeconfig_points_at_the_entry() {
    let err = copy_error(|w| {
        std::fs::write(
            w.node("cp-1").join("root/.kube/config"),
            "export KUBECONFIG=/etc/kubernetes/admin.conf\n",
        )
        .unwrap();
    });
    assert!(
        err.contains("trustform::observe::not_a_kubeconfig"),
        "{err}"
    );
    assert!(
        err.contains("node cp-1: /root/.kube/config is not a kubeconfig: it has no `clusters:`"),
        "{err}"
    );
    let line = 10; // the cp-1 line of the inventory
    assert!(err.contains(&format!("trustform.yaml:{line}:")), "{err}");
}

/// `trust: [x, x]` with `issuer: x`: refused when trustform.yaml is loaded, at the second
/// entry, by every command that reads the file (`rotate` used to panic on it).
#[test]
fn a_ca_listed_twice_in_a_trust_set_points_at_the_second_entry() {
    let w = common::initialised(1, 0);
    edit(&w.config(), "    issuer: kubernetes\n", "    issuer: x\n");
    edit(
        &w.config(),
        "    trust: [kubernetes]\n",
        "    trust: [x, x]\n",
    );
    edit(
        &w.config(),
        "  kubernetes: { fingerprint",
        "  x: { fingerprint",
    );
    let text = std::fs::read_to_string(w.config()).unwrap();
    let (line, column) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| (l == "    trust: [x, x]").then(|| (i + 1, l.rfind('x').unwrap() + 1)))
        .expect("the trust line");
    assert_eq!(column, 16);
    let before = common::tree_state(w.path());
    for args in [
        &["plan"][..],
        &["rotate", "kubernetes"],
        &["apply", "--auto-approve"],
    ] {
        let (code, out, err) = w.run(args);
        assert_eq!(code, 1, "{args:?}: stdout:\n{out}\nstderr:\n{err}");
        assert!(out.is_empty(), "{args:?}: nothing on stdout: {out}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.contains("trustform::config::invalid"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(
                "trustform.yaml: authority kubernetes: CA x is listed twice in its trust set"
            ),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(&format!("[trustform.yaml:{line}:{column}]")),
            "{args:?}: names line {line}, column {column}: {err}"
        );
        assert!(err.contains("listed twice"), "{args:?}: label: {err}");
        assert!(
            err.contains("help: list each CA once: remove this `x`"),
            "{args:?}: {err}"
        );
        common::assert_unchanged(&before, &common::tree_state(w.path()));
    }
}
