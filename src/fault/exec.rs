//! `exec`: a fault injected and reverted by commands of the user's choosing, so that faults
//! another tool injects (a `kubectl apply` of a chaos object, a `tc` on a host, a feature flag
//! flipped through an API's CLI) are timed, measured, gated and reverted like rattle's own.
//!
//! Commands are argument vectors, executed directly and never through a shell: what the file
//! says is what runs, with no quoting to get wrong and nothing for a value to inject. Each
//! command runs in a process group of its own with a timeout; at the timeout the whole group is
//! killed (a shell script's children included) and the fault fails. The revert command, its
//! environment and its expected exit code are the revert token, journaled before the inject
//! command runs, so `rattle recover` runs the revert after a crash of the run; the revert must
//! therefore be safe to run when the inject never ran or ran twice (say so in the README).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{
    BoxFuture, Fault, FaultEnv, FaultError, Locality, ResolveCtx, Result, RevertToken, Target,
};
use crate::experiment::HumanDuration;

const KIND: &str = "exec";

/// Default timeout of each command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest timeout a command may have.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How much of a command's output is kept for an error message.
const OUTPUT_KEPT: u64 = 16 * 1024;

/// `exec`: runs `inject` when the fault fires and `revert` when it ends (after its `duration`,
/// on any exit of the run, or from `rattle recover` after a crash). Without `revert` it is
/// instantaneous and takes no `duration`. Commands are argument vectors, never shell strings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// The command that injects the fault, as an argument vector: `[kubectl, apply, -f, x.yaml]`.
    /// The program is looked up in PATH unless it contains a `/`.
    pub inject: Vec<String>,
    /// The command that reverts it, as an argument vector. It must be safe to run when the
    /// inject command failed or never ran (it also runs from `rattle recover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<Vec<String>>,
    /// Timeout of each command (default 30s, at most 1h). At the timeout the command's whole
    /// process group is killed and the fault fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Environment variables added to rattle's own for both commands.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory of both commands (default: the directory rattle runs in; the revert
    /// journaled for `rattle recover` keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The exit code that means success, for both commands (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_exit: Option<i32>,
}

/// One command as run, and as the revert token keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Command {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    dir: Option<PathBuf>,
    timeout_ms: u64,
    expect_exit: i32,
}

impl ExecSpec {
    /// The command as run and journaled. Its directory is made absolute (rattle's own when none
    /// is given), so `rattle recover`, started anywhere, runs the revert where the run would
    /// have: a relative `./revert.sh` or file argument means the same thing.
    fn command(&self, argv: &[String]) -> Command {
        let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from("."));
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let mut argv = argv.to_vec();
        // A relative program path (`./revert.sh`) is the one in `dir`, whoever runs it.
        if let Some(p) = argv.first_mut()
            && p.contains('/')
            && !p.starts_with('/')
        {
            *p = dir.join(&*p).to_string_lossy().into_owned();
        }
        Command {
            argv,
            env: self.env.clone(),
            dir: Some(dir),
            timeout_ms: u64::try_from(self.timeout().as_millis()).unwrap_or(u64::MAX),
            expect_exit: self.expect_exit.unwrap_or(0),
        }
    }

    fn timeout(&self) -> Duration {
        self.timeout.map(|t| t.get()).unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// Why `argv` (the field `field`) cannot run, if it cannot.
fn check_argv(field: &str, argv: &[String], dir: Option<&Path>) -> std::result::Result<(), String> {
    let Some(program) = argv.first() else {
        return Err(format!(
            "`{field}`: an empty command; give at least the program"
        ));
    };
    if program.is_empty() {
        return Err(format!("`{field}`: the program (first element) is empty"));
    }
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return Err(format!("`{field}`: argument {i} contains a NUL byte"));
    }
    let relative_to_dir = match dir {
        Some(d) if program.contains('/') && !program.starts_with('/') => {
            Some(d.join(program).to_string_lossy().into_owned())
        }
        _ => None,
    };
    if find_program(relative_to_dir.as_deref().unwrap_or(program)).is_none() {
        return Err(format!(
            "`{field}`: program {program:?} {}",
            if program.contains('/') {
                "is not an executable file"
            } else {
                "is not found in PATH"
            }
        ));
    }
    Ok(())
}

/// The executable `program` names: itself when it contains a `/`, else the first match in PATH.
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

/// An argument vector as one line for reports: each argument quoted when it needs it.
fn display(argv: &[String]) -> String {
    let shown: Vec<String> = argv
        .iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("{a:?}")
            }
        })
        .collect();
    let line = crate::redact::redact_urls_in(&shown.join(" ")).into_owned();
    if line.chars().count() > 200 {
        let mut cut: String = line.chars().take(199).collect();
        cut.push('…');
        cut
    } else {
        line
    }
}

