//! Issue #19, the file system and the journal: input files are read bounded and must be regular
//! files, nothing a run writes follows a symlink or is left torn, everything a run writes is
//! checked before any fault, and the journal trusts only its owner (and its reader never panics,
//! whatever the bytes: a bounded property test).
//!
//! Tests that need root (chown to another uid, mounting a read-only or tiny tmpfs) skip with a
//! notice when they cannot; they run as root here and in CI.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proptest::prelude::*;
use rattle::journal::{Entry, Journal};

use crate::support::{proc_state, rattle, run_bounded_cmd, sleeper, write};

/// An uid that is not ours (nobody).
const OTHER_UID: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn run_cmd(args: &[&str], limit_s: u64) -> (i32, String, String) {
    let mut c = rattle();
    c.args(args);
    run_bounded_cmd(c, Duration::from_secs(limit_s))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// A tmpfs mounted at `dir` with `opts`, unmounted when dropped; `None` (with a notice) where
/// mounting is not permitted.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, opts: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("notice: skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn noop(dir: &Path, name: &str) -> PathBuf {
    write(
        dir,
        &format!("{name}.yaml"),
        &format!("version: 1\nname: {name}\nduration: 1s\nsteady_state: {{ warmup: 100ms }}\n"),
    )
}

/// An experiment pausing the sleeper marked `marker` from 300 ms, for 5 s (valid: checked, so
/// that a refusal below is the one tested, not a validation error).
fn pause(dir: &Path, marker: &str) -> PathBuf {
    let p = write(
        dir,
        "pause.yaml",
        &format!(
            "version: 1\nname: pause-it\nfaults:\n  - name: freeze\n    at: 300ms\n    duration: 5s\n    \
             process-pause: {{ match: \"^{marker} \", mode: all }}\nduration: 6s\n\
             steady_state: {{ warmup: 100ms }}\n"
        ),
    );
    let (code, _, err) = run_cmd(&["validate", s(&p)], 20);
    assert_eq!(code, 0, "{err}");
    p
}

/// Asserts that the process never entered the stopped state while `f` ran.
fn never_paused(pid: u32, f: impl FnOnce() -> (i32, String, String)) -> (i32, String, String) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = false;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                seen |= proc_state(pid) == Some('T');
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    };
    let out = f();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        !seen.join().expect("watcher"),
        "the target was paused: {out:?}"
    );
    out
}

#[test]
fn issue19_input_files_must_be_regular_and_are_read_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo.yaml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let gd = write(
        dir.path(),
        "gd.yaml",
        "version: 1\nname: gd\nexperiments: [/dev/zero]\n",
    );
    for (args, what) in [
        (vec!["validate", "/dev/zero"], "a character device"),
        (vec!["validate", s(&fifo)], "a FIFO"),
        (vec!["validate", s(dir.path())], "a directory"),
        (vec!["run", "/dev/zero", "--dry-run"], "a character device"),
        (vec!["gameday", "validate", s(&gd)], "a character device"),
        (vec!["report", "/dev/zero"], "a character device"),
    ] {
        // Each used to read forever (2.6 GB of /dev/zero): a few seconds is plenty.
        let (code, _, err) = run_cmd(&args, 20);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("not a regular file") && err.contains(what),
            "{args:?}: {err}"
        );
    }
    // The body file and the CA file of `rattle load` too (checked before any request).
    for flag in ["--body-file", "--cacert"] {
        let (code, _, err) = run_cmd(
            &[
                "load",
                "https://127.0.0.1:9/",
                flag,
                "/dev/zero",
                "-d",
                "1s",
            ],
            20,
        );
        assert_eq!(code, 2, "{flag}: {err}");
        assert!(err.contains("not a regular file"), "{flag}: {err}");
    }
    // A file that grows past the limit is refused at the limit, whatever its size said.
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; 1024 * 1024 + 1]).expect("write");
    let (code, _, err) = run_cmd(&["validate", s(&big)], 20);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("limited to 1 MiB"), "{err}");
}

