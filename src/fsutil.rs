//! Safe file access for everything rattle reads from a user or writes for one (issue #19).
//!
//! Three rules, in one place so that every reader and writer follows them alike:
//! - **Reads are bounded by what is read, not by what the file system says**: [`read_bounded`]
//!   refuses anything that is not a regular file (a FIFO, `/dev/zero`, a directory) before
//!   reading it, and reads at most `limit + 1` bytes, so a file that grows or lies about its size
//!   costs at most its limit.
//! - **Writes never follow a symlink and never leave a torn file**: [`write_atomic`] writes a
//!   new temporary file beside the target (`create_new`, so no existing file or symlink is
//!   opened), fsyncs it, renames it over the target (a rename replaces a symlink, it does not
//!   write through it) and fsyncs the directory. On failure the temporary file is removed and the
//!   target is as it was: complete or absent, never 0 bytes. [`open_append`] opens an append-only
//!   log with `O_NOFOLLOW`.
//! - **A directory that holds what rattle will act on later is its owner's alone**:
//!   [`create_private_dir`] creates it 0700 and [`check_private`] refuses one that is a
//!   symlink, owned by another uid, or writable by group or others.
//!
//! Ground floor: no rattle imports; errors are `std::io::Error`s the callers wrap with the path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Reads a regular file of at most `limit` bytes. A non-regular file (FIFO, device, directory,
/// socket) is refused with [`io::ErrorKind::InvalidInput`] before any read; a file longer than
/// `limit` with [`io::ErrorKind::FileTooLarge`] after reading `limit + 1` bytes at most.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO without a writer must not hang before it can be refused.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", kind_of(&meta)),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text ([`io::ErrorKind::InvalidData`] when it is not).
pub fn read_text_bounded(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()))
}

/// What kind of file `meta` describes, for an error message.
pub fn kind_of(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_file() {
        "a regular file"
    } else {
        "an unknown kind of file"
    }
}

/// The temporary file [`write_atomic`] uses for `path`: hidden, beside it, named after the
/// writing process so that a leftover can be told from a write in progress.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// The pid a temporary file of [`temp_path`] was written by, if `name` is one.
pub fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    rest.rsplit_once('.')?.1.parse().ok()
}

/// Writes `content` to `path` atomically and durably, never following a symlink at `path`
/// (it is replaced) nor at the temporary file's place (refused: `create_new`). `mode` is the
/// new file's permission bits (before the umask).
pub fn write_atomic_mode(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    // Replacing a device, FIFO or directory by a file is never what was meant.
    if let Ok(meta) = fs::symlink_metadata(path)
        && !meta.file_type().is_file()
        && !meta.file_type().is_symlink()
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", kind_of(&meta)),
        ));
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // create_new failing with AlreadyExists means the name is not ours to remove.
        if e.kind() != io::ErrorKind::AlreadyExists {
            let _ = fs::remove_file(&tmp);
        }
        return Err(e);
    }
    sync_parent(path);
    Ok(())
}

/// [`write_atomic`] for a path a user named (`--out FILE`): a symlink there is refused
/// rather than replaced, since replacing, say, `/dev/stdout` as root would break the system.
pub fn write_new_or_regular(path: &Path, content: &[u8]) -> io::Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a symbolic link: refusing to write through it or replace it",
        ));
    }
    write_atomic(path, content)
}

/// [`write_atomic_mode`] with the usual 0666 (less the umask).
pub fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, content, 0o666)
}

/// fsyncs the directory holding `path`, so a rename in it survives a power loss. Best effort:
/// some file systems refuse to sync a directory, and the file itself is already synced.
fn sync_parent(path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Opens an append-only log (created if absent), refusing a symlink at `path`.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// Checks that `dir` can take new files: writes and removes a probe file (a permission check
/// alone would lie for root and for read-only mounts).
pub fn probe_writable(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!(".rattle-probe.{}.tmp", std::process::id()));
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&probe)?;
    let written = (&f).write_all(b"probe").and_then(|()| f.sync_all());
    drop(f);
    let removed = fs::remove_file(&probe);
    written.and(removed)
}

/// Creates `dir` and its missing parents with mode 0700 (an existing directory keeps its mode:
/// [`check_private`] judges it).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Why `path` cannot be trusted as something only the current user could have written: a
/// symlink, owned by another uid, or writable by group or others. `None` when it can.
pub fn distrust(meta: &fs::Metadata) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        return Some("it is a symbolic link".into());
    }
    if meta.uid() != me {
        return Some(format!(
            "it is owned by uid {}, not by uid {me}",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Some(format!(
            "it is writable by {} (mode {:04o})",
            if mode & 0o002 != 0 {
                "anyone"
            } else {
                "its group"
            },
            mode & 0o7777
        ));
    }
    None
}

/// Checks that the directory `dir` is trusted (see [`distrust`]): an error of kind
/// [`io::ErrorKind::PermissionDenied`] saying why not.
pub fn check_private(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if let Some(why) = distrust(&meta) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("not trusted: {why}"),
        ));
    }
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a directory ({})", kind_of(&meta)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_read_refuses_devices_fifos_and_long_files() {
        let err = read_bounded(Path::new("/dev/zero"), 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = read_bounded(&fifo, 16).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        let long = dir.path().join("long");
        fs::write(&long, [b'a'; 17]).unwrap();
        assert_eq!(
            read_bounded(&long, 16).unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
        assert_eq!(read_bounded(&long, 17).unwrap().len(), 17);
    }

    #[test]
    fn atomic_write_replaces_a_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("report.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(fs::read_to_string(&link).unwrap(), "new");
        let dangling = dir.path().join("summary.md");
        std::os::unix::fs::symlink(dir.path().join("created"), &dangling).unwrap();
        write_atomic(&dangling, b"x").unwrap();
        assert!(!dir.path().join("created").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3, "no temp left");
    }

    #[test]
    fn temp_names_carry_their_writer() {
        let p = temp_path(Path::new("/x/a.json"));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_owner(name), Some(std::process::id()));
        assert_eq!(temp_owner(".a.json.tmp"), None);
        assert_eq!(temp_owner("a.json"), None);
    }
}
