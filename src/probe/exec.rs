//! The `exec` steady-state probe: a command run at an interval whose exit code (and output, if
//! asked) must be the expected one, Litmus's cmdProbe. Owns its spec as written, its checks and
//! the run of one command.
//!
//! An argument vector, never a shell, unless `shell: true` (then the one string is `sh -c`'s
//! script): what the user wrote is what runs, with no quoting surprises. The command runs in its
//! own process group, so a timeout (or the run stopping its probes) kills everything it started,
//! not only its first process; after it exits, the group is killed too, so a stray background
//! child cannot hold its output open. Output is captured up to a bound (the rest is read and
//! dropped, so a chatty command never blocks on a full pipe, and never fills memory).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Probe, ProbeEnv};
use crate::experiment::HumanDuration;
use crate::fault::BoxFuture;

/// Output kept of each stream (64 KiB); the rest is read and dropped.
const MAX_OUTPUT: usize = 64 * 1024;

/// How much of the output a failing check quotes.
const QUOTE: usize = 200;

/// An exec probe: a command whose exit code and output must be the expected ones.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecProbe {
    /// The command: an argument vector (`["pg_isready", "-h", "db"]`), run without a shell;
    /// with `shell: true`, one string run by `sh -c`.
    pub command: CommandLine,
    /// Run `command` (one string) with `sh -c`.
    #[serde(default)]
    pub shell: bool,
    /// Kill the command (and everything it started) after this long: the check fails.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Expected exit code.
    #[serde(default)]
    pub expect_exit: i32,
    /// Standard output must contain this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_contains: Option<String>,
    /// Standard output must match this regular expression (Rust `regex` syntax; `^` and `$`
    /// match at the start and end of each line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_matches: Option<String>,
}

/// A command as written: an argument vector, or one string for a shell.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandLine {
    /// Program and arguments.
    Argv(Vec<String>),
    /// A script for `sh -c` (needs `shell: true`).
    Script(String),
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

impl ExecProbe {
    /// The program and its arguments as they will run.
    fn argv(&self) -> Result<Vec<String>, String> {
        match (&self.command, self.shell) {
            (CommandLine::Argv(v), false) => Ok(v.clone()),
            (CommandLine::Script(s), true) => Ok(vec!["sh".into(), "-c".into(), s.clone()]),
            (CommandLine::Argv(v), true) if v.len() == 1 => {
                Ok(vec!["sh".into(), "-c".into(), v[0].clone()])
            }
            (CommandLine::Argv(_), true) => {
                Err("`command`: with `shell: true`, give one string (the script sh -c runs)".into())
            }
            (CommandLine::Script(_), false) => Err(
                "`command`: a string would need a shell to split it: give an argument vector \
                 ([program, arg, ...]) or set `shell: true`"
                    .into(),
            ),
        }
    }
}

/// Is `program` something that can be run: a path to an executable file, or a name found on
/// `PATH`?
fn runnable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
}

/// Output is lines: `^` and `$` match at each line's start and end (so `ok$` matches `ok\n`).
fn regex(r: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(r)
        .multi_line(true)
        .size_limit(1 << 20)
        .build()
}

impl Probe for ExecProbe {
    fn describe(&self, interval: Duration) -> String {
        let cmd = match self.argv() {
            Ok(argv) => argv
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(" "),
            Err(_) => format!("{:?}", self.command),
        };
        let mut expects = vec![format!("exit {}", self.expect_exit)];
        if let Some(s) = &self.stdout_contains {
            expects.push(format!("stdout contains {s:?}"));
        }
        if let Some(r) = &self.stdout_matches {
            expects.push(format!("stdout matches /{r}/"));
        }
        format!(
            "run {cmd} expects {} within {}ms every {}ms",
            expects.join(", "),
            self.timeout.get().as_millis(),
            interval.as_millis()
        )
    }

    fn validate(&self) -> Result<(), String> {
        let argv = self.argv()?;
        let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
            return Err("`command`: names no program".into());
        };
        if argv.iter().any(|a| a.contains('\0')) {
            return Err("`command`: an argument holds a NUL byte".into());
        }
        if !runnable(program) {
            return Err(format!(
                "`command`: {program:?} is not an executable file{}",
                if program.contains('/') {
                    ""
                } else {
                    " on PATH"
                }
            ));
        }
        if !(0..=255).contains(&self.expect_exit) {
            return Err(format!(
                "`expect_exit`: {} is not an exit code (0 to 255)",
                self.expect_exit
            ));
        }
        if self.timeout.get().is_zero() {
            return Err("`timeout`: must be above zero".into());
        }
        if let Some(r) = &self.stdout_matches {
            regex(r).map_err(|e| format!("`stdout_matches`: not a valid regex: {e}"))?;
        }
        Ok(())
    }

    fn check<'a>(&'a self, _env: &'a ProbeEnv) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(check(self))
    }
}

/// Kills a process group when dropped: a check dropped mid-run (the run stopping its probes)
/// or timed out leaves nothing behind.
struct GroupGuard(Option<nix::unistd::Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH: the group is already gone.
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `r` to its end, keeping the first [`MAX_OUTPUT`] bytes.
async fn capture(mut r: impl AsyncRead + Unpin) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, truncated),
            Ok(n) => {
                let room = MAX_OUTPUT - kept.len();
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() > QUOTE {
        let mut start = text.len() - QUOTE;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        format!("...{:?}", &text[start..])
    } else {
        format!("{text:?}")
    }
}