#[test]
fn issue19_a_name_too_long_for_a_file_name_is_a_validation_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "n".repeat(300);
    let exp = noop(dir.path(), &name[..200]);
    // 200 bytes still fits: validates.
    let (code, _, err) = run_cmd(&["validate", s(&exp)], 20);
    assert_eq!(code, 0, "{err}");
    let exp = write(
        dir.path(),
        "long.yaml",
        &format!("version: 1\nname: {name}\nduration: 2s\n"),
    );
    let (code, _, err) = run_cmd(&["validate", s(&exp)], 20);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("long.yaml:2:7: field `name`: is 300 bytes long: at most 200"),
        "{err}"
    );
    // And `run` refuses it before anything: no report directory, no journal entry.
    let mut c = rattle();
    c.current_dir(dir.path())
        .args(["run", s(&exp), "--yes", "--state-dir"])
        .arg(dir.path().join("state"));
    let (code, _, err) = run_bounded_cmd(c, Duration::from_secs(20));
    assert_eq!(code, 2, "{err}");
    assert!(!dir.path().join("reports").exists());
}

#[test]
fn issue19_reports_never_follow_symlinks_and_leave_no_temp_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let victim = write(dir.path(), "victim", "keep me");
    std::os::unix::fs::symlink(&victim, out.join("report.json")).expect("symlink");
    let created = dir.path().join("created-by-rattle");
    std::os::unix::fs::symlink(&created, out.join("summary.md")).expect("symlink");
    let exp = noop(dir.path(), "noop");
    let (code, _, err) = run_cmd(
        &[
            "run",
            s(&exp),
            "--progress",
            "quiet",
            "--out",
            s(&out),
            "--state-dir",
            s(&dir.path().join("st")),
        ],
        60,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep me");
    assert!(!created.exists(), "a dangling symlink's target was created");
    for f in ["report.json", "summary.md"] {
        let meta = std::fs::symlink_metadata(out.join(f)).expect("written");
        assert!(meta.file_type().is_file(), "{f} is a regular file now");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("read"))
            .expect("a complete report.json");
    assert_eq!(json["verdict"], "pass");
    let names: Vec<String> = std::fs::read_dir(&out)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");

    // `rattle report --out` refuses a symlink rather than writing through or replacing it.
    let link = dir.path().join("summary-link.md");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let (code, _, err) = run_cmd(
        &[
            "report",
            s(&out.join("report.json")),
            "--format",
            "markdown",
            "--out",
            s(&link),
        ],
        20,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep me");
    // A plain file there is replaced whole.
    let plain = dir.path().join("plain.md");
    let (code, _, err) = run_cmd(
        &[
            "report",
            s(&out.join("report.json")),
            "--format",
            "markdown",
            "--out",
            s(&plain),
        ],
        20,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read_to_string(&plain)
            .expect("md")
            .contains("noop")
    );
}

#[test]
fn issue19_a_read_only_report_location_is_refused_before_any_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(_ro) = Mount::tmpfs(&dir.path().join("ro"), "ro,size=64k") else {
        return;
    };
    let marker = format!("rattle-test-ro-{}", std::process::id());
    let target = sleeper(&marker);
    let exp = pause(dir.path(), &marker);
    let out = dir.path().join("ro/out");
    let state = dir.path().join("st");
    let (code, stdout, err) = never_paused(target.0.id(), || {
        run_cmd(
            &[
                "run",
                s(&exp),
                "--yes",
                "--progress",
                "plain",
                "--out",
                s(&out),
                "--state-dir",
                s(&state),
            ],
            60,
        )
    });
    assert_eq!(code, 2, "{stdout}{err}");
    assert!(
        err.contains("the report directory cannot be written")
            && err.contains("ro/out")
            && err.contains("Read-only file system"),
        "{err}"
    );
    // Nothing was journaled either.
    let entries = std::fs::read_dir(state.join("journal")).map_or(0, |d| d.count());
    assert_eq!(entries, 0);

    // A read-only state directory: the journal cannot be written, nothing is injected.
    let Some(_ro_state) = Mount::tmpfs(&dir.path().join("ro-state"), "ro,size=64k") else {
        return;
    };
    let (code, stdout, err) = never_paused(target.0.id(), || {
        run_cmd(
            &[
                "run",
                s(&exp),
                "--yes",
                "--progress",
                "plain",
                "--out",
                s(&dir.path().join("out")),
                "--state-dir",
                s(&dir.path().join("ro-state")),
            ],
            60,
        )
    });
    assert_eq!(code, 2, "{stdout}{err}");
    assert!(err.contains("journal"), "{err}");
    drop(target);
}

