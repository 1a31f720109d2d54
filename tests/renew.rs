//! Leaf renewal before expiry as a plan: leaves aged with the openssl CLI (extensions
//! kept), `renewBefore` per authority and per leaf in trustform.yaml, `plan` renews
//! exactly the leaves inside their window from their own CA, `apply --probe` keeps every
//! edge, and afterwards `expiry --warn 30d` exits 0, openssl verifies every renewed leaf
//! with its subject and SANs unchanged, and `plan` says `No changes.`

use crate::common::{self, Up, Workdir};
use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(args: &[&str], paths: &[&Path]) -> String {
    let mut c = Command::new("openssl");
    c.args(args).args(paths);
    let out = c.output().expect("openssl runs");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pki(w: &Workdir, node: &str, name: &str) -> PathBuf {
    w.node(node).join("etc/kubernetes/pki").join(name)
}

/// Re-sign `node`'s `pki/<name>.crt` (its key, subject and extensions kept) by
/// `pki/<ca>.crt` to end in `days`, with the openssl CLI.
fn age(w: &Workdir, node: &str, name: &str, ca: &str, days: u32) {
    let crt = pki(w, node, &format!("{name}.crt"));
    let key = pki(w, node, &format!("{name}.key"));
    let csr = crt.with_extension("csr");
    let mut c = Command::new("openssl");
    c.args(["x509", "-x509toreq", "-copy_extensions", "copyall", "-in"])
        .arg(&crt)
        .arg("-signkey")
        .arg(&key)
        .arg("-out")
        .arg(&csr);
    assert!(c.status().unwrap().success(), "{c:?}");
    let mut c = Command::new("openssl");
    c.args(["x509", "-req", "-copy_extensions", "copyall"])
        .args(["-days", &days.to_string(), "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(pki(w, node, &format!("{ca}.crt")))
        .arg("-CAkey")
        .arg(pki(w, node, &format!("{ca}.key")))
        .arg("-out")
        .arg(&crt);
    assert!(c.output().unwrap().status.success(), "{c:?}");
    std::fs::remove_file(csr).unwrap();
}

/// What must stay through a renewal: subject and extensions, as openssl prints them.
fn identity(crt: &Path) -> String {
    openssl(
        &[
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName,keyUsage,extendedKeyUsage",
            "-in",
        ],
        &[crt],
    )
}

/// Days from now to the end of `crt`, per openssl.
fn days_left(crt: &Path) -> i64 {
    let end = openssl(&["x509", "-noout", "-enddate", "-in"], &[crt]);
    let end = end.trim().strip_prefix("notAfter=").unwrap().to_string();
    let out = Command::new("date")
        .args(["-u", "-d", &end, "+%s"])
        .output()
        .unwrap();
    let at: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (at - now) / 86_400
}

/// Append lines under `authorities.<auth>` of trustform.yaml.
fn set_policy(w: &Workdir, auth: &str, lines: &str) {
    let text = std::fs::read_to_string(w.config()).unwrap();
    let head = format!("  {auth}:\n");
    let at = text
        .find(&head)
        .unwrap_or_else(|| panic!("{head} in\n{text}"));
    let trust = at + text[at..].find("    trust:").unwrap();
    let end = trust + text[trust..].find('\n').unwrap() + 1;
    let mut next = text.clone();
    next.insert_str(end, lines);
    std::fs::write(w.config(), next).unwrap();
}

#[test]
fn a_renewal_plan_renews_exactly_the_leaves_inside_their_window() {
    let w = common::sandbox_restarting(3, 1, "0.1s");
    let _up = Up::start(&w, None);
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    // The windows: kubernetes and front-proxy the default 30 days; etcd 7 days, but
    // 60 days for apiserver-etcd-client.crt.
    set_policy(
        &w,
        "etcd",
        "    renewBefore: 7d\n    leaves:\n      pki/apiserver-etcd-client.crt: { renewBefore: 60d }\n",
    );
    let (code, _, err) = w.run(&["plan"]);
    assert_eq!(code, 0, "{err}");
    // Leaves aged by openssl, inside and outside their windows.
    let inside = [
        ("cp-1", "apiserver", "ca", 10),
        ("cp-2", "front-proxy-client", "front-proxy-ca", 20),
        ("cp-3", "etcd/server", "etcd/ca", 5),
        ("cp-1", "apiserver-etcd-client", "etcd/ca", 45),
    ];
    let outside = [
        ("cp-2", "apiserver-kubelet-client", "ca", 45),
        ("cp-3", "etcd/peer", "etcd/ca", 40),
    ];
    let mut before = vec![];
    for (node, name, ca, days) in inside.iter().chain(&outside) {
        age(&w, node, name, ca, *days);
        let crt = pki(&w, node, &format!("{name}.crt"));
        before.push(identity(&crt));
    }
    let (code, _, err) = w.run(&["expiry", "--warn", "30d"]);
    assert_eq!(code, 2, "three leaves end within 30 days: {err}");

    let text = w.ok(&["plan", "-out", "plan.json"]);
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.path().join("plan.json")).unwrap())
            .unwrap();
    // Exactly the leaves inside their window, each from its own CA.
    let mut renewed: Vec<String> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["ops"].as_array().unwrap())
        .filter(|op| op["want"].get("renewed").is_some())
        .map(|op| {
            format!(
                "{}:{}",
                op["node"].as_str().unwrap(),
                op["path"].as_str().unwrap()
            )
        })
        .collect();
    renewed.sort();
    let mut want: Vec<String> = inside
        .iter()
        .map(|(n, name, _, _)| format!("{n}:/etc/kubernetes/pki/{name}.crt"))
        .collect();
    want.sort();
    assert_eq!(renewed, want, "{text}");
    for id in [
        "renew/renew-leaves@cp-1",
        "renew/restart-etcd@cp-3",
        "renew/restart-apiserver@cp-1",
        "renew/restart-apiserver@cp-2",
        "renew/verify@cluster",
    ] {
        assert!(text.contains(id), "{id}:\n{text}");
    }
    // Nothing reads a renewed file on the others: no restart there.
    for id in ["renew/restart-etcd@cp-1", "renew/restart-scheduler@cp-1"] {
        assert!(!text.contains(id), "{id}:\n{text}");
    }
    assert!(text.contains("edges stay live through all"), "{text}");
    assert!(
        text.contains("Renewal: 4 leaves end inside their renewal window"),
        "{text}"
    );
    // The end of each window is plan time + window: its time of day varies too.
    let mut shown = regex::Regex::new(r"T\d{2}:\d{2}:\d{2}Z")
        .unwrap()
        .replace_all(&text, "T[time]Z")
        .into_owned();
    for (re, with) in common::redactions() {
        shown = regex::Regex::new(re)
            .unwrap()
            .replace_all(&shown, with)
            .into_owned();
    }
    insta::assert_snapshot!("renewal_plan", shown);

    let (code, out, err) = w.run(&["apply", "plan.json", "--probe", "--format", "json"]);
    let summary = common::probe_summary(&out);
    assert_eq!(code, 0, "{err}\n{summary:#}");
    assert_eq!(summary["probe"]["failures"], 0, "{summary:#}");

    // openssl: each renewed leaf verifies against its CA, keeps its subject and
    // extensions, and ends a year from now; the others are untouched.
    for (i, (node, name, ca, days)) in inside.iter().chain(&outside).enumerate() {
        let crt = pki(&w, node, &format!("{name}.crt"));
        common::openssl_verify(&pki(&w, node, &format!("{ca}.crt")), &crt)
            .unwrap_or_else(|e| panic!("{node}:{name}: {e}"));
        assert_eq!(identity(&crt), before[i], "{node}:{name}");
        let left = days_left(&crt);
        if i < inside.len() {
            assert!(left >= 364, "{node}:{name}: {left} days left");
        } else {
            assert!(left < i64::from(*days), "{node}:{name} was renewed");
        }
    }
    let (code, out, err) = w.run(&["expiry", "--warn", "30d"]);
    assert_eq!(code, 0, "{out}{err}");
    let again = w.ok(&["plan"]);
    assert!(again.contains("No changes."), "{again}");
}
