//! A node reached through a local directory that is its `/`.

use miette::Diagnostic;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// How many symlinks one path may pass through (Linux's own limit).
const MAX_LINKS: usize = 40;

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
                if links > MAX_LINKS {
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