#[test]
fn issue19_a_full_disk_leaves_no_torn_report_and_the_verdict_is_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = dir.path().join("full");
    let Some(_m) = Mount::tmpfs(&full, "size=64k") else {
        return;
    };
    let out = full.join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    // Fill the file system, then free one page: the preflight probe fits, the reports do not
    // all fit (report.html alone is several pages).
    let filler = full.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        while f.write_all(&[0u8; 4096]).is_ok() {}
        let _ = f.sync_all();
    }
    let len = std::fs::metadata(&filler).expect("filler").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .expect("filler")
        .set_len(len.saturating_sub(4096))
        .expect("truncate");
    let exp = noop(dir.path(), "noop");
    let (code, stdout, err) = run_cmd(
        &[
            "run",
            s(&exp),
            "--progress",
            "quiet",
            "--out",
            s(&out),
            "--state-dir",
            s(&dir.path().join("st")),
        ],
        60,
    );
    assert!(
        stdout.contains("PASS: noop"),
        "the verdict is printed: {stdout}{err}"
    );
    assert_eq!(code, 2, "an environment error: {stdout}{err}");
    assert!(
        err.contains("its report was not written") && err.contains("No space left on device"),
        "{err}"
    );
    assert!(
        err.contains(&out.display().to_string()),
        "the file is named: {err}"
    );
    for e in std::fs::read_dir(&out).expect("ls") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "temp file left: {name}");
        let len = e.metadata().expect("meta").len();
        assert!(len > 0, "{name} is empty");
        if name == "report.json" {
            let _: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(e.path()).expect("read"))
                    .expect("complete");
        }
    }
}

/// A journal entry for a process-pause of `pid`, owned by a dead run.
fn pause_entry(pid: u32) -> Entry {
    Entry {
        version: 1,
        run_id: "planted-1-1".into(),
        experiment: "planted".into(),
        file: "planted.yaml".into(),
        fault: "freeze".into(),
        targets: vec![],
        token: rattle::fault::RevertToken {
            kind: "process-pause".into(),
            data: serde_json::json!([{
                "pid": pid,
                "starttime": rattle::journal::process_starttime(pid).expect("alive"),
            }]),
        },
        written_at: "2026-01-01T00:00:00.000Z".into(),
        owner_pid: 1,
        owner_starttime: 12_345_678,
    }
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), None).expect("chown");
}

