//! `schemas/` is generated from the types, and every procedure file validates against it.

use crate::common;

use trustform::{config, procedure};

fn check_file(path: &str, generated: &str) {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::write(&full, generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&full).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{path} is stale: run `UPDATE_SCHEMAS=1 cargo test --test it schemas::`"
    );
}

#[test]
fn schemas_are_generated_from_the_types() {
    check_file("schemas/cluster.schema.json", &config::schema());
    check_file("schemas/procedure.schema.json", &procedure::schema());
}

/// A schema file, checked by an independent witness: Python's `jsonschema`
/// (`tests/data/validate-schema.py`), not trustform's own code.
pub(crate) struct Validator(String);

pub(crate) fn validator(path: &str) -> Validator {
    let v = Validator(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")));
    // The schema itself must be a valid JSON Schema (the script checks it first and
    // fails otherwise).
    let _ = v.iter_errors(&serde_json::json!({}));
    v
}

impl Validator {
    /// The witness's errors for `doc` (`message at /pointer`), none when it is valid.
    pub(crate) fn iter_errors(&self, doc: &serde_json::Value) -> Vec<String> {
        use std::io::Write;
        let script = format!(
            "{}/tests/data/validate-schema.py",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut child = std::process::Command::new("python3")
            .args([&script, &self.0])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (the tests need python3 with jsonschema)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(doc.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(0),
            "{}: the witness failed (python3 needs jsonschema: `apt-get install python3-jsonschema`): {}{stderr}",
            self.0,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub(crate) fn is_valid(&self, doc: &serde_json::Value) -> bool {
        self.iter_errors(doc).is_empty()
    }
}

#[test]
fn every_procedure_validates_against_the_schema_and_is_acyclic() {
    let v = validator("schemas/procedure.schema.json");
    for (file, text) in procedure::EMBEDDED {
        let doc: serde_json::Value = serde_saphyr::from_str(text).unwrap();
        let errors: Vec<String> = v.iter_errors(&doc);
        assert!(errors.is_empty(), "{file}: {errors:?}");
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/procedure.schema.json"),
            "{file}"
        );
        // `parse` proves acyclicity: every `after` names an earlier step.
        procedure::parse(file, text).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    // The schema rejects what it must.
    let bad = serde_json::json!({"procedure": "x", "authority": "kubernetes", "source": "s",
        "steps": [{"id": "a", "title": "t", "stage": "sideways", "for_each": "node", "action": "write-ca-files"}]});
    assert!(!v.is_valid(&bad));
}

#[test]
fn a_cycle_or_reordering_in_a_procedure_is_refused() {
    let (file, text) = procedure::EMBEDDED[0];
    let cyclic = text.replacen(
        "    after: [distribute-ca]\n",
        "    after: [kcm-root-ca]\n",
        1,
    );
    let err = procedure::parse(file, &cyclic).unwrap_err();
    assert!(
        err.reason
            .contains("comes after kcm-root-ca, which is not an earlier step"),
        "{}",
        err.reason
    );
    let reordered = text.replacen("    doc: \"2\"\n", "    doc: \"12\"\n", 1);
    let err = procedure::parse(file, &reordered).unwrap_err();
    assert!(
        err.reason
            .contains("documented steps keep their documented order"),
        "{}",
        err.reason
    );
    // A step trustform adds must say why.
    let unexplained = text.replacen(
        "    why: \"kube-controller-manager rejects a bundle",
        "    # \"kube-controller-manager rejects a bundle",
        1,
    );
    let err = procedure::parse(file, &unexplained).unwrap_err();
    assert!(
        err.reason
            .contains("kcm-single-cert-flags is not a documented step: say `why`"),
        "{}",
        err.reason
    );
    // `copies` (the kubeconfig copies of trustform.yaml) only on write-kubeconfigs.
    let misplaced = text.replacen(
        "    action: write-ca-files
",
        "    action: write-ca-files
    copies: true
",
        1,
    );
    let err = procedure::parse(file, &misplaced).unwrap_err();
    assert!(
        err.reason
            .contains("distribute-ca: `copies` goes with write-kubeconfigs, and only there"),
        "{}",
        err.reason
    );
}

#[test]
fn init_output_validates_against_the_cluster_schema() {
    let dir = tempfile::tempdir().unwrap();
    let spec = trustform::sandbox::Spec {
        control_planes: 1,
        workers: 1,
        algorithm: trustform::pki::KeyAlgorithm::EcdsaP256,
        seed: Default::default(),
        kubelet_serving: Default::default(),
    };
    trustform::sandbox::create(&dir.path().join("c"), &spec).unwrap();
    let out = assert_cmd::Command::cargo_bin("trustform")
        .unwrap()
        .current_dir(dir.path())
        .args(["init", "--sandbox", "c"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(dir.path().join("trustform.yaml")).unwrap();
    assert!(text.starts_with("# yaml-language-server: $schema=./trustform.schema.json\n"));
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let v = validator("schemas/cluster.schema.json");
    let errors: Vec<String> = v.iter_errors(&doc);
    assert!(errors.is_empty(), "{errors:?}\n{text}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("trustform.schema.json")).unwrap(),
        config::schema()
    );
}

#[test]
fn plan_snapshot_and_status_schemas_are_generated_and_versioned() {
    check_file("schemas/plan.schema.json", &trustform::plan::schema());
    check_file(
        "schemas/snapshot.schema.json",
        &trustform::snapshot::schema(),
    );
    check_file(
        "schemas/status.schema.json",
        &trustform::apply::status::schema(),
    );
    check_file("schemas/expiry.schema.json", &trustform::expiry::schema());
    for (path, id) in [
        ("schemas/expiry.schema.json", "expiry-v1"),
        ("schemas/plan.schema.json", "plan-v1"),
        ("schemas/snapshot.schema.json", "snapshot-v1"),
        ("schemas/status.schema.json", "status-v1"),
    ] {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            v["$id"],
            format!("https://trustform.dev/schemas/{id}.schema.json"),
            "{path}"
        );
    }
}

#[test]
fn the_plan_snapshot_and_status_trustform_writes_validate() {
    let w = common::initialised(1, 1);
    common::fast_issuance(&w);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let snapshot: serde_json::Value = serde_json::from_str(&w.ok(&["snapshot"])).unwrap();
    let plan: serde_json::Value =
        serde_json::from_str(&w.ok(&["plan", "--format", "json"])).unwrap();
    for (path, doc) in [
        ("schemas/snapshot.schema.json", &snapshot),
        ("schemas/plan.schema.json", &plan),
    ] {
        let v = validator(path);
        let errors: Vec<String> = v.iter_errors(doc).into_iter().take(5).collect();
        assert!(errors.is_empty(), "{path}: {errors:?}");
    }
    // The schema is not vacuous: a step without its id, or a node with an unknown role,
    // is refused.
    let mut bad = plan.clone();
    bad["steps"][0].as_object_mut().unwrap().remove("id");
    assert!(!validator("schemas/plan.schema.json").is_valid(&bad));
    let mut bad = snapshot.clone();
    bad["nodes"][0]["role"] = "manager".into();
    assert!(!validator("schemas/snapshot.schema.json").is_valid(&bad));
    // `status --format json`: before any apply, and after one.
    let status = validator("schemas/status.schema.json");
    let none: serde_json::Value =
        serde_json::from_str(&w.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(none["state"], "none");
    assert!(status.is_valid(&none), "{none}");
    w.ok(&["apply", "--auto-approve"]);
    let done: serde_json::Value =
        serde_json::from_str(&w.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(done["state"], "done");
    let errors = status.iter_errors(&done);
    assert!(errors.is_empty(), "{errors:?}");
    let mut bad = done.clone();
    bad["done"] = "all".into();
    assert!(!status.is_valid(&bad));
}
