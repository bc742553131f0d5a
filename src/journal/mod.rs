//! The journal: what is broken right now, on disk, so that a crash of rattle itself (SIGKILL,
//! power loss, OOM) never leaves damage no one knows about.
//!
//! Before a fault that holds a state is injected, the runner writes one entry (what, where, how
//! to revert: the fault's [`RevertToken`]) as its own file, fsynced, then renamed into place and
//! the directory fsynced, so an entry is either complete or absent. Once the revert succeeds the
//! entry is removed. `rattle recover` reverts whatever entries are left by runs that are no longer
//! alive; an entry whose owner still runs is its owner's business and is never touched.
//!
//! The journal trusts only its owner (issue #19): `recover` acts on an entry with the rights of
//! whoever runs it, so an entry someone else could have written is a way to make root "restore"
//! what they chose. The state directory and its `journal/` are created 0700 and refused when they
//! are a symlink, owned by another uid, or writable by group or others ([`JournalError::Untrusted`]);
//! an entry file that is so is listed but never reverted ([`Found::entry`] says why). Entries are
//! read bounded ([`MAX_ENTRY_BYTES`]) and never panic the reader, whatever their bytes. A crash
//! mid-write leaves a hidden `.tmp` file named after its writer's pid: [`Journal::stale_temps`]
//! finds those whose writer is gone, [`Journal::clean_stale_temps`] removes them.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fault::{RevertToken, Target};
use crate::fsutil;

/// Largest entry file read (1 MiB): a real entry is a few KiB; a bigger one is not ours.
pub const MAX_ENTRY_BYTES: u64 = 1024 * 1024;

/// The longest file name Linux file systems take (NAME_MAX).
const NAME_MAX: usize = 255;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory could not be created or read.
    #[error("journal directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An entry could not be written, synced or removed.
    #[error("journal entry {}: {source}", path.display())]
    Entry {
        /// The entry's file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state directory (or the journal in it) could have been written by someone else: a
    /// symlink, owned by another uid, or writable by group or others. Nothing is read from it.
    #[error(
        "journal directory {}: refusing it: {why} (the journal must be its owner's alone: \
         `chmod go-w`, `chown`, or choose another --state-dir)",
        path.display()
    )]
    Untrusted {
        /// The directory.
        path: PathBuf,
        /// Why it is not trusted.
        why: String,
    },
    /// An experiment name too long for the entries' file names (NAME_MAX, 255 bytes).
    #[error(
        "experiment name of {len} bytes is too long for a journal entry's file name (at most \
         {max} bytes)"
    )]
    NameTooLong {
        /// The name's length.
        len: usize,
        /// The longest name that fits.
        max: usize,
    },
    /// An entry could not be serialized.
    #[error("serializing a journal entry: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Result alias of this module.
pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// One fault that is (or may be) applied right now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Format version of the entry.
    pub version: u32,
    /// The run that applied it: `<experiment>-<start unix ms>-<pid>`.
    pub run_id: String,
    /// The experiment's name.
    pub experiment: String,
    /// The experiment file.
    pub file: String,
    /// The fault's name.
    pub fault: String,
    /// Its targets.
    pub targets: Vec<Target>,
    /// How to revert it.
    pub token: RevertToken,
    /// When it was written (RFC 3339 UTC).
    pub written_at: String,
    /// The pid of the rattle process that owns it.
    pub owner_pid: u32,
    /// That process's start time (clock ticks since boot), to tell it from a later process
    /// given the same pid.
    pub owner_starttime: u64,
}

impl Entry {
    /// Is the run that wrote this entry still alive?
    pub fn owner_alive(&self) -> bool {
        process_starttime(self.owner_pid) == Some(self.owner_starttime)
    }
}

/// The start time of a live process (field 22 of /proc/<pid>/stat), if it is alive.
pub fn process_starttime(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The default state directory: `$XDG_STATE_HOME/rattle`, else `~/.local/state/rattle`, else
/// `/var/tmp/rattle-state`.
pub fn default_state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("rattle");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/state/rattle");
    }
    PathBuf::from("/var/tmp/rattle-state")
}