#[test]
fn issue19_the_journal_trusts_only_its_owner() {
    if !is_root() {
        eprintln!("notice: skipped: needs root to chown to another uid");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("rattle-test-trust-{}", std::process::id());
    let target = sleeper(&marker);
    let exp = pause(dir.path(), &marker);
    let out = dir.path().join("out");

    // A state directory someone else made (as anyone can under /var/tmp): refused, nothing
    // injected; a group/world-writable one and a symlink likewise.
    let theirs = dir.path().join("theirs");
    std::fs::create_dir_all(theirs.join("journal")).expect("mkdir");
    chown(&theirs, OTHER_UID);
    let open = dir.path().join("open");
    std::fs::create_dir_all(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).expect("symlink");
    for (state, why) in [
        (&theirs, "owned by uid 65534"),
        (&open, "writable by anyone"),
        (&link, "symbolic link"),
    ] {
        let (code, _, err) = never_paused(target.0.id(), || {
            run_cmd(
                &[
                    "run",
                    s(&exp),
                    "--yes",
                    "--progress",
                    "plain",
                    "--out",
                    s(&out),
                    "--state-dir",
                    s(state),
                ],
                60,
            )
        });
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("refusing it") && err.contains(why), "{err}");
        let (code, _, err) = run_cmd(&["recover", "--yes", "--state-dir", s(state)], 20);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(why), "{err}");
    }
    assert!(!dir.path().join("elsewhere").exists());

    // A state directory rattle creates is 0700 and ours.
    let mine = dir.path().join("a/b/mine");
    let (code, _, err) = run_cmd(&["recover", "--yes", "--state-dir", s(&mine)], 20);
    assert_eq!(code, 0, "{err}");
    for d in [mine.clone(), mine.join("journal")] {
        let meta = std::fs::metadata(&d).expect("created");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{}", d.display());
        assert_eq!(meta.uid(), 0);
    }

    // An entry planted by another uid (or writable by others, or a symlink) in a trusted
    // journal is listed, never reverted: the paused target stays paused, exit 4.
    let journal = Journal::open(&mine).expect("journal");
    kill(Pid::from_raw(target.0.id() as i32), Signal::SIGSTOP).expect("stop");
    crate::support::wait_for_state(target.0.id(), 'T', "stopped by the test");
    let planted = journal
        .record("planted-1-1-0", &pause_entry(target.0.id()))
        .expect("plant");
    let real = std::fs::read(&planted).expect("read");
    type Spoil = Box<dyn Fn(&Path)>;
    let cases: [(&str, Spoil); 3] = [
        (
            "owned by uid 65534",
            Box::new(|p: &Path| chown(p, OTHER_UID)),
        ),
        (
            "writable by its group",
            Box::new(|p: &Path| {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o660)).expect("chmod")
            }),
        ),
        (
            "symbolic link",
            Box::new(|p: &Path| {
                let aside = p.with_extension("aside");
                std::fs::rename(p, &aside).expect("rename");
                std::os::unix::fs::symlink(&aside, p).expect("symlink");
            }),
        ),
    ];
    for (why, spoil) in cases {
        spoil(&planted);
        let (code, stdout, err) = run_cmd(&["recover", "--yes", "--state-dir", s(&mine)], 20);
        assert_eq!(code, 4, "{stdout}{err}");
        assert!(
            stdout.contains("will not be reverted") && stdout.contains(why),
            "{stdout}"
        );
        assert!(err.contains("untrusted") && err.contains(why), "{err}");
        assert_eq!(proc_state(target.0.id()), Some('T'), "{why}: still paused");
        assert!(
            std::fs::symlink_metadata(&planted).is_ok(),
            "kept for a human"
        );
        let _ = std::fs::remove_file(&planted);
        let _ = std::fs::remove_file(planted.with_extension("aside"));
        std::fs::write(&planted, &real).expect("restore");
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    // The same entry, ours: reverted.
    let (code, stdout, err) = run_cmd(&["recover", "--yes", "--state-dir", s(&mine)], 20);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(crate::support::resumed(target.0.id()), "{stdout}");
}

#[test]
fn issue19_torn_journal_writes_are_cleaned_and_dry_run_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A dry run on a state directory that does not exist creates none.
    let none = dir.path().join("none");
    let (code, stdout, err) = run_cmd(&["recover", "--dry-run", "--state-dir", s(&none)], 20);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("nothing to recover"), "{stdout}");
    assert!(
        !none.exists(),
        "recover --dry-run created {}",
        none.display()
    );

    // Torn writes of crashed runs: the old name (no pid) and a pid that is not alive. A write
    // in progress (this process's pid) is left alone.
    let state = dir.path().join("st");
    let journal = Journal::open(&state).expect("journal");
    let old = write(journal.dir(), ".r-1-2-0.json.tmp", "{\"version\": 1, \"ru");
    let dead = write(journal.dir(), ".r-1-3-0.json.4194305.tmp", "");
    let live = write(
        journal.dir(),
        &format!(".r-1-4-0.json.{}.tmp", std::process::id()),
        "{",
    );
    let (code, stdout, err) = run_cmd(&["recover", "--dry-run", "--state-dir", s(&state)], 20);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains(".r-1-2-0.json.tmp: torn write of a crashed run, would be removed")
            && stdout.contains(".r-1-3-0.json.4194305.tmp"),
        "{stdout}"
    );
    assert!(old.exists() && dead.exists(), "a dry run removes nothing");
    let (code, stdout, err) = run_cmd(&["recover", "--yes", "--state-dir", s(&state)], 20);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(!old.exists() && !dead.exists(), "{stdout}");
    assert!(live.exists(), "a write in progress is not touched");
    assert!(stdout.contains("removed"), "{stdout}");

    // A run cleans them too, before it starts.
    let again = write(journal.dir(), ".r-1-5-0.json.tmp", "x");
    let exp = noop(dir.path(), "noop");
    let (code, _, err) = run_cmd(
        &[
            "run",
            s(&exp),
            "--progress",
            "plain",
            "--out",
            s(&dir.path().join("out")),
            "--state-dir",
            s(&state),
        ],
        60,
    );
    assert_eq!(code, 0, "{err}");
    assert!(!again.exists());
    assert!(err.contains("torn journal write"), "{err}");
}

