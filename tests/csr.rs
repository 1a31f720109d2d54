//! Certificates through the CSR API (seed 002 §2) and the approver's duty: the key and
//! request made with the seed's own `cfssl genkey | cfssljson -bare`, the
//! `CertificateSigningRequest` sent with `kubectl apply -f -`, `trustform csr plan|apply`
//! approving exactly what the policy allows and denying the rest with the rule each
//! broke, the sandbox's controller manager signing what was approved, and the certificate
//! downloaded as the seed does, checked by `openssl verify` and `openssl x509 -text`.

use crate::common::{self, Up, Workdir};
use base64::Engine;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn sh(cmd: &mut Command, input: Option<&str>) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    if let Some(i) = input {
        child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A kubeconfig for `user` in `groups` (a client certificate the cluster CA signs, made
/// with openssl), against the sandbox's API server.
fn kubeconfig_for(w: &Workdir, user: &str, group: &str) -> PathBuf {
    let dir = w.path().join(format!("user-{}", user.replace(':', "-")));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = w.node("cp-1").join("etc/kubernetes/pki");
    let (key, csr, crt) = (dir.join("u.key"), dir.join("u.csr"), dir.join("u.crt"));
    sh(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&key),
        None,
    );
    sh(
        Command::new("openssl")
            .args([
                "req",
                "-new",
                "-subj",
                &format!("/O={group}/CN={user}"),
                "-key",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&csr),
        None,
    );
    // A v3 certificate (rustls accepts no other): a client certificate's extensions.
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    sh(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-extfile"])
            .arg(&ext)
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(pki.join("ca.crt"))
            .arg("-CAkey")
            .arg(pki.join("ca.key"))
            .arg("-CAcreateserial")
            .arg("-out")
            .arg(&crt),
        None,
    );
    let server = sh(
        Command::new("kubectl")
            .args([
                "config",
                "view",
                "-o",
                "jsonpath={.clusters[0].cluster.server}",
                "--kubeconfig",
            ])
            .arg(w.admin_conf()),
        None,
    );
    let kc = dir.join("kubeconfig");
    let kubectl = |args: &[&str]| {
        sh(
            Command::new("kubectl")
                .args(args)
                .arg("--kubeconfig")
                .arg(&kc),
            None,
        )
    };
    kubectl(&[
        "config",
        "set-cluster",
        "c",
        &format!("--server={server}"),
        &format!("--certificate-authority={}", pki.join("ca.crt").display()),
        "--embed-certs",
    ]);
    kubectl(&[
        "config",
        "set-credentials",
        "u",
        &format!("--client-certificate={}", crt.display()),
        &format!("--client-key={}", key.display()),
        "--embed-certs",
    ]);
    kubectl(&["config", "set-context", "c", "--cluster=c", "--user=u"]);
    kubectl(&["config", "use-context", "c"]);
    kc
}

/// The seed's key and request: `cfssl genkey - | cfssljson -bare NAME` (ECDSA P-256).
fn cfssl_request(w: &Workdir, name: &str, cn: &str, hosts: &[&str]) -> PathBuf {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    let json = format!(
        r#"{{ "hosts": [{}], "CN": "{cn}", "key": {{ "algo": "ecdsa", "size": 256 }}, "names": [{{ "O": "system:nodes" }}] }}"#,
        hosts.join(", ")
    );
    let out = sh(
        Command::new("cfssl")
            .args(["genkey", "-"])
            .current_dir(w.path()),
        Some(&json),
    );
    sh(
        Command::new("cfssljson")
            .args(["-bare", name])
            .current_dir(w.path()),
        Some(&out),
    );
    let csr = w.path().join(format!("{name}.csr"));
    assert!(w.path().join(format!("{name}-key.pem")).is_file());
    csr
}

/// `kubectl apply -f -` of the seed's CertificateSigningRequest, as `kubeconfig`'s user.
fn submit(kubeconfig: &Path, name: &str, signer: &str, usages: &[&str], pem: &str) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
    let usages: String = usages.iter().map(|u| format!("  - {u}\n")).collect();
    let yaml = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {b64}\n  signerName: {signer}\n  expirationSeconds: 86400\n  usages:\n{usages}"
    );
    sh(
        Command::new("kubectl")
            .args(["apply", "-f", "-", "--kubeconfig"])
            .arg(kubeconfig),
        Some(&yaml),
    );
}