/// A journal in a state directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

/// An entry as found on disk: its file and its content (or why it could not be read).
#[derive(Debug)]
pub struct Found {
    /// The entry's file.
    pub path: PathBuf,
    /// The entry, or the reason it is unreadable.
    pub entry: std::result::Result<Entry, String>,
}

impl Journal {
    /// The journal under `state_dir` (its `journal/` subdirectory), created 0700 if needed;
    /// refused unless both directories are trusted (see the module's comment).
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("journal");
        for d in [state_dir, dir.as_path()] {
            // An existing one is judged as it is (a symlink is refused, not followed).
            if fs::symlink_metadata(d).is_err() {
                fsutil::create_private_dir(d).map_err(|source| JournalError::Dir {
                    path: d.to_path_buf(),
                    source,
                })?;
            }
            check_trusted(d)?;
        }
        Ok(Self { dir })
    }

    /// The journal under `state_dir` if it exists (trusted as in [`Journal::open`]), creating
    /// nothing: what a dry run looks at.
    pub fn open_existing(state_dir: &Path) -> Result<Option<Self>> {
        let dir = state_dir.join("journal");
        for d in [state_dir, dir.as_path()] {
            match fs::symlink_metadata(d) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => {
                    return Err(JournalError::Dir {
                        path: d.to_path_buf(),
                        source,
                    });
                }
                Ok(_) => check_trusted(d)?,
            }
        }
        Ok(Some(Self { dir }))
    }

    /// Checks that a run can write entries here (a probe file written and removed), so that a
    /// read-only or full state directory is found before any fault, not at the first entry.
    pub fn check_writable(&self) -> Result<()> {
        fsutil::probe_writable(&self.dir).map_err(|source| JournalError::Dir {
            path: self.dir.clone(),
            source,
        })
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks that the entries of a run of `experiment` get file names within NAME_MAX: a key
    /// is `<experiment>-<unix ms>-<pid>-<fault index>`, written as `.<key>.json.<pid>.tmp`.
    pub fn check_name(&self, experiment: &str) -> Result<()> {
        // "-" 13 digits "-" 7 digits "-" 5 digits, then ".json", "." 7 digits ".tmp", leading ".".
        const ROOM: usize = 1 + 13 + 1 + 7 + 1 + 5 + 5 + 1 + 7 + 4 + 1;
        let max = NAME_MAX - ROOM;
        if experiment.len() > max {
            return Err(JournalError::NameTooLong {
                len: experiment.len(),
                max,
            });
        }
        Ok(())
    }

    /// Writes `entry` durably under `key` (unique per run and fault). Returns its path.
    pub fn record(&self, key: &str, entry: &Entry) -> Result<PathBuf> {
        let name: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("{name}.json"));
        let json = serde_json::to_vec_pretty(entry)?;
        // A temporary file named after this pid, created new (never through a symlink), synced
        // and renamed over: complete or absent, and readable by its owner only.
        fsutil::write_atomic_mode(&path, &json, 0o600).map_err(|source| JournalError::Entry {
            path: path.clone(),
            source,
        })?;
        self.sync_dir()?;
        Ok(path)
    }

    /// Removes an entry once its fault is reverted. Removing an absent entry is fine.
    pub fn remove(&self, path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JournalError::Entry {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| JournalError::Dir {
                path: self.dir.clone(),
                source,
            })
    }

    /// Every entry on disk, sorted by file name.
    pub fn list(&self) -> Result<Vec<Found>> {
        let read = fs::read_dir(&self.dir).map_err(|source| JournalError::Dir {
            path: self.dir.clone(),
            source,
        })?;
        let mut found = Vec::new();
        for item in read {
            let item = item.map_err(|source| JournalError::Dir {
                path: self.dir.clone(),
                source,
            })?;
            let path = item.path();
            let is_entry = path.extension().is_some_and(|e| e == "json")
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !is_entry {
                continue;
            }
            let entry = read_entry(&path);
            found.push(Found { path, entry });
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }

    /// Entries left by runs that are no longer alive (plus unreadable ones): what `recover`
    /// would act on, and what `run` warns about.
    pub fn leftovers(&self) -> Result<Vec<Found>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|f| f.entry.as_ref().map(|e| !e.owner_alive()).unwrap_or(true))
            .collect())
    }

    /// Temporary files of entry writes whose writer is gone (a crash between create and
    /// rename): never entries, only litter. A write in progress (its pid alive) is not listed.
    pub fn stale_temps(&self) -> Result<Vec<PathBuf>> {
        let read = fs::read_dir(&self.dir).map_err(|source| JournalError::Dir {
            path: self.dir.clone(),
            source,
        })?;
        let mut stale = Vec::new();
        for item in read.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            if !(name.starts_with('.') && name.ends_with(".tmp")) {
                continue;
            }
            let alive = fsutil::temp_owner(&name)
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                stale.push(item.path());
            }
        }
        stale.sort();
        Ok(stale)
    }

    /// Removes [`Journal::stale_temps`]; returns what was removed.
    pub fn clean_stale_temps(&self) -> Result<Vec<PathBuf>> {
        let stale = self.stale_temps()?;
        for p in &stale {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(JournalError::Entry {
                        path: p.clone(),
                        source,
                    });
                }
            }
        }
        if !stale.is_empty() {
            self.sync_dir()?;
        }
        Ok(stale)
    }
}

