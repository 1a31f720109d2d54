//! `trustform expiry` on a sandbox whose leaves were re-signed with the openssl CLI to end
//! soon (or to have ended): every date agrees with `openssl x509 -enddate`, `--warn` sets
//! the exit code, and the JSON and Prometheus outputs say the same.

use crate::common;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// `notAfter` of the first certificate in `pem_file`, per openssl, as Unix time.
fn openssl_not_after(pem_file: &Path) -> i64 {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
        .arg(pem_file)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // notAfter=2027-12-07 19:12:41Z
    let text = String::from_utf8_lossy(&out.stdout);
    let date = text
        .trim()
        .strip_prefix("notAfter=")
        .unwrap()
        .replace(' ', "T");
    time::OffsetDateTime::parse(&date, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{date}: {e}"))
        .unix_timestamp()
}

fn unix(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

/// Re-sign `node`'s leaf `name` (`/etc/kubernetes/pki/<name>.crt`, its key kept) by
/// `ca` for `days` (negative: it has already ended), with the openssl CLI.
fn resign(w: &common::Workdir, node: &str, name: &str, ca: &str, days: i32) {
    let pki = w.node(node).join("etc/kubernetes/pki");
    let crt = pki.join(format!("{name}.crt"));
    let subject = String::from_utf8(
        Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "compat", "-in"])
            .arg(&crt)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let subject = subject.trim().strip_prefix("subject=").unwrap().to_string();
    let csr = pki.join(format!("{name}.csr"));
    let ok = |c: &mut Command| {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(Command::new("openssl")
        .args(["req", "-new", "-subj", &subject, "-key"])
        .arg(pki.join(format!("{name}.key")))
        .arg("-out")
        .arg(&csr));
    ok(Command::new("openssl")
        .args(["x509", "-req", "-days", &days.to_string(), "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(pki.join(format!("{ca}.crt")))
        .arg("-CAkey")
        .arg(pki.join(format!("{ca}.key")))
        .arg("-out")
        .arg(&crt));
    std::fs::remove_file(csr).unwrap();
}

/// The PEM behind an entry, in a file openssl can read: the file itself, a kubeconfig's
/// embedded client certificate, or a CA's first place.
fn pem_of(w: &common::Workdir, e: &Value, tmp: &Path) -> std::path::PathBuf {
    let (node, path) = match (e["node"].as_str(), e["path"].as_str()) {
        (Some(n), Some(p)) => (n.to_string(), p.to_string()),
        _ => {
            // A CA: where it is a file of its own, else the first kubeconfig that holds it.
            let places: Vec<&str> = e["used_by"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            let place = places
                .iter()
                .find(|p| p.ends_with(".crt"))
                .unwrap_or(&places[0]);
            let (n, p) = place.split_once(':').unwrap();
            (n.to_string(), p.to_string())
        }
    };
    let file = w.node(&node).join(path.trim_start_matches('/'));
    if path.ends_with(".crt") || path.ends_with(".pem") {
        return file;
    }
    let kc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let user = &kc["users"][0]["user"];
    let data = if e["kind"] == "ca" {
        kc["clusters"][0]["cluster"]["certificate-authority-data"].as_str()
    } else {
        user["client-certificate-data"].as_str()
    };
    let pem = match data {
        Some(data) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap()
        }
        None => std::fs::read(
            w.node(&node).join(
                user["client-certificate"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches('/'),
            ),
        )
        .unwrap(),
    };
    let out = tmp.join(format!("{node}-{}.pem", path.replace('/', "_")));
    std::fs::write(&out, pem).unwrap();
    out
}

/// `text` with what changes from run to run replaced (dates, time stamps in names,
/// fingerprints, Unix times), then its rows sorted between the lines that are not rows
/// (a header, comments, the summary): certificates made within the same second list in
/// either order.
fn stable(text: &str) -> String {
    let mut text = text.to_string();
    for (re, with) in [
        (r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}Z?", "[date]"),
        (r"@\d{10}\b", "@[time]"),
        (r"sha256:[0-9a-f]{64}", "sha256:[fp]"),
        (r"(?m)\} \d{10}$", "} [unix]"),
    ] {
        text = regex::Regex::new(re)
            .unwrap()
            .replace_all(&text, with)
            .into_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    let fixed = |l: &str| l.is_empty() || l.starts_with('#') || l.starts_with("STATE ");
    let mut out: Vec<&str> = vec![];
    let mut run: Vec<&str> = vec![];
    for l in lines {
        if fixed(l) {
            run.sort();
            out.append(&mut run);
            out.push(l);
        } else {
            run.push(l);
        }
    }
    run.sort();
    out.append(&mut run);
    out.join("\n")
}

#[test]
fn expiry_agrees_with_openssl_and_sets_the_exit_code() {
    let w = common::sandbox(1, 1, false);
    w.ok(&["init", "--sandbox", "cluster"]);
    // Nothing ends soon on a fresh cluster.
    let (code, _, err) = w.run(&["expiry", "--warn", "30d"]);
    assert_eq!(code, 0, "{err}");
    // One leaf ends in 10 days: inside a 30-day window, outside a 5-day one.
    resign(&w, "cp-1", "apiserver-kubelet-client", "ca", 10);
    let (code, _, err) = w.run(&["expiry", "--warn", "5d"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = w.run(&["expiry", "--warn", "30d"]);
    assert_eq!(code, 2, "{err}");
    // One has ended.
    resign(&w, "cp-1", "front-proxy-client", "front-proxy-ca", -1);
    let (code, text, err) = w.run(&["expiry", "--warn", "1m"]);
    assert_eq!(code, 2, "{err}");
    let first = text.lines().nth(1).unwrap();
    assert!(
        first.starts_with("EXPIRED")
            && first.ends_with("cp-1:/etc/kubernetes/pki/front-proxy-client.crt"),
        "the soonest first:\n{text}"
    );
    assert!(text.contains("1 expired, 0 ending within"), "{text}");
    insta::assert_snapshot!("expiry_text", stable(&text));
    let (_, prom, _) = w.run(&["expiry", "--format", "prometheus", "--warn", "30d"]);
    insta::assert_snapshot!("expiry_prometheus", stable(&prom));

    let listing: Value = serde_json::from_str(&w.ok(&["expiry", "--format", "json"])).unwrap();
    let errors = crate::schemas::validator("schemas/expiry.schema.json").iter_errors(&listing);
    assert!(errors.is_empty(), "{errors:?}");
    let certs = listing["certificates"].as_array().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for e in certs {
        let pem = pem_of(&w, e, tmp.path());
        assert_eq!(
            unix(e["not_after"].as_str().unwrap()),
            openssl_not_after(&pem),
            "{e}"
        );
    }
    let state = |path: &str| {
        certs
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("{path} listed"))["state"]
            .clone()
    };
    assert_eq!(
        state("/etc/kubernetes/pki/front-proxy-client.crt"),
        "expired"
    );
    assert_eq!(
        state("/etc/kubernetes/pki/apiserver-kubelet-client.crt"),
        "expiring"
    );
    assert_eq!(state("/etc/kubernetes/pki/apiserver.crt"), "ok");
    // Every leaf file of the control plane is listed, and the kubeconfigs' clients.
    let pki = w.node("cp-1").join("etc/kubernetes/pki");
    for f in std::fs::read_dir(&pki).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.ends_with(".crt") && !name.contains("ca") {
            state(&format!("/etc/kubernetes/pki/{name}"));
        }
    }
    let clients = certs
        .iter()
        .filter(|e| e["kind"] == "kubeconfig-client")
        .count();
    assert!(
        clients >= 4,
        "admin, controller-manager, scheduler, kubelet: {clients}"
    );
    assert!(
        certs
            .iter()
            .any(|e| e["kind"] == "ca" && e["subject"] == "kubernetes")
    );
    // The apiserver's serving certificate is read by the kube-apiserver.
    let apiserver = certs
        .iter()
        .find(|e| e["path"] == "/etc/kubernetes/pki/apiserver.crt")
        .unwrap();
    assert!(
        apiserver["used_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "kube-apiserver"),
        "{apiserver}"
    );

    // Prometheus: one sample per certificate, the same dates.
    let prom = w.ok(&["expiry", "--format", "prometheus"]);
    let samples: Vec<&str> = prom.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(samples.len(), certs.len(), "{prom}");
    let expired = samples
        .iter()
        .find(|l| l.contains("path=\"/etc/kubernetes/pki/front-proxy-client.crt\""))
        .unwrap();
    let value: i64 = expired.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        value,
        openssl_not_after(&pki.join("front-proxy-client.crt"))
    );

    // Offline, from a snapshot: the same certificates.
    w.ok(&["snapshot", "-o", "snap.json"]);
    let offline: Value =
        serde_json::from_str(&w.ok(&["expiry", "--snapshot", "snap.json", "--format", "json"]))
            .unwrap();
    let key = |v: &Value| -> Vec<(String, String, String)> {
        v["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["fingerprint"].to_string(),
                    e["path"].to_string(),
                    e["not_after"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(key(&offline), key(&listing));
}

#[test]
fn a_kubelet_certificate_past_its_renewal_window_is_named_overdue() {
    let w = common::sandbox(1, 1, false);
    w.ok(&["init", "--sandbox", "cluster"]);
    // w-1's client certificate, re-signed by the cluster CA with `openssl ca` from 400
    // days ago to 40 days ahead: past 90% of its life, with more than 30 days left.
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let (start, end) = (
        now - time::Duration::days(400),
        now + time::Duration::days(40),
    );
    let openssl_date = |t: time::OffsetDateTime| {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    };
    let pki = w.node("w-1").join("var/lib/kubelet/pki");
    let link = pki.join("kubelet-client-current.pem");
    // kubeadm's symlink to a dated file, or the file itself.
    let target = match std::fs::read_link(&link) {
        Ok(to) => w.node("w-1").join(to.strip_prefix("/").unwrap()),
        Err(_) => link.clone(),
    };
    let combined = std::fs::read_to_string(&target).unwrap();
    let key_at = [
        "-----BEGIN EC PRIVATE KEY",
        "-----BEGIN PRIVATE KEY",
        "-----BEGIN RSA PRIVATE KEY",
    ]
    .iter()
    .find_map(|m| combined.find(m));
    let key_pem = &combined[key_at.expect("a key in kubelet-client-current.pem")..];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("key.pem"), key_pem).unwrap();
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("serial"), "1000\n").unwrap();
    std::fs::write(
        d.join("ca.cnf"),
        format!(
            "[ca]\ndefault_ca = c\n[c]\ndatabase = {0}/index.txt\nnew_certs_dir = {0}\nserial = {0}/serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\nunique_subject = no\n[p]\norganizationName = optional\ncommonName = supplied\n",
            d.display()
        ),
    )
    .unwrap();
    let ok = |c: &mut Command| {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-subj",
            "/O=system:nodes/CN=system:node:w-1",
            "-key",
        ])
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(d.join("req.csr")));
    let cp = w.node("cp-1").join("etc/kubernetes/pki");
    ok(Command::new("openssl")
        .args(["ca", "-batch", "-notext", "-config"])
        .arg(d.join("ca.cnf"))
        .arg("-startdate")
        .arg(openssl_date(start))
        .arg("-enddate")
        .arg(openssl_date(end))
        .arg("-cert")
        .arg(cp.join("ca.crt"))
        .arg("-keyfile")
        .arg(cp.join("ca.key"))
        .arg("-in")
        .arg(d.join("req.csr"))
        .arg("-out")
        .arg(d.join("new.crt")));
    let cert = std::fs::read_to_string(d.join("new.crt")).unwrap();
    std::fs::write(&target, format!("{cert}{key_pem}")).unwrap();
    let (code, out, err) = w.run(&["expiry", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let e = v["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["node"] == "w-1" && e["path"] == "/var/lib/kubelet/pki/kubelet-client-current.pem"
        })
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(e["state"], "ok", "{e}");
    // 70% and 90% of 440 days from openssl's startdate.
    let start = start.unix_timestamp();
    let life = openssl_not_after(&d.join("new.crt")) - start;
    assert_eq!(life, 440 * 86_400);
    assert_eq!(
        unix(e["rotation"]["from"].as_str().unwrap()),
        start + life * 7 / 10
    );
    assert_eq!(
        unix(e["rotation"]["until"].as_str().unwrap()),
        start + life * 9 / 10
    );
    assert_eq!(e["rotation"]["stage"], "overdue");
    assert_eq!(v["summary"]["overdue"], 1, "{v:#}");
    // cp-1's, fresh, is before its window; a certificate the kubelet does not renew has
    // none.
    let cp1 = v["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["node"] == "cp-1" && e["path"] == "/var/lib/kubelet/pki/kubelet-client-current.pem"
        })
        .unwrap();
    assert_eq!(cp1["rotation"]["stage"], "before");
    assert!(
        v["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["path"] == "/etc/kubernetes/pki/apiserver.crt")
            .all(|e| e["rotation"].is_null())
    );
    let text = w.ok(&["expiry"]);
    assert!(
        text.contains("w-1:/var/lib/kubelet/pki/kubelet-client-current.pem: the kubelet should have renewed it between"),
        "{text}"
    );
}