/// A valid entry's JSON, to tear and corrupt.
fn valid_json() -> Vec<u8> {
    let mut e = pause_entry(std::process::id());
    e.owner_pid = 4_194_305; // above pid_max: never alive
    serde_json::to_vec_pretty(&e).expect("json")
}

/// What the journal reader makes of `bytes` as an entry file: never a panic; an entry only when
/// the bytes are one.
fn read_back(bytes: &[u8]) -> Result<Entry, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(dir.path()).expect("journal");
    let p = j.dir().join("fuzz.json");
    std::fs::write(&p, bytes).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let found = j.list().expect("list");
    assert_eq!(found.len(), 1);
    let left = j.leftovers().expect("leftovers");
    let r = found.into_iter().next().expect("one").entry;
    // Anything unreadable, or owned by a dead run, is a leftover: recover lists it, and only
    // reverts what parsed as an entry.
    assert_eq!(left.len(), 1);
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Torn entries (a crash mid-write without the rename, or a file system that lost the tail)
    /// never read as entries.
    #[test]
    fn issue19_journal_reader_torn_entries(cut in 0usize..10_000) {
        let json = valid_json();
        let cut = cut % json.len();
        let r = read_back(&json[..cut]);
        prop_assert!(r.is_err(), "a torn entry read as {r:?}");
    }

    /// Hostile bytes: random, invalid UTF-8 spliced into a real entry, or a real entry with a
    /// field of the wrong type: never a panic, and an entry only if it parses as one.
    #[test]
    fn issue19_journal_reader_hostile_bytes(
        junk in proptest::collection::vec(any::<u8>(), 0..2048),
        pos in 0usize..10_000,
        mode in 0u8..3,
    ) {
        let json = valid_json();
        let bytes = match mode {
            0 => junk,
            1 => {
                let pos = pos % json.len();
                let mut b = json[..pos].to_vec();
                b.extend_from_slice(&junk);
                b.extend_from_slice(&json[pos..]);
                b
            }
            _ => {
                let mut v: serde_json::Value = serde_json::from_slice(&json).expect("json");
                let keys = ["version", "run_id", "token", "owner_pid", "owner_starttime", "targets"];
                let key = keys[pos % keys.len()];
                v[key] = match junk.first().copied().unwrap_or(0) % 4 {
                    0 => serde_json::json!(null),
                    1 => serde_json::json!(String::from_utf8_lossy(&junk)),
                    2 => serde_json::json!(-1),
                    _ => serde_json::json!([junk]),
                };
                serde_json::to_vec(&v).expect("json")
            }
        };
        let r = read_back(&bytes);
        if let Ok(e) = &r {
            let parsed = serde_json::from_slice::<Entry>(&bytes).ok();
            prop_assert_eq!(parsed.as_ref(), Some(e));
        }
    }
}