/// Refuses a directory someone other than its owner could have written.
fn check_trusted(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(|source| JournalError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let why = fsutil::distrust(&meta).or_else(|| {
        (!meta.is_dir()).then(|| format!("it is {}, not a directory", fsutil::kind_of(&meta)))
    });
    match why {
        Some(why) => Err(JournalError::Untrusted {
            path: dir.to_path_buf(),
            why,
        }),
        None => Ok(()),
    }
}

/// Reads one entry file: trusted (see [`fsutil::distrust`]), a regular file, at most
/// [`MAX_ENTRY_BYTES`], and an [`Entry`]; otherwise why not. Never panics, whatever the bytes.
pub fn read_entry(path: &Path) -> std::result::Result<Entry, String> {
    let meta = fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if let Some(why) = fsutil::distrust(&meta) {
        return Err(format!("not trusted, never reverted: {why}"));
    }
    let bytes = fsutil::read_bounded(path, MAX_ENTRY_BYTES).map_err(|e| e.to_string())?;
    serde_json::from_slice::<Entry>(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(owner_pid: u32, owner_starttime: u64) -> Entry {
        Entry {
            version: 1,
            run_id: "t-1-2".into(),
            experiment: "t".into(),
            file: "t.yaml".into(),
            fault: "f".into(),
            targets: vec![],
            token: RevertToken {
                kind: "process-pause".into(),
                data: serde_json::json!([]),
            },
            written_at: "2026-01-01T00:00:00.000Z".into(),
            owner_pid,
            owner_starttime,
        }
    }

    #[test]
    fn record_list_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(dir.path()).expect("open");
        let me = std::process::id();
        let mine = entry(me, process_starttime(me).expect("own stat"));
        let p = j.record("run/1 f", &mine).expect("record");
        assert!(p.file_name().is_some_and(|n| n == "run_1_f.json"));
        let all = j.list().expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].entry.as_ref().ok(), Some(&mine));
        // Our own entry belongs to a live run: not a leftover.
        assert!(j.leftovers().expect("leftovers").is_empty());
        // An entry whose owner is gone (pid alive but another start time) is.
        j.record("dead", &entry(me, 1)).expect("record");
        std::fs::write(j.dir().join("junk.json"), b"{not json").expect("write");
        let left = j.leftovers().expect("leftovers");
        assert_eq!(left.len(), 2);
        assert!(left.iter().any(|f| f.entry.is_err()));
        j.remove(&p).expect("remove");
        j.remove(&p).expect("remove twice");
        assert_eq!(j.list().expect("list").len(), 2);
    }
}