async fn check(probe: &ExecProbe) -> Result<(), String> {
    let argv = probe.argv()?;
    let (program, args) = argv.split_first().ok_or("`command` names no program")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let mut guard = GroupGuard(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(nix::unistd::Pid::from_raw),
    );
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out_task = async {
        match stdout {
            Some(s) => capture(s).await,
            None => (Vec::new(), false),
        }
    };
    let err_task = async {
        match stderr {
            Some(s) => capture(s).await,
            None => (Vec::new(), false),
        }
    };
    let timeout = probe.timeout.get();
    let run = async {
        let status = child.wait().await;
        // The command is done: whatever it left running in its group goes too, so that its
        // output pipes close.
        guard.kill();
        status
    };
    let joined = async { tokio::join!(run, out_task, err_task) };
    let (status, (stdout, out_truncated), (stderr, _)) =
        match tokio::time::timeout(timeout, joined).await {
            Ok(r) => r,
            Err(_) => {
                // The guard (dropped on return) kills the group; kill_on_drop reaps the child.
                return Err(format!(
                    "timed out after {}ms (killed)",
                    timeout.as_millis()
                ));
            }
        };
    let status = status.map_err(|e| format!("waiting for {program:?}: {e}"))?;
    let mut failures = Vec::new();
    match status.code() {
        Some(code) if code == probe.expect_exit => {}
        Some(code) => failures.push(format!(
            "exit code {code}, expected {}{}",
            probe.expect_exit,
            if stderr.is_empty() {
                String::new()
            } else {
                format!(" (stderr: {})", quote(&stderr))
            }
        )),
        None => {
            use std::os::unix::process::ExitStatusExt;
            failures.push(format!(
                "killed by signal {}, expected exit code {}",
                status.signal().unwrap_or(0),
                probe.expect_exit
            ));
        }
    }
    let text = String::from_utf8_lossy(&stdout);
    let note = if out_truncated {
        format!(" (first {} KiB)", MAX_OUTPUT / 1024)
    } else {
        String::new()
    };
    if let Some(s) = &probe.stdout_contains
        && !text.contains(s.as_str())
    {
        failures.push(format!(
            "stdout {}{note} does not contain {s:?}",
            quote(&stdout)
        ));
    }
    if let Some(r) = &probe.stdout_matches {
        let re = regex(r).map_err(|e| format!("stdout_matches: {e}"))?;
        if !re.is_match(&text) {
            failures.push(format!(
                "stdout {}{note} does not match /{r}/",
                quote(&stdout)
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(v: serde_json::Value) -> ExecProbe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn commands_are_argument_vectors_unless_a_shell_is_asked_for() {
        let p = probe(serde_json::json!({"command": ["true", "a b"]}));
        assert_eq!(p.argv().unwrap(), vec!["true", "a b"]);
        assert!(p.validate().is_ok());
        let p = probe(serde_json::json!({"command": "echo hi | grep hi"}));
        assert!(p.validate().unwrap_err().contains("shell: true"));
        let p = probe(serde_json::json!({"command": "echo hi | grep hi", "shell": true}));
        assert_eq!(p.argv().unwrap()[..2], ["sh", "-c"]);
        let p = probe(serde_json::json!({"command": ["no-such-program-rattle-7"]}));
        assert!(
            p.validate()
                .unwrap_err()
                .contains("not an executable file on PATH")
        );
        let p = probe(serde_json::json!({"command": []}));
        assert!(p.validate().unwrap_err().contains("names no program"));
        let p = probe(serde_json::json!({"command": ["true"], "stdout_matches": "("}));
        assert!(p.validate().unwrap_err().starts_with("`stdout_matches`"));
        let p = probe(serde_json::json!({"command": ["true"], "expect_exit": 256}));
        assert!(p.validate().unwrap_err().contains("0 to 255"));
    }

    #[tokio::test]
    async fn exit_codes_and_output_are_checked() {
        let env = ProbeEnv::default();
        let ok = probe(
            serde_json::json!({"command": ["sh", "-c", "echo status=UP"],
            "stdout_matches": "status=(UP|OK)", "stdout_contains": "UP"}),
        );
        assert_eq!(ok.check(&env).await, Ok(()));
        let fails = probe(serde_json::json!({"command": ["sh", "-c", "echo down >&2; exit 1"]}));
        assert_eq!(
            fails.check(&env).await,
            Err("exit code 1, expected 0 (stderr: \"down\")".into())
        );
        let wrong =
            probe(serde_json::json!({"command": ["echo", "DOWN"], "stdout_contains": "UP"}));
        assert_eq!(
            wrong.check(&env).await,
            Err("stdout \"DOWN\" does not contain \"UP\"".into())
        );
        let expected_3 = probe(serde_json::json!({"command": "exit 3", "shell": true,
            "expect_exit": 3}));
        assert_eq!(expected_3.check(&env).await, Ok(()));
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let env = ProbeEnv::default();
        let p = probe(
            serde_json::json!({"command": ["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x; echo END"],
            "stdout_contains": "END"}),
        );
        let err = p.check(&env).await.unwrap_err();
        assert!(
            err.contains("(first 64 KiB) does not contain \"END\""),
            "{err}"
        );
    }
}
