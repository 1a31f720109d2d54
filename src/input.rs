//! Every file trustform reads goes through here: it must be a regular file once symlinks
//! are resolved (a FIFO would block for ever, `/dev/zero` would never end) and no larger
//! than the cap of its kind, checked before the first byte is read and again while
//! reading (a file that grows under us is cut off, not followed).
//!
//! | kind | cap |
//! |---|---|
//! | a node file (PEM, key, kubeconfig, manifest, kubelet config) | 1 MiB |
//! | `trustform.yaml`, a CA certificate or key in `cas` | 1 MiB |
//! | a plan file | 64 MiB |
//! | a journal or a backup index | 64 MiB |
//! | the lock file | 64 KiB |

use miette::Diagnostic;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use thiserror::Error;

/// What a file is, which sets how large it may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A file on a node: certificates, keys, kubeconfigs, manifests, kubelet config.
    NodeFile,
    /// trustform.yaml, or a CA file it names.
    Config,
    /// A plan written by `trustform plan -out`.
    Plan,
    /// A snapshot written by `trustform snapshot -o`.
    Snapshot,
    /// A journal or a backup index (JSON lines).
    Journal,
    /// The lock file.
    Lock,
}

impl Kind {
    /// The largest file of this kind trustform reads, in bytes.
    pub const fn cap(self) -> u64 {
        match self {
            Kind::NodeFile | Kind::Config => 1 << 20,
            Kind::Plan | Kind::Journal | Kind::Snapshot => 64 << 20,
            Kind::Lock => 64 << 10,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::NodeFile => "a node file",
            Kind::Config => "a configuration file",
            Kind::Plan => "a plan file",
            Kind::Snapshot => "a snapshot file",
            Kind::Journal => "a journal",
            Kind::Lock => "a lock file",
        }
    }
}

/// Why a file was not read.
#[derive(Debug, Error, Diagnostic)]
pub enum InputError {
    /// There is no such file.
    #[error("{path} does not exist")]
    #[diagnostic(code(trustform::input::missing))]
    Missing {
        /// The path.
        path: String,
    },
    /// Not a regular file (after symlinks): a FIFO, a device, a socket, a directory.
    #[error("{path} is {what}, not a regular file")]
    #[diagnostic(
        code(trustform::input::not_a_file),
        help(
            "trustform reads only regular files (a FIFO or a device could block or never end): remove it or point the setting at the real file"
        )
    )]
    NotAFile {
        /// The path.
        path: String,
        /// What it is.
        what: &'static str,
    },
    /// Larger than the cap of its kind.
    #[error("{path} is larger than {cap} bytes, the most trustform reads for {kind}")]
    #[diagnostic(
        code(trustform::input::too_large),
        help(
            "this is not a file trustform wrote or kubeadm writes; check the path (the limits are listed in the book's Safety chapter)"
        )
    )]
    TooLarge {
        /// The path.
        path: String,
        /// The cap.
        cap: u64,
        /// The kind of file.
        kind: &'static str,
    },
    /// The operating system refused.
    #[error("cannot read {path}: {source}")]
    #[diagnostic(
        code(trustform::input::io),
        help("check the path and its permissions (trustform reads keys: run as root on nodes)")
    )]
    Io {
        /// The path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl InputError {
    /// Whether the file does not exist.
    pub fn is_missing(&self) -> bool {
        matches!(self, InputError::Missing { .. })
    }

    /// What is wrong, without the path (for errors that name the file their own way).
    pub fn reason(&self) -> String {
        match self {
            InputError::Missing { .. } => "does not exist".into(),
            InputError::NotAFile { what, .. } => format!("is {what}, not a regular file"),
            InputError::TooLarge { cap, kind, .. } => {
                format!("is larger than {cap} bytes, the most trustform reads for {kind}")
            }
            InputError::Io { source, .. } => format!("cannot be read: {source}"),
        }
    }

    /// Its help line.
    pub fn help_line(&self) -> Option<String> {
        Diagnostic::help(self).map(|h| h.to_string())
    }
}

