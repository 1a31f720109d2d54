//! A mutation fuzzer that runs on stable, inside `cargo test` (cargo-fuzz needs nightly).
//!
//! Each target takes the seed inputs committed in `fuzz/corpus/<target>/`, mutates them
//! (bit flips, byte inserts and deletes, truncation, duplicated, swapped and dropped
//! lines, splices of two seeds, interesting tokens: `{{{`, tabs, `---`, anchors, huge
//! numbers, deep nesting, long lines, NUL, invalid UTF-8, PEM markers) and feeds them
//! to the product the way a user's file reaches it: observe reads a node on disk,
//! `config::load`, `load_plan`, `status` of a journal. Every execution must
//! - not panic,
//! - take under 2 s,
//! - render its error (miette's graphical handler, no colour) without any 40-character
//!   piece of the private key planted in the seeds.
//!
//! Seeds hold no key: `@@KEY_PEM@@` and `@@KEY_B64@@` stand for a throwaway ECDSA key
//! generated at the start of each run (PEM, and base64 of the PEM as kubeconfigs carry
//! it). A key's last body line (shorter than 40 characters) is not checked: hidden in
//! place, it is not recognisable once a mutation tears it out of its key.
//!
//! Knobs:
//! - `TRUSTFORM_FUZZ_SECS`: total seconds for all targets (default 20, split evenly);
//!   e.g. `TRUSTFORM_FUZZ_SECS=600 cargo test --release --test fuzz -- --nocapture`.
//! - `TRUSTFORM_FUZZ_SEED`: replay a run (each run prints its seed). With the same seed
//!   the n-th input of a target is the same; a failing input is also saved under
//!   `target/fuzz-findings/<target>/`.

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Per-input time limit.
const LIMIT: Duration = Duration::from_secs(2);
/// Targets, for the split of the budget.
const TARGETS: u32 = 7;
/// Inputs larger than this are cut.
const MAX_LEN: usize = 1 << 20;
/// Planted key material shorter than this is not looked for.
const WINDOW: usize = 40;

// ---------------------------------------------------------------------------------------
// Randomness

/// splitmix64: small, fast, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

fn base_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| match std::env::var("TRUSTFORM_FUZZ_SEED") {
        Ok(s) => s.trim().parse().expect("TRUSTFORM_FUZZ_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    })
}

fn budget() -> Duration {
    let total: f64 = std::env::var("TRUSTFORM_FUZZ_SECS")
        .ok()
        .map(|s| {
            s.trim()
                .parse()
                .expect("TRUSTFORM_FUZZ_SECS is a number of seconds")
        })
        .unwrap_or(20.0);
    Duration::from_secs_f64(total / f64::from(TARGETS))
}

// ---------------------------------------------------------------------------------------
// The planted key

/// A throwaway key, and what of it must never be shown.
struct Planted {
    pem: String,
    b64: String,
    windows: HashSet<Vec<u8>>,
}

impl Planted {
    fn new() -> Self {
        let key = trustform::pki::issue::generate_key(trustform::pki::KeyAlgorithm::EcdsaP256)
            .expect("a throwaway key");
        let pem = key.serialize_pem();
        let b64 = trustform::pki::kubeconfig::b64(&pem);
        let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let mut windows = HashSet::new();
        let mut add = |s: &str| {
            for w in s.as_bytes().windows(WINDOW) {
                windows.insert(w.to_vec());
            }
        };
        add(&b64);
        add(&body.concat());
        for l in &body {
            add(l);
        }
        Self { pem, b64, windows }
    }

    /// Put the key where a seed asks for it.
    fn plant(&self, seed: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(seed);
        if !text.contains("@@KEY_") {
            return seed.to_vec();
        }
        text.replace("@@KEY_PEM@@", self.pem.trim_end())
            .replace("@@KEY_B64@@", &self.b64)
            .into_bytes()
    }

    /// A piece of the key shown in `text`, if any.
    fn leak(&self, text: &str) -> Option<String> {
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !is_b64(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && is_b64(b[i]) {
                i += 1;
            }
            if let Some(w) = b[start..i]
                .windows(WINDOW)
                .find(|w| self.windows.contains(*w))
            {
                return Some(String::from_utf8_lossy(w).into_owned());
            }
        }
        None
    }
}

fn is_b64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'='
}

// ---------------------------------------------------------------------------------------
// Mutations