fn csr_json(w: &Workdir, name: &str) -> Value {
    let (ok, out, err) = common::kubectl_with(&w.admin_conf(), &["get", "csr", name, "-o", "json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn condition(v: &Value) -> (String, String) {
    let c = &v["status"]["conditions"][0];
    (
        c["type"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// The kubelet-serving policy the tests decide under.
const POLICY: &str = "csr:\n  policies:\n    - signer: kubernetes.io/kubelet-serving\n      node: true\n      usages: [digital signature, key encipherment, server auth]\n      maxDuration: 30d\n";

/// A 1 + 2 sandbox serving its API, trustform.yaml with [`POLICY`] (and its text
/// without), and a kubeconfig of node w-1.
fn cluster() -> (Workdir, Up, String, PathBuf) {
    let w = common::sandbox_restarting(1, 2, "0.1s");
    let up = Up::start(&w, None);
    w.ok(&["init", "--sandbox", "cluster"]);
    let base = std::fs::read_to_string(w.config()).unwrap();
    std::fs::write(w.config(), format!("{base}{POLICY}")).unwrap();
    let w1 = kubeconfig_for(&w, "system:node:w-1", "system:nodes");
    (w, up, base, w1)
}

#[test]
fn the_approver_approves_exactly_what_the_policy_allows_and_names_the_rule_each_request_broke() {
    let (w, _up, base, w1) = cluster();
    let (ip1, ip2) = (w.ip("w-1"), w.ip("w-2"));
    let ok_pem =
        std::fs::read_to_string(cfssl_request(&w, "good", "system:node:w-1", &["w-1", &ip1]))
            .unwrap();
    let serving = ["digital signature", "key encipherment", "server auth"];
    submit(
        &w1,
        "good",
        "kubernetes.io/kubelet-serving",
        &serving,
        &ok_pem,
    );
    // w-1 asks for w-2's certificate.
    let other = std::fs::read_to_string(cfssl_request(
        &w,
        "other",
        "system:node:w-2",
        &["w-2", &ip2],
    ))
    .unwrap();
    submit(
        &w1,
        "other-node",
        "kubernetes.io/kubelet-serving",
        &serving,
        &other,
    );
    // An address w-1 does not have.
    let ip = std::fs::read_to_string(cfssl_request(
        &w,
        "ip",
        "system:node:w-1",
        &["w-1", "192.0.2.99"],
    ))
    .unwrap();
    submit(
        &w1,
        "foreign-ip",
        "kubernetes.io/kubelet-serving",
        &serving,
        &ip,
    );
    // A usage the policy does not allow.
    let usage =
        std::fs::read_to_string(cfssl_request(&w, "usage", "system:node:w-1", &["w-1"])).unwrap();
    submit(
        &w1,
        "client-usage",
        "kubernetes.io/kubelet-serving",
        &[
            "digital signature",
            "key encipherment",
            "server auth",
            "client auth",
        ],
        &usage,
    );
    // A request whose signature is not its key's: one byte of the signature flipped.
    let der_path = w.path().join("tampered.der");
    sh(
        Command::new("openssl")
            .args(["req", "-outform", "DER", "-out"])
            .arg(&der_path)
            .arg("-in")
            .arg(w.path().join("usage.csr")),
        None,
    );
    let mut der = std::fs::read(&der_path).unwrap();
    let last = der.len() - 3;
    der[last] ^= 0x5a;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    submit(
        &w1,
        "tampered",
        "kubernetes.io/kubelet-serving",
        &serving,
        &tampered,
    );
    // A signer no policy covers, from the admin.
    submit(
        &w.admin_conf(),
        "admin-client",
        "kubernetes.io/kube-apiserver-client",
        &["digital signature", "key encipherment", "client auth"],
        &std::fs::read_to_string(cfssl_request(&w, "admin", "jane", &[])).unwrap(),
    );

    let plan = w.ok(&["csr", "plan"]);
    let json: Value = serde_json::from_str(&w.ok(&["csr", "plan", "--format", "json"])).unwrap();
    let verdict = |name: &str| -> (String, Vec<String>) {
        let d = json["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {json:#}"));
        let broken = d["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| {
                format!(
                    "{}: {}",
                    c["rule"].as_str().unwrap(),
                    c["why"].as_str().unwrap()
                )
            })
            .collect();
        (d["verdict"].as_str().unwrap().to_string(), broken)
    };
    assert_eq!(verdict("good"), ("approve".into(), vec![]), "{plan}");
    let (v, why) = verdict("other-node");
    assert_eq!(v, "deny");
    assert!(
        why.iter().any(|w| w.starts_with(
            "requester: system:node:w-1 asks for node w-2's certificate: only system:node:w-2 may"
        )),
        "{why:?}"
    );
    let (v, why) = verdict("foreign-ip");
    assert_eq!(v, "deny");
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(
        why[0].starts_with("names: 192.0.2.99 is not an address of Node w-1"),
        "{why:?}"
    );
    let (v, why) = verdict("client-usage");
    assert_eq!(v, "deny");
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(
        why[0].starts_with("usages: \"client auth\" not allowed"),
        "{why:?}"
    );
    let (v, why) = verdict("tampered");
    assert_eq!(v, "deny");
    assert!(
        why.iter().any(|w| w.starts_with(
            "signature: its signature does not verify with the public key it carries"
        )),
        "{why:?}"
    );
    assert_eq!(verdict("admin-client").0, "unmanaged");
    assert!(
        plan.contains(
            "Plan: 1 to approve, 4 to deny, 1 left to their own approver; 0 already decided."
        ),
        "{plan}"
    );
    // The good request asks for a day: under a policy of an hour at most it is denied,
    // naming the rule.
    let strict = POLICY.replace("maxDuration: 30d", "maxDuration: 1h");
    std::fs::write(w.config(), format!("{base}{strict}")).unwrap();
    let json: Value = serde_json::from_str(&w.ok(&["csr", "plan", "--format", "json"])).unwrap();
    let good = json["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "good")
        .unwrap();
    assert_eq!(good["verdict"], "deny");
    assert!(
        good.to_string().contains("86400 s is longer than 1h"),
        "{good}"
    );
    std::fs::write(w.config(), format!("{base}{POLICY}")).unwrap();

    // Apply: the decisions are written, each with its reasons; the controller manager
    // signs the approved one.
    let out = w.ok(&["csr", "apply"]);
    assert!(out.contains("Applied: 1 to approve, 4 to deny"), "{out}");
    for name in ["other-node", "foreign-ip", "client-usage", "tampered"] {
        let (kind, message) = condition(&csr_json(&w, name));
        assert_eq!(kind, "Denied", "{name}");
        assert!(
            message.starts_with("trustform denies: "),
            "{name}: {message}"
        );
    }
    let (kind, message) = condition(&csr_json(&w, "good"));
    assert_eq!(kind, "Approved");
    assert!(
        message.contains("signature: signed by the private key"),
        "{message}"
    );
    let certificate = |name: &str| {
        common::eventually(&format!("{name} issued"), Duration::from_secs(20), || {
            let (ok, out, err) = common::kubectl_with(
                &w.admin_conf(),
                &["get", "csr", name, "-o", "jsonpath={.status.certificate}"],
            );
            if ok && !out.trim().is_empty() {
                Ok(out)
            } else {
                Err(err)
            }
        })
    };
    // The seed's download: `| base64 --decode > server.crt`.
    let server_crt = w.path().join("server.crt");
    let pem = sh(
        Command::new("base64").arg("--decode"),
        Some(&certificate("good")),
    );
    std::fs::write(&server_crt, &pem).unwrap();
    let ca = w.node("cp-1").join("etc/kubernetes/pki/ca.crt");
    common::openssl_verify(&ca, &server_crt).unwrap();
    let text = sh(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&server_crt),
        None,
    );
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(!text.contains("TLS Web Client Authentication"), "{text}");
    assert!(
        text.contains("DNS:w-1") && text.contains(&format!("IP Address:{ip1}")),
        "{text}"
    );
    assert!(
        text.contains("Subject: O = system:nodes, CN = system:node:w-1"),
        "{text}"
    );
    // The certificate is the cfssl key's.
    let modulus = |args: &[&str], p: &Path| sh(Command::new("openssl").args(args).arg(p), None);
    assert_eq!(
        modulus(&["pkey", "-pubout", "-in"], &w.path().join("good-key.pem")),
        modulus(&["x509", "-noout", "-pubkey", "-in"], &server_crt)
    );
    // A request no policy covers stays pending; `kubectl certificate approve` still works.
    assert!(csr_json(&w, "admin-client")["status"]["conditions"].is_null());
    let (ok, _, err) =
        common::kubectl_with(&w.admin_conf(), &["certificate", "approve", "admin-client"]);
    assert!(ok, "{err}");
    let admin_crt = w.path().join("admin.crt");
    std::fs::write(
        &admin_crt,
        sh(
            Command::new("base64").arg("--decode"),
            Some(&certificate("admin-client")),
        ),
    )
    .unwrap();
    common::openssl_verify(&ca, &admin_crt).unwrap();
    // Nothing is left to decide.
    assert!(w.ok(&["csr", "plan"]).contains(
        "Plan: 0 to approve, 0 to deny, 0 left to their own approver; 6 already decided."
    ));
}

#[test]
fn csr_watch_decides_each_request_as_it_comes() {
    let (w, _up, _, w1) = cluster();
    let mut watch = Command::new(assert_cmd::cargo::cargo_bin!("trustform"))
        .current_dir(w.path())
        .env("NO_COLOR", "1")
        .args(["csr", "watch", "--interval", "300ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let serving = ["digital signature", "key encipherment", "server auth"];
    let ip1 = w.ip("w-1");
    let good =
        std::fs::read_to_string(cfssl_request(&w, "good", "system:node:w-1", &["w-1", &ip1]))
            .unwrap();
    submit(
        &w1,
        "serving-w-1",
        "kubernetes.io/kubelet-serving",
        &serving,
        &good,
    );
    let bad = std::fs::read_to_string(cfssl_request(
        &w,
        "bad",
        "system:node:w-1",
        &["w-1", "192.0.2.7"],
    ))
    .unwrap();
    submit(
        &w1,
        "serving-bad",
        "kubernetes.io/kubelet-serving",
        &serving,
        &bad,
    );
    let issued = common::eventually(
        "serving-w-1 approved and issued",
        Duration::from_secs(20),
        || {
            let v = csr_json(&w, "serving-w-1");
            match (
                condition(&v).0.as_str(),
                v["status"]["certificate"].as_str(),
            ) {
                ("Approved", Some(c)) if !c.is_empty() => Ok(c.to_string()),
                (k, _) => Err(format!("{k}: {v}")),
            }
        },
    );
    let (kind, message) = common::eventually("serving-bad denied", Duration::from_secs(20), || {
        let c = condition(&csr_json(&w, "serving-bad"));
        if c.0 == "Denied" {
            Ok(c)
        } else {
            Err(format!("{c:?}"))
        }
    });
    assert_eq!(kind, "Denied");
    assert!(
        message.contains("names: 192.0.2.7 is not an address of Node w-1"),
        "{message}"
    );
    let crt = w.path().join("watched.crt");
    std::fs::write(
        &crt,
        sh(Command::new("base64").arg("--decode"), Some(&issued)),
    )
    .unwrap();
    common::openssl_verify(&w.node("cp-1").join("etc/kubernetes/pki/ca.crt"), &crt).unwrap();
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    // Each decision is said once.
    assert_eq!(said.matches("csr serving-w-1 (").count(), 1, "{said}");
    assert!(said.contains("csr serving-w-1 (signer kubernetes.io/kubelet-serving, requested by system:node:w-1, subject O=system:nodes, CN=system:node:w-1): approved"), "{said}");
    assert!(
        said.contains("csr serving-bad (") && said.contains("): denied"),
        "{said}"
    );
}

#[test]
fn the_controller_manager_approves_a_kubelets_own_client_certificate_only() {
    let (w, _up, _, w1) = cluster();
    let client = ["digital signature", "key encipherment", "client auth"];
    let own = std::fs::read_to_string(cfssl_request(&w, "own", "system:node:w-1", &[])).unwrap();
    submit(
        &w1,
        "kubelet-w-1",
        "kubernetes.io/kube-apiserver-client-kubelet",
        &client,
        &own,
    );
    let other = std::fs::read_to_string(cfssl_request(&w, "w2", "system:node:w-2", &[])).unwrap();
    submit(
        &w1,
        "kubelet-w-2-by-w-1",
        "kubernetes.io/kube-apiserver-client-kubelet",
        &client,
        &other,
    );
    let issued = common::eventually(
        "kubelet-w-1 auto-approved and issued",
        Duration::from_secs(20),
        || {
            let v = csr_json(&w, "kubelet-w-1");
            let reason = v["status"]["conditions"][0]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match (reason.as_str(), v["status"]["certificate"].as_str()) {
                ("AutoApproved", Some(c)) if !c.is_empty() => Ok(c.to_string()),
                _ => Err(format!("{v}")),
            }
        },
    );
    let crt = w.path().join("kubelet-w-1.crt");
    std::fs::write(
        &crt,
        sh(Command::new("base64").arg("--decode"), Some(&issued)),
    )
    .unwrap();
    common::openssl_verify(&w.node("cp-1").join("etc/kubernetes/pki/ca.crt"), &crt).unwrap();
    let text = sh(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&crt),
        None,
    );
    assert!(
        text.contains("TLS Web Client Authentication") && !text.contains("Server Authentication"),
        "{text}"
    );
    // Another node's certificate is not the kubelet's own: it stays pending, and
    // trustform, with no policy for that signer, leaves it to its approvers.
    assert!(csr_json(&w, "kubelet-w-2-by-w-1")["status"]["conditions"].is_null());
    let plan = w.ok(&["csr", "plan"]);
    assert!(
        plan.contains("csr kubelet-w-2-by-w-1 (signer kubernetes.io/kube-apiserver-client-kubelet"),
        "{plan}"
    );
    assert!(
        plan.contains(
            "Plan: 0 to approve, 0 to deny, 1 left to their own approver; 1 already decided."
        ),
        "{plan}"
    );
}