impl Fault for ExecSpec {
    fn resolve<'a>(&'a self, _ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            self.validate().map_err(FaultError::InvalidSelection)?;
            let mut description = format!("runs {}", display(&self.inject));
            if let Some(r) = &self.revert {
                description.push_str(&format!("; reverts with {}", display(r)));
            }
            Ok(vec![Target {
                kind: "command".into(),
                id: self.inject[0].clone(),
                description,
            }])
        })
    }

    fn revert_token<'a>(
        &'a self,
        _env: &'a FaultEnv,
        _targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async move {
            match &self.revert {
                Some(argv) => Ok(Some(RevertToken::new(KIND, &self.command(argv))?)),
                None => Ok(None),
            }
        })
    }

    fn inject<'a>(
        &'a self,
        _env: &'a FaultEnv,
        _targets: &'a [Target],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.validate().map_err(FaultError::InvalidSelection)?;
            run("inject", &self.command(&self.inject)).await
        })
    }

    fn needs_duration(&self) -> bool {
        self.revert.is_some()
    }

    fn locality(&self) -> Locality<'_> {
        Locality::Local
    }

    fn validate(&self) -> std::result::Result<(), String> {
        check_argv("inject", &self.inject, self.dir.as_deref())?;
        if let Some(r) = &self.revert {
            check_argv("revert", r, self.dir.as_deref())?;
        }
        let t = self.timeout();
        if t.is_zero() || t > MAX_TIMEOUT {
            return Err(format!(
                "`timeout`: {}ms is out of range (more than 0, at most 1h)",
                t.as_millis()
            ));
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(format!(
                    "`env`: {name:?} is not a variable name (empty, or contains = or NUL)"
                ));
            }
        }
        // Values are never shown: they are where secrets go.
        if let Some(name) = self.env.iter().find(|(_, v)| v.contains('\0')).map(|e| e.0) {
            return Err(format!("`env.{name}`: the value contains a NUL byte"));
        }
        if let Some(dir) = &self.dir
            && !dir.is_dir()
        {
            return Err(format!("`dir`: {} is not a directory", dir.display()));
        }
        if let Some(code) = self.expect_exit
            && !(0..=255).contains(&code)
        {
            return Err(format!(
                "`expect_exit`: {code} is not an exit code (0 to 255)"
            ));
        }
        Ok(())
    }
}

/// Runs the revert command a token holds. Idempotence is the command's: rattle runs it once
/// per revert.
pub async fn revert(_env: &FaultEnv, token: &RevertToken) -> Result<()> {
    let cmd: Command = token.data()?;
    if cmd.argv.first().is_none_or(|p| p.is_empty()) {
        return Err(FaultError::InvalidSelection(
            "exec revert token without a command".into(),
        ));
    }
    run("revert", &cmd).await
}