const TOKENS: &[&str] = &[
    "{{{",
    "{{{{ not: yaml ::",
    "\t",
    "\tkey: value\n",
    "---\n",
    "...\n",
    "&a ",
    "*a",
    "*anchor",
    "<<: *a\n",
    "!!binary ",
    "!!str ",
    "? ",
    ": ",
    "- ",
    "|\n",
    ">-\n",
    "\"",
    "'",
    "#",
    "~",
    "null",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\\",
    "\\u0000",
    "\r\n",
    "\0",
    "%YAML 1.2\n",
    "99999999999999999999999999999999999999",
    "-9223372036854775809",
    "1e999",
    "0x",
    "../../../",
    "-----BEGIN RSA PRIVATE KEY-----\n",
    "-----END RSA PRIVATE KEY-----\n",
    "-----BEGIN CERTIFICATE-----\n",
    "-----END CERTIFICATE-----\n",
    "-----BEGIN ",
    "client-key-data: ",
    "certificate-authority-data: ",
    "\"client-key-data\": ",
    "clusters:\n",
    "--client-ca-file=/etc/kubernetes/pki/ca.crt",
];

fn lines(data: &[u8]) -> Vec<&[u8]> {
    data.split_inclusive(|b| *b == b'\n').collect()
}

fn mutate(seeds: &[Vec<u8>], planted: &Planted, rng: &mut Rng) -> Vec<u8> {
    let mut d = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(15) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 => {
                let b = rng.next() as u8;
                d.insert(rng.below(len + 1), b);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = (1 + rng.below(16)).min(len - i);
                d.drain(i..i + n);
            }
            3 => d.truncate(rng.below(len + 1)),
            4 => {
                let ls = lines(&d);
                let i = rng.below(ls.len());
                let mut out = Vec::with_capacity(len * 2);
                for (j, l) in ls.iter().enumerate() {
                    out.extend_from_slice(l);
                    if j == i {
                        if !l.ends_with(b"\n") {
                            out.push(b'\n');
                        }
                        out.extend_from_slice(l);
                    }
                }
                d = out;
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let a = rng.below(len + 1);
                let b = rng.below(other.len() + 1);
                d.truncate(a);
                d.extend_from_slice(&other[b..]);
            }
            6 | 7 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                let at = if rng.one_in(2) {
                    // At a line start.
                    let ls = lines(&d);
                    ls[..rng.below(ls.len() + 1)].iter().map(|l| l.len()).sum()
                } else {
                    rng.below(len + 1)
                };
                d.splice(at..at, t.iter().copied());
            }
            8 => {
                let open = [b'[', b'{'][rng.below(2)];
                let deep = if rng.one_in(8) { 100_000 } else { 200 };
                let n = 1 + rng.below(deep);
                let at = rng.below(len + 1);
                d.splice(at..at, std::iter::repeat_n(open, n));
            }
            9 => {
                let long = if rng.one_in(8) { 200_000 } else { 2_000 };
                let n = 1 + rng.below(long);
                let at = rng.below(len + 1);
                let c = [b'a', b'A', b' ', b'9', b'/'][rng.below(5)];
                d.splice(at..at, std::iter::repeat_n(c, n));
            }
            10 => {
                let ls = lines(&d);
                if ls.len() > 1 {
                    let (i, j) = (rng.below(ls.len()), rng.below(ls.len()));
                    let mut v: Vec<Vec<u8>> = ls.iter().map(|l| l.to_vec()).collect();
                    v.swap(i, j);
                    d = v.concat();
                }
            }
            11 => {
                let ls = lines(&d);
                let i = rng.below(ls.len());
                let v: Vec<&[u8]> = ls
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, l)| *l)
                    .collect();
                d = v.concat();
            }
            12 => {
                let piece = match rng.below(3) {
                    0 => planted.b64.clone(),
                    1 => planted.pem.clone(),
                    _ => planted.pem.lines().nth(1).unwrap_or_default().to_string(),
                };
                let at = rng.below(len + 1);
                d.splice(at..at, piece.bytes());
            }
            13 if len > 0 => {
                let i = rng.below(len);
                d[i] = [0x00, 0xff, 0xc3, 0x80, b'\n', b'\t', b' ', b':'][rng.below(8)];
            }
            _ => {
                let i = rng.below(len + 1);
                let n = [0u64, 1, 127, 128, 255, 65535, u32::MAX as u64][rng.below(7)];
                d.splice(i..i, n.to_string().bytes());
            }
        }
        d.truncate(MAX_LEN);
    }
    d
}

// ---------------------------------------------------------------------------------------
// Rendering

/// An error as `main` prints it (through `redact::Shown`), without colour or wrapping.
fn render<E: Diagnostic + Send + Sync + 'static>(e: E) -> String {
    let shown = trustform::redact::Shown::new(miette::Report::new(e));
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100_000)
        .render_report(&mut out, &shown)
        .expect("renders");
    out
}

// ---------------------------------------------------------------------------------------
// Targets: each writes the input where the product reads it and returns what a user
// would see (rendered errors, status lines).

/// A scratch directory: a node root and a work dir.
struct Scratch {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    root: PathBuf,
    plan: Vec<u8>,
}

