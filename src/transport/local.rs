//! A node reached through a local directory that is its `/`.

use super::{FileType, Output, Stat, Stream, Transport, TransportError};
use crate::{atomic, input, input::Kind};
use miette::Diagnostic;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// A node path that trustform refuses to touch.
#[derive(Debug, Error, Diagnostic, PartialEq, Eq)]
pub enum PathError {
    /// Not an absolute, normal path.
    #[error("{path:?} is not a plain absolute node path: {why}")]
    #[diagnostic(
        code(trustform::transport::bad_path),
        help("node paths are absolute, without `.`, `..`, doubled slashes or NUL bytes")
    )]
    NotNormal {
        /// The path as given.
        path: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Symlinks that loop, or more than Linux follows.
    #[error("{path}: too many levels of symbolic links")]
    #[diagnostic(
        code(trustform::transport::symlink_loop),
        help("fix the symlinks on the node: they loop")
    )]
    Loop {
        /// The path as given.
        path: String,
    },
    /// A symlink could not be read.
    #[error("{path}: cannot read the symlink {link}: {why}")]
    #[diagnostic(code(trustform::transport::symlink))]
    Link {
        /// The path as given.
        path: String,
        /// The link.
        link: String,
        /// Cause.
        why: String,
    },
}

/// Check that `abs` is an absolute node path with no `.`, `..`, empty component or NUL.
pub fn normal(abs: &str) -> Result<(), PathError> {
    let bad = |why| {
        Err(PathError::NotNormal {
            path: abs.to_string(),
            why,
        })
    };
    if !abs.starts_with('/') {
        return bad("not absolute");
    }
    if abs.contains('\0') {
        return bad("a NUL byte");
    }
    if abs == "/" {
        return bad("the root itself");
    }
    for c in abs[1..].split('/') {
        match c {
            "" => return bad("an empty component (`//` or a trailing `/`)"),
            "." => return bad("a `.` component"),
            ".." => return bad("a `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// Where node path `abs` is on this machine, for a node whose `/` is `root`: every
/// symlink on the way is followed *inside* the root (an absolute target starts again at
/// the root; `..` never climbs above it), so no node path can reach a file outside the
/// node. A path that does not exist yet resolves to where it would be created.
pub fn resolve(root: &Path, abs: &str) -> Result<PathBuf, PathError> {
    normal(abs)?;
    let mut todo: Vec<OsString> = abs[1..].split('/').rev().map(OsString::from).collect();
    let mut at: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            at.pop();
            continue;
        }
        if name == "." || name.is_empty() {
            continue;
        }
        let mut host = root.to_path_buf();
        host.extend(&at);
        host.push(&name);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > super::MAX_LINKS {
                    return Err(PathError::Loop {
                        path: abs.to_string(),
                    });
                }
                let target = std::fs::read_link(&host).map_err(|e| PathError::Link {
                    path: abs.to_string(),
                    link: host.display().to_string(),
                    why: e.to_string(),
                })?;
                if target.is_absolute() {
                    at.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                    }
                }
            }
            _ => at.push(name),
        }
    }
    let mut host = root.to_path_buf();
    host.extend(&at);
    Ok(host)
}

/// A node whose `/` is a local directory: the machine itself (`/`), or a mounted or
/// synced copy of a node. Commands and ports work only on the machine itself.
#[derive(Debug, Clone)]
pub struct Local {
    name: String,
    root: PathBuf,
}

impl Local {
    /// The node `name` whose `/` is `root`.
    pub fn new(name: &str, root: &Path) -> Self {
        Self {
            name: name.to_string(),
            root: root.to_path_buf(),
        }
    }

    /// Where a node path is on this machine.
    pub fn host(&self, abs: &str) -> Result<PathBuf, PathError> {
        resolve(&self.root, abs)
    }

    /// The host directory of `abs`'s parent (resolved inside the root) and its last
    /// component, which is not followed (to read, replace or remove a link itself).
    fn unfollowed<'a>(&self, abs: &'a str) -> Result<(PathBuf, &'a str), PathError> {
        normal(abs)?;
        let (dir, name) = abs.rsplit_once('/').unwrap_or(("", abs));
        let parent = if dir.is_empty() {
            self.root.clone()
        } else {
            self.host(dir)?
        };
        Ok((parent, name))
    }

    fn io(abs: &str) -> impl FnOnce(std::io::Error) -> TransportError + '_ {
        move |e| TransportError::Io {
            path: abs.to_string(),
            reason: e.to_string(),
        }
    }

    fn is_machine(&self) -> bool {
        self.root == Path::new("/")
    }

    fn not_here(&self, what: &str) -> TransportError {
        TransportError::Unsupported {
            node: self.name.clone(),
            what: format!(
                "cannot {what}: the node is reached through the directory {}, not as this machine",
                self.root.display()
            ),
            help: format!(
                "give node {} `access.ssh` in trustform.yaml, or run trustform on the node itself (`access.local.root: /`)",
                self.name
            ),
        }
    }
}

fn file_type(t: std::fs::FileType) -> FileType {
    if t.is_symlink() {
        FileType::Symlink
    } else if t.is_dir() {
        FileType::Dir
    } else if t.is_file() {
        FileType::File
    } else {
        FileType::Other
    }
}

impl Transport for Local {
    fn describe(&self) -> String {
        format!("local {}", self.root.display())
    }

    fn read(&self, abs: &str, kind: Kind) -> Result<Option<Vec<u8>>, TransportError> {
        let host = self.host(abs)?;
        input::read_if_exists(&host, kind).map_err(|e| {
            let mut err = TransportError::input(abs, e);
            // A symlink led elsewhere: say where, on this machine.
            if let TransportError::Input { reason, .. } = &mut err
                && host != self.root.join(crate::layout::rel(abs))
            {
                reason.push_str(&format!(
                    " (it resolves to {} on this machine)",
                    host.display()
                ));
            }
            err
        })
    }