#[test]
fn issue19_journal_reader_huge_and_odd_files() {
    // Over the bound: refused after reading at most 1 MiB + 1 byte.
    let mut huge = valid_json();
    huge.extend(std::iter::repeat_n(b' ', 1024 * 1024));
    let r = read_back(&huge);
    assert!(
        r.as_ref().is_err_and(|e| e.contains("larger than")),
        "{r:?}"
    );
    // A FIFO or a directory named like an entry: never opened for reading, never hangs.
    let dir = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(dir.path()).expect("journal");
    assert!(
        Command::new("mkfifo")
            .arg(j.dir().join("fifo.json"))
            .status()
            .expect("mkfifo")
            .success()
    );
    std::fs::create_dir(j.dir().join("dir.json")).expect("mkdir");
    std::fs::set_permissions(
        j.dir().join("fifo.json"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let found = j.list().expect("list");
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|f| f.entry.is_err()), "{found:?}");
}

#[test]
fn issue19_game_day_files_never_follow_symlinks() {
    let dir = tempfile::tempdir().expect("tempdir");
    noop(dir.path(), "exp");
    let victim = write(dir.path(), "victim", "keep me");
    // The combined report: symlinks at index.json and a dangling index.md are replaced.
    let gd = write(
        dir.path(),
        "gd.yaml",
        "version: 1\nname: gd\nexperiments: [exp.yaml]\npause: 0s\n",
    );
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    std::os::unix::fs::symlink(&victim, out.join("index.json")).expect("symlink");
    let created = dir.path().join("created-by-rattle");
    std::os::unix::fs::symlink(&created, out.join("index.md")).expect("symlink");
    let state = dir.path().join("st");
    let (code, stdout, err) = run_cmd(
        &[
            "gameday",
            "run",
            s(&gd),
            "--ignore-window",
            "--progress",
            "quiet",
            "--out",
            s(&out),
            "--state-dir",
            s(&state),
        ],
        60,
    );
    assert_eq!(code, 0, "{stdout}{err}");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep me");
    assert!(!created.exists(), "a dangling symlink's target was created");
    for f in ["index.json", "index.md"] {
        let meta = std::fs::symlink_metadata(out.join(f)).expect("written");
        assert!(meta.file_type().is_file(), "{f} is a regular file now");
    }
    // The scheduler's history: a symlink there is refused at the start (exit 2), never
    // appended through.
    let sched_gd = write(
        dir.path(),
        "sched.yaml",
        "version: 1\nname: sched\nexperiments: [exp.yaml]\npause: 0s\n\
         schedule: { cron: \"* * * * * *\" }\n",
    );
    let sched = dir.path().join("sched");
    std::fs::create_dir_all(&sched).expect("mkdir");
    std::os::unix::fs::symlink(&victim, sched.join("history.jsonl")).expect("symlink");
    let (code, stdout, err) = run_cmd(
        &[
            "schedule",
            s(&sched_gd),
            "--max-runs",
            "1",
            "--yes",
            "--out",
            s(&sched),
            "--state-dir",
            s(&state),
        ],
        60,
    );
    assert_eq!(code, 2, "{stdout}{err}");
    assert!(err.contains("history.jsonl"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep me");
}

#[test]
fn issue19_a_read_only_game_day_location_is_refused_before_any_experiment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(_ro) = Mount::tmpfs(&dir.path().join("ro"), "ro,size=64k") else {
        return;
    };
    let marker = format!("rattle-test-gd-ro-{}", std::process::id());
    let target = sleeper(&marker);
    pause(dir.path(), &marker);
    let gd = write(
        dir.path(),
        "gd.yaml",
        "version: 1\nname: gd\nexperiments: [pause.yaml]\npause: 0s\n",
    );
    let (code, stdout, err) = never_paused(target.0.id(), || {
        run_cmd(
            &[
                "gameday",
                "run",
                s(&gd),
                "--ignore-window",
                "--yes",
                "--progress",
                "quiet",
                "--out",
                s(&dir.path().join("ro")),
                "--state-dir",
                s(&dir.path().join("st")),
            ],
            60,
        )
    });
    assert_eq!(code, 2, "{stdout}{err}");
    assert!(err.contains("Read-only file system"), "{err}");
}