impl Scratch {
    fn new(plan: Vec<u8>) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let root = dir.join("node");
        for d in [
            "etc/kubernetes/pki",
            "etc/kubernetes/manifests",
            "var/lib/kubelet",
            "root/.kube",
            "work/.trustform/journal",
        ] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        Self {
            _tmp: tmp,
            dir,
            root,
            plan,
        }
    }

    /// Observe a node whose only file is `data` at `rel`; the rendered error, if any.
    fn observe(&self, rel: &str, data: &[u8], listed: bool) -> Vec<String> {
        let path = self.root.join(rel);
        std::fs::write(&path, data).expect("write");
        let kubeconfigs = if listed {
            vec![trustform::observe::Listed {
                path: format!("/{rel}"),
                origin: None,
            }]
        } else {
            vec![]
        };
        let mut target = trustform::observe::NodeTarget::local("cp-1", &self.root);
        target.kubeconfigs = kubeconfigs;
        let out = match trustform::observe::observe(&[target]) {
            Ok(_) => vec![],
            Err(e) => vec![render(e)],
        };
        std::fs::remove_file(&path).expect("remove");
        out
    }
}

type Run = fn(&Scratch, &[u8], u64) -> Vec<String>;

fn config(s: &Scratch, data: &[u8], _: u64) -> Vec<String> {
    let path = s.dir.join("trustform.yaml");
    std::fs::write(&path, data).expect("write");
    match trustform::config::load(&path) {
        Err(e) => vec![render(e)],
        Ok(l) => match trustform::observe::targets(&l) {
            Err(e) => vec![render(e)],
            Ok(_) => vec![],
        },
    }
}

fn pem(s: &Scratch, data: &[u8], n: u64) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let _ = trustform::pki::parse_certs(&text, "fuzz");
    let _ = trustform::apply::material::key_block(&text, "fuzz");
    let file = ["etc/kubernetes/pki/ca.crt", "etc/kubernetes/pki/ca.key"][(n % 2) as usize];
    s.observe(file, data, false)
}

fn kubeconfig(s: &Scratch, data: &[u8], n: u64) -> Vec<String> {
    let mut out = match trustform::apply::tls::parse_kubeconfig(data, "fuzz") {
        Err(e) => vec![e.to_string()],
        Ok(k) => {
            let _ = k.current();
            let _ = k.to_yaml();
            vec![]
        }
    };
    out.extend(if n.is_multiple_of(3) {
        s.observe("root/.kube/config", data, true)
    } else {
        s.observe("etc/kubernetes/scheduler.conf", data, false)
    });
    out
}

fn manifest(s: &Scratch, data: &[u8], _: u64) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let _ = trustform::manifest::parse(&text);
    let _ = trustform::manifest::set_flag(&text, "client-ca-file", "/etc/kubernetes/pki/x.crt");
    let _ = trustform::manifest::set_annotation(&text, trustform::manifest::RESTARTED_AT, "now");
    s.observe("etc/kubernetes/manifests/kube-apiserver.yaml", data, false)
}

fn kubelet(s: &Scratch, data: &[u8], _: u64) -> Vec<String> {
    s.observe("var/lib/kubelet/config.yaml", data, false)
}

fn plan(s: &Scratch, data: &[u8], _: u64) -> Vec<String> {
    let path = s.dir.join("plan.json");
    std::fs::write(&path, data).expect("write");
    match trustform::cli::load_plan(&path) {
        Err(e) => vec![render(e)],
        Ok(p) => vec![trustform::render::text(&p)],
    }
}

fn journal(s: &Scratch, data: &[u8], _: u64) -> Vec<String> {
    let state = s.root.join("work/.trustform");
    let id = "p0";
    std::fs::write(trustform::apply::journal::plan_path(&state, id), &s.plan).expect("write");
    std::fs::write(trustform::apply::journal::path(&state, id), data).expect("write");
    match trustform::apply::status::of(&state, id) {
        Err(e) => vec![e.to_string()],
        Ok(st) => vec![
            st.lines().join("\n"),
            serde_json::to_string(&st).expect("status serialises"),
        ],
    }
}

// ---------------------------------------------------------------------------------------
// The loop

/// What went wrong with one input.
struct Finding {
    kind: &'static str,
    detail: String,
    input: Vec<u8>,
}

/// Panics seen on the targets' threads (and the threads they spawn), not yet reported.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keep the targets' panics off the terminal (they are reported as findings); the test
/// threads' own panics (a failed run's report) print as usual.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("fuzz_"))
            {
                return default(info);
            }
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            PANICS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{msg} at {at}"));
        }));
    });
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn seeds(target: &str, planted: &Planted) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .expect("the corpus is committed")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "seeds in fuzz/corpus/{target}");
    files
        .iter()
        .map(|p| planted.plant(&std::fs::read(p).expect("a seed")))
        .collect()
}