    fn stat(&self, abs: &str) -> Result<Option<Stat>, TransportError> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(self.host(abs)?) {
            Ok(m) => Ok(Some(Stat {
                kind: file_type(m.file_type()),
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: m.size(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(abs)(e)),
        }
    }

    fn read_link(&self, abs: &str) -> Result<Option<String>, TransportError> {
        let (parent, name) = self.unfollowed(abs)?;
        match std::fs::read_link(parent.join(name)) {
            Ok(t) => Ok(Some(t.to_string_lossy().into_owned())),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(Self::io(abs)(e)),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, FileType)>, TransportError> {
        let host = self.host(dir)?;
        let rd = match std::fs::read_dir(&host) {
            Ok(rd) => rd,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(vec![]);
            }
            Err(e) => return Err(Self::io(dir)(e)),
        };
        let mut out: Vec<(String, FileType)> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let t = e.file_type().ok()?;
                Some((name, file_type(t)))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn write(
        &self,
        abs: &str,
        bytes: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), TransportError> {
        let host = self.host(abs)?;
        atomic::write_owned(&host, bytes, mode, owner).map_err(Self::io(abs))
    }

    fn remove(&self, abs: &str) -> Result<(), TransportError> {
        let (parent, name) = self.unfollowed(abs)?;
        match std::fs::remove_file(parent.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Self::io(abs)(e)),
            _ => Ok(()),
        }
    }

    fn symlink(&self, abs: &str, target: &str) -> Result<(), TransportError> {
        let (parent, name) = self.unfollowed(abs)?;
        atomic::symlink(&parent.join(name), Path::new(target)).map_err(Self::io(abs))
    }

    fn remove_leftovers(&self, dirs: &[&str]) -> Result<Vec<String>, TransportError> {
        let mut out = vec![];
        for dir in dirs {
            let host = self.host(dir)?;
            out.extend(
                atomic::remove_leftovers(&host, false)
                    .into_iter()
                    .filter_map(|p| {
                        p.file_name()
                            .map(|n| format!("{dir}/{}", n.to_string_lossy()))
                    }),
            );
        }
        Ok(out)
    }

    fn can_run(&self) -> bool {
        self.is_machine()
    }

    fn run(&self, argv: &[&str], timeout: Duration) -> Result<Output, TransportError> {
        if !self.is_machine() {
            return Err(self.not_here(&format!("run `{}`", argv.join(" "))));
        }
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| self.not_here("run nothing"))?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        super::process::run(cmd, None, timeout).map_err(|reason| TransportError::Unreachable {
            node: self.name.clone(),
            reason: format!("`{}`: {reason}", argv.join(" ")),
            help: "check that the command exists on this machine and that trustform runs as root"
                .into(),
        })
    }

    fn dial(&self, host: &str, port: u16) -> Result<Box<dyn Stream>, TransportError> {
        if !self.is_machine() {
            return Err(self.not_here(&format!("reach {host}:{port}")));
        }
        let s = super::process::connect(host, port).map_err(|e| TransportError::Unreachable {
            node: self.name.clone(),
            reason: format!("{host}:{port}: {e}"),
            help: "check that the component listens there (its manifest's --bind-address and port)"
                .into(),
        })?;
        Ok(Box::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_must_be_normal() {
        for p in [
            "etc/kubernetes",
            "/etc/kubernetes/pki/../../../../x.crt",
            "/etc//kubernetes",
            "/etc/./kubernetes",
            "/etc/kubernetes/",
            "/",
            "/etc/a\0b",
        ] {
            assert!(normal(p).is_err(), "{p:?} is refused");
        }
        assert!(normal("/etc/kubernetes/pki/ca.crt").is_ok());
    }

    #[test]
    fn only_this_machine_runs_commands() {
        assert!(Local::new("self", Path::new("/")).can_run());
        let copy = Local::new("w-1", Path::new("/srv/nodes/w-1"));
        assert!(!copy.can_run());
        let e = copy.run(&["true"], Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, TransportError::Unsupported { .. }), "{e:?}");
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("node");
        let pki = root.join("var/lib/kubelet/pki");
        std::fs::create_dir_all(&pki).unwrap();
        // kubeadm's absolute symlink: resolved against the node's root.
        symlink(
            "/var/lib/kubelet/pki/kubelet-client-2026.pem",
            pki.join("kubelet-client-current.pem"),
        )
        .unwrap();
        assert_eq!(
            resolve(&root, "/var/lib/kubelet/pki/kubelet-client-current.pem").unwrap(),
            pki.join("kubelet-client-2026.pem")
        );
        // `..` in a link stops at the root; an absolute escape is re-rooted.
        symlink("../../../../../../../../etc/shadow", pki.join("up")).unwrap();
        assert_eq!(
            resolve(&root, "/var/lib/kubelet/pki/up").unwrap(),
            root.join("etc/shadow")
        );
        symlink("/etc", root.join("etc-link")).unwrap();
        assert_eq!(
            resolve(&root, "/etc-link/passwd").unwrap(),
            root.join("etc/passwd")
        );
        // A loop is an error, not a hang.
        symlink("/loop-b", root.join("loop-a")).unwrap();
        symlink("/loop-a", root.join("loop-b")).unwrap();
        assert!(matches!(
            resolve(&root, "/loop-a/x"),
            Err(PathError::Loop { .. })
        ));
        // Nothing resolves outside the root.
        for p in ["/var/lib/kubelet/pki/up", "/etc-link/passwd", "/x"] {
            assert!(resolve(&root, p).unwrap().starts_with(&root));
        }
    }
}