/// Runs one command to its end or its timeout; an exit code other than the expected one, a
/// death by signal or the timeout is an error naming the command and quoting its stderr's end.
async fn run(what: &str, cmd: &Command) -> Result<()> {
    let shown = display(&cmd.argv);
    let fail = |m: String| FaultError::Command(format!("{what} command `{shown}` {m}"));
    let mut c = tokio::process::Command::new(&cmd.argv[0]);
    c.args(&cmd.argv[1..])
        .envs(&cmd.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &cmd.dir {
        c.current_dir(dir);
    }
    let mut child = c.spawn().map_err(|source| FaultError::Io {
        what: format!("starting the {what} command `{shown}`"),
        source,
    })?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let out = child.stdout.take().map(|o| tokio::spawn(keep(o)));
    let err = child.stderr.take().map(|e| tokio::spawn(keep(e)));
    let timeout = Duration::from_millis(cmd.timeout_ms);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => s.map_err(|source| FaultError::Io {
            what: format!("waiting for the {what} command `{shown}`"),
            source,
        })?,
        Err(_) => {
            if let Some(g) = pgid {
                let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
            }
            let _ = child.kill().await;
            return Err(fail(format!(
                "did not finish within {}ms (its process group was killed)",
                cmd.timeout_ms
            )));
        }
    };
    // What the command left running in its group would hold the pipes open: read what is
    // there, not until they close.
    let collect = |h: Option<tokio::task::JoinHandle<Vec<u8>>>| async move {
        match h {
            Some(h) => tokio::time::timeout(Duration::from_secs(1), h)
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    };
    let _stdout = collect(out).await;
    let stderr = collect(err).await;
    let code = status.code();
    if code == Some(cmd.expect_exit) {
        return Ok(());
    }
    let tail = tail(&stderr);
    let how = match code {
        Some(c) => format!("exited {c} (expected {})", cmd.expect_exit),
        None => "was killed by a signal".to_string(),
    };
    Err(fail(if tail.is_empty() {
        how
    } else {
        format!("{how}: {tail}")
    }))
}

/// Reads up to [`OUTPUT_KEPT`] bytes, then drains the rest.
async fn keep(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let _ = (&mut r).take(OUTPUT_KEPT).read_to_end(&mut kept).await;
    let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
    kept
}

/// The last few lines of output, trimmed, for an error message.
fn tail(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let t = text.trim();
    let start = t.char_indices().rev().nth(300).map(|(i, _)| i).unwrap_or(0);
    crate::redact::redact_urls_in(&t[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ExecSpec {
        serde_saphyr::from_str::<ExecSpec>(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn validation_names_the_field() {
        let err = |y: &str| spec(y).validate().err().unwrap_or_default();
        assert!(err("{ inject: [] }").starts_with("`inject`"));
        assert!(err("{ inject: [\"\"] }").starts_with("`inject`"));
        assert!(err("{ inject: [no-such-program-xyz] }").contains("not found in PATH"));
        assert!(err("{ inject: [/nonexistent/x] }").contains("not an executable"));
        assert!(err("{ inject: [true], revert: [] }").starts_with("`revert`"));
        assert!(err("{ inject: [true], timeout: 0s }").starts_with("`timeout`"));
        assert!(err("{ inject: [true], timeout: 2h }").starts_with("`timeout`"));
        assert!(err("{ inject: [true], env: { \"A=B\": x } }").starts_with("`env`"));
        assert!(err("{ inject: [true], dir: /nonexistent-dir }").starts_with("`dir`"));
        assert!(err("{ inject: [true], expect_exit: 300 }").starts_with("`expect_exit`"));
        assert_eq!(
            spec("{ inject: [true], revert: [false] }").validate(),
            Ok(())
        );
        assert!(spec("{ inject: [true], revert: [true] }").needs_duration());
        assert!(!spec("{ inject: [true] }").needs_duration());
    }

    #[tokio::test]
    async fn exit_codes_timeouts_and_env() {
        let ok = spec("{ inject: [sh, -c, 'test \"$X\" = y'], env: { X: y } }");
        assert!(ok.inject(&FaultEnv::new(), &[]).await.is_ok());
        let bad = spec("{ inject: [sh, -c, 'echo nope >&2; exit 3'] }");
        let e = bad
            .inject(&FaultEnv::new(), &[])
            .await
            .err()
            .map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("exited 3 (expected 0): nope"), "{e}");
        let expected = spec("{ inject: [sh, -c, 'exit 3'], expect_exit: 3 }");
        assert!(expected.inject(&FaultEnv::new(), &[]).await.is_ok());
        let slow = spec("{ inject: [sh, -c, 'sleep 30 & sleep 30'], timeout: 200ms }");
        let e = slow
            .inject(&FaultEnv::new(), &[])
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            e.unwrap_or_default()
                .contains("did not finish within 200ms")
        );
    }

    #[tokio::test]
    async fn a_relative_program_is_the_one_in_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rattle-exec-rel-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let script = dir.join("mark.sh");
        std::fs::write(&script, "#!/bin/sh\ntouch marked\n").unwrap_or_default();
        let _ = std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755));
        let s = spec(&format!(
            "{{ inject: [./mark.sh], dir: \"{}\" }}",
            dir.display()
        ));
        assert_eq!(s.validate(), Ok(()));
        assert!(s.inject(&FaultEnv::new(), &[]).await.is_ok());
        assert!(dir.join("marked").exists());
        let missing = spec(&format!(
            "{{ inject: [./nope.sh], dir: \"{}\" }}",
            dir.display()
        ));
        assert!(missing.validate().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_token_runs_the_revert() {
        let dir = std::env::temp_dir().join(format!("rattle-exec-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let marker = dir.join("reverted");
        let s = spec(&format!(
            "{{ inject: [true], revert: [touch, reverted], dir: \"{}\" }}",
            dir.display()
        ));
        let token = s.revert_token(&FaultEnv::new(), &[]).await.ok().flatten();
        let token = token.unwrap_or_else(|| panic!("a token"));
        let json = serde_json::to_string(&token).unwrap_or_default();
        let back: RevertToken = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert!(revert(&FaultEnv::new(), &back).await.is_ok());
        assert!(marker.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