fn what(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Read a file of `kind`: a regular file (symlinks followed) no larger than its cap.
pub fn read(path: &Path, kind: Kind) -> Result<Vec<u8>, InputError> {
    let shown = || path.display().to_string();
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            InputError::Missing { path: shown() }
        } else {
            InputError::Io {
                path: shown(),
                source,
            }
        }
    };
    let check = |meta: &std::fs::Metadata| {
        if !meta.file_type().is_file() {
            return Err(InputError::NotAFile {
                path: shown(),
                what: what(meta.file_type()),
            });
        }
        if meta.len() > kind.cap() {
            return Err(too_large(path, kind));
        }
        Ok(())
    };
    check(&std::fs::metadata(path).map_err(io)?)?;
    // O_NONBLOCK: should the file be swapped for a FIFO between the check and the open,
    // the open does not wait for a writer; the second check then refuses it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    check(&file.metadata().map_err(io)?)?;
    let mut bytes = Vec::new();
    file.take(kind.cap() + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > kind.cap() {
        return Err(too_large(path, kind));
    }
    Ok(bytes)
}

/// [`read`], `None` when the file does not exist.
pub fn read_if_exists(path: &Path, kind: Kind) -> Result<Option<Vec<u8>>, InputError> {
    match read(path, kind) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_missing() => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, kind: Kind) -> Result<String, InputError> {
    String::from_utf8(read(path, kind)?).map_err(|_| InputError::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

/// `text` with every line longer than `max` characters cut there (marked `…`): what an
/// error may quote of a file, whatever its lines hold. Line numbers stay the same.
pub fn clip_lines(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.lines().all(|l| l.chars().count() <= max) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(1 << 16));
    for l in text.split_inclusive('\n') {
        let (body, nl) = match l.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (l, ""),
        };
        if body.chars().count() > max {
            out.extend(body.chars().take(max));
            out.push('…');
        } else {
            out.push_str(body);
        }
        out.push_str(nl);
    }
    std::borrow::Cow::Owned(out)
}

fn too_large(path: &Path, kind: Kind) -> InputError {
    InputError::TooLarge {
        path: path.display().to_string(),
        cap: kind.cap(),
        kind: kind.name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_clipped_and_lines_kept() {
        let text = format!("short\n{}\nlast", "x".repeat(1000));
        let clipped = clip_lines(&text, 10);
        assert_eq!(clipped, format!("short\n{}…\nlast", "x".repeat(10)));
        assert!(matches!(
            clip_lines("a\nb", 10),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_device_is_refused_before_it_is_read() {
        let e = read(Path::new("/dev/zero"), Kind::NodeFile).unwrap_err();
        assert!(
            matches!(
                e,
                InputError::NotAFile {
                    what: "a character device",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_fifo_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("ca.crt");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        let e = read(&fifo, Kind::NodeFile).unwrap_err();
        assert!(
            matches!(e, InputError::NotAFile { what: "a FIFO", .. }),
            "{e:?}"
        );
    }

    #[test]
    fn a_symlink_to_a_device_is_refused_and_a_large_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("ca.crt");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(
            read(&link, Kind::NodeFile),
            Err(InputError::NotAFile { .. })
        ));
        let big = dir.path().join("big.crt");
        std::fs::write(&big, vec![b'a'; (Kind::NodeFile.cap() + 1) as usize]).unwrap();
        let e = read(&big, Kind::NodeFile).unwrap_err();
        assert!(matches!(e, InputError::TooLarge { cap, .. } if cap == 1 << 20));
        std::fs::write(&big, vec![b'a'; Kind::NodeFile.cap() as usize]).unwrap();
        assert_eq!(read(&big, Kind::NodeFile).unwrap().len(), 1 << 20);
        assert!(
            read_if_exists(&dir.path().join("none"), Kind::Lock)
                .unwrap()
                .is_none()
        );
    }
}
