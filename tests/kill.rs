//! `kill -9` at random moments: a real apply process is killed with SIGKILL (no fault
//! hook, no chance to clean up) again and again across a whole rotation; each time the
//! next `apply` resumes, and the end is the same state an uninterrupted apply reaches.

use crate::common;

use common::{Workdir, copy_dir, shape};
use std::time::{Duration, Instant};

/// A small deterministic generator: the seed is printed, so a failure can be replayed
/// with `TRUSTFORM_KILL_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn template() -> Workdir {
    let w = common::sandbox(2, 1, false);
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    w
}

fn has_jsonl(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
}

fn copy_of(template: &Workdir) -> Workdir {
    let w = Workdir {
        tmp: tempfile::tempdir().unwrap(),
    };
    std::fs::remove_dir(w.path()).unwrap();
    copy_dir(template.path(), w.path());
    w
}

#[test]
fn sigkill_at_random_moments_always_resumes_to_the_same_end() {
    let template = template();
    // The uninterrupted run: its end state, and how long a whole apply takes here.
    let reference = copy_of(&template);
    let started = Instant::now();
    reference.ok(&["apply", "--auto-approve"]);
    let whole = started.elapsed();
    let want = shape(&reference);
    let seed = std::env::var("TRUSTFORM_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill test: seed {seed} (TRUSTFORM_KILL_SEED), a whole apply takes {whole:?}");
    let mut rng = Rng(seed);
    let mut kills = 0;
    let mut mid_apply = 0;
    // Whole rotations, each killed until one apply completes, until 20 kills are had.
    let mut run = 0;
    while kills < 20 {
        run += 1;
        assert!(run <= 40, "40 rotations gave only {kills} kills");
        let w = copy_of(&template);
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts < 60, "run {run}: no apply completed in 60 tries");
            let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("trustform"))
                .current_dir(w.path())
                .env("NO_COLOR", "1")
                .env("TRUSTFORM_RESTART_SETTLE", "0s")
                .args(["apply", "--auto-approve"])
                .stdout(std::fs::File::create(w.path().join("apply.out")).unwrap())
                .stderr(std::fs::File::create(w.path().join("apply.err")).unwrap())
                .spawn()
                .unwrap();
            // Every other try: anywhere from the process start (observe, plan, lock) to
            // the end of a whole apply; the others: once the apply has journaled, anywhere
            // in the steps.
            let ms = rng.next() % (whole.as_millis() as u64 + 1);
            let in_steps = attempts % 2 == 0;
            let journal = w.path().join(".trustform/journal");
            let mut deadline = (!in_steps).then(|| Instant::now() + Duration::from_millis(ms));
            let finished = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if deadline.is_none() && has_jsonl(&journal) {
                    deadline = Some(Instant::now() + Duration::from_millis(ms / 2));
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            match finished {
                Some(status) => {
                    assert!(
                        status.success(),
                        "run {run}: apply failed after a kill (seed {seed}):\n{}\n{}",
                        std::fs::read_to_string(w.path().join("apply.out")).unwrap_or_default(),
                        std::fs::read_to_string(w.path().join("apply.err")).unwrap_or_default()
                    );
                    break;
                }
                None => {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                    if has_jsonl(&journal) {
                        mid_apply += 1;
                    }
                }
            }
        }
        // The end: what an uninterrupted apply reaches, and nothing left to do.
        assert_eq!(
            shape(&w),
            want,
            "run {run}: the end state differs (seed {seed})"
        );
        let plan = w.ok(&["plan"]);
        assert!(plan.contains("No changes."), "run {run}: {plan}");
        let status = w.ok(&["status"]);
        assert!(status.contains("done"), "run {run}: {status}");
        assert!(
            !w.path().join(".trustform/lock.json").exists(),
            "run {run}: the lock is released"
        );
    }
    eprintln!(
        "kill test: {kills} SIGKILLs in {run} rotations, {mid_apply} after the journal existed"
    );
    assert!(
        mid_apply >= 10,
        "killed mid-apply often enough: {mid_apply} of {kills}"
    );
}
