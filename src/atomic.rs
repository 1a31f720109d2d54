//! Files written the safe way: temp file in the same directory, fsync, rename, fsync dir.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Mode for private keys.
pub const KEY_MODE: u32 = 0o600;
/// Mode for public files.
pub const PUBLIC_MODE: u32 = 0o644;

/// Write `bytes` to `path` atomically with `mode`, creating parent directories.
/// A reader sees the old content or the new, never a torn file.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_owned(path, bytes, mode, None)
}

/// [`write`], and give the file this owner and group (when they differ from ours).
pub fn write_owned(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let (dir, tmp) = synced_temp(path, bytes, mode, owner)?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir);
    Ok(())
}

/// A temp file beside `path` holding `bytes` with `mode` (and `owner`), fsync'd.
fn synced_temp<'a>(
    path: &'a Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<(&'a Path, tempfile::NamedTempFile)> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        let meta = tmp.as_file().metadata()?;
        if (meta.uid(), meta.gid()) != (uid, gid) {
            std::os::unix::fs::fchown(tmp.as_file(), Some(uid), Some(gid))?;
        }
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    Ok((dir, tmp))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// [`write`], but never over an existing file: fails with `AlreadyExists` if `path` is
/// there (checked by the rename itself, so no race can slip a file under it).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let (dir, tmp) = synced_temp(path, bytes, mode, None)?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    sync_dir(dir);
    Ok(())
}

/// Make `path` a symlink to `target`, atomically replacing whatever is there (a file or
/// another symlink): the new link is made beside it and renamed over it.
pub fn symlink(path: &Path, target: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    for _ in 0..16 {
        let tmp = dir.join(format!(
            "{TEMP_PREFIX}{}",
            &hex::encode(crate::unique::digest(b"symlink"))[..6]
        ));
        match std::os::unix::fs::symlink(target, &tmp) {
            Ok(()) => {
                return std::fs::rename(&tmp, path).inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temp name"))
}

/// Prefix of the temp files [`write`] makes (then `tempfile`'s 6 random characters).
pub const TEMP_PREFIX: &str = ".trustform-";

/// Whether `name` is a temp file of [`write`]'s, left behind if the process was killed
/// between creating and renaming it.
pub fn is_leftover(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .is_some_and(|r| r.len() == 6 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Remove the temp files a killed write left in `dir` (and below it, when `deep`).
/// Only regular files named like ours are touched. Returns what was removed.
pub fn remove_leftovers(dir: &Path, deep: bool) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() && deep {
            out.extend(remove_leftovers(&e.path(), deep));
        } else if (t.is_file() || t.is_symlink())
            && e.file_name().to_str().is_some_and(is_leftover)
            && std::fs::remove_file(e.path()).is_ok()
        {
            out.push(e.path());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.key");
        write_new(&p, b"one", KEY_MODE).unwrap();
        let e = write_new(&p, b"two", KEY_MODE).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn leftovers_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let keep = ["ca.crt", ".trustform-notmine.txt", ".trustform-ab"];
        for k in keep {
            std::fs::write(dir.path().join(k), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join(".trustform-Ab3xY9"), b"torn").unwrap();
        std::fs::write(dir.path().join("sub/.trustform-q1w2e3"), b"torn").unwrap();
        assert_eq!(remove_leftovers(dir.path(), false).len(), 1);
        assert_eq!(remove_leftovers(dir.path(), true).len(), 1);
        for k in keep {
            assert!(dir.path().join(k).exists(), "{k} is kept");
        }
    }

    #[test]
    fn writes_with_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/key.pem");
        write(&p, b"one", KEY_MODE).unwrap();
        write(&p, b"two", KEY_MODE).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