fn fuzz(name: &'static str, index: u64, run: Run) {
    quiet_panics();
    let planted = Planted::new();
    let seeds = seeds(name, &planted);
    let plan_seed = std::fs::read(corpus_dir("plan").join("kubernetes.json"))
        .expect("a plan seed for the journal target");
    let seed = base_seed();
    let mut rng = Rng(seed ^ index.wrapping_mul(0xA24B_AED4_963E_E407));
    let budget = budget();
    // The target runs on its own thread, so a hang is seen (and reported) instead of
    // stalling the test forever.
    let (to_worker, inputs) = mpsc::channel::<(u64, Vec<u8>)>();
    let (to_main, results) = mpsc::channel::<(Duration, Result<Vec<String>, String>)>();
    std::thread::Builder::new()
        .name(format!("target-{name}"))
        .stack_size(8 << 20)
        .spawn(move || {
            let scratch = Scratch::new(plan_seed);
            for (n, input) in inputs {
                let start = Instant::now();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&scratch, &input, n)
                }))
                .map_err(|_| {
                    std::mem::take(&mut *PANICS.lock().unwrap_or_else(|p| p.into_inner()))
                        .join("; then ")
                });
                if to_main.send((start.elapsed(), r)).is_err() {
                    return;
                }
            }
        })
        .expect("worker starts");
    let started = Instant::now();
    let mut findings: Vec<Finding> = Vec::new();
    let mut execs: u64 = 0;
    let mut slowest = (Duration::ZERO, 0usize);
    let mut hung = false;
    // Every seed as it is first, then mutations until the budget is spent.
    while execs < seeds.len() as u64 || started.elapsed() < budget {
        let input = match seeds.get(execs as usize) {
            Some(s) => s.clone(),
            None => mutate(&seeds, &planted, &mut rng),
        };
        to_worker
            .send((execs, input.clone()))
            .expect("worker alive");
        execs += 1;
        match results.recv_timeout(LIMIT * 5) {
            Err(_) => {
                findings.push(Finding {
                    kind: "hang",
                    detail: format!("no answer within {:?}", LIMIT * 5),
                    input,
                });
                hung = true;
                break;
            }
            Ok((took, r)) => {
                if took > slowest.0 {
                    slowest = (took, input.len());
                }
                if took > LIMIT {
                    findings.push(Finding {
                        kind: "slow",
                        detail: format!("took {took:?}"),
                        input: input.clone(),
                    });
                }
                match r {
                    Err(panic) => findings.push(Finding {
                        kind: "panic",
                        detail: panic,
                        input,
                    }),
                    Ok(shown) => {
                        if let Some(piece) = shown.iter().find_map(|s| planted.leak(s)) {
                            let shown = shown.join("\n");
                            findings.push(Finding {
                                kind: "leak",
                                detail: format!("{piece:?} shown in:\n{shown}"),
                                input,
                            });
                        }
                    }
                }
            }
        }
        if findings.len() >= 5 {
            break;
        }
    }
    eprintln!(
        "fuzz {name}: {execs} executions in {:.1?} (seed {seed}), slowest {:.1?} on {} bytes, {} findings",
        started.elapsed(),
        slowest.0,
        slowest.1,
        findings.len()
    );
    if findings.is_empty() {
        return;
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("../fuzz-findings")
        .join(name);
    std::fs::create_dir_all(&out).expect("findings dir");
    let mut report = String::new();
    for (i, f) in findings.iter().enumerate() {
        let file = out.join(format!("{seed}-{i}-{}", f.kind));
        std::fs::write(&file, &f.input).expect("save the input");
        let detail: String = f.detail.chars().take(4000).collect();
        report.push_str(&format!(
            "\n{} ({}): {detail}\n  input saved to {}\n",
            f.kind,
            name,
            file.display()
        ));
    }
    if hung {
        report.push_str("\n(the hung worker thread is left behind)\n");
    }
    panic!("fuzz {name} (TRUSTFORM_FUZZ_SEED={seed}) found:{report}");
}

#[test]
fn fuzz_config() {
    fuzz("config", 1, config);
}

#[test]
fn fuzz_pem() {
    fuzz("pem", 2, pem);
}

#[test]
fn fuzz_kubeconfig() {
    fuzz("kubeconfig", 3, kubeconfig);
}

#[test]
fn fuzz_manifest() {
    fuzz("manifest", 4, manifest);
}

#[test]
fn fuzz_kubelet() {
    fuzz("kubelet", 5, kubelet);
}

#[test]
fn fuzz_plan() {
    fuzz("plan", 6, plan);
}

#[test]
fn fuzz_journal() {
    fuzz("journal", 7, journal);
}
