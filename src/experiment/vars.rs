//! Values from outside the file (issue #15): `${env:NAME}` (the environment) and `${var:NAME}`
//! (`--var NAME=VALUE`, `--var-file FILE`) in experiment and game-day files, and `$${` for a
//! literal `${`.
//!
//! Substituted at the scalar level, before the file is parsed into its types: the YAML events
//! give each scalar's exact place in the text, and a scalar that holds a reference is rewritten
//! there with its value *encoded for its style* (a plain scalar whose value stays a plain
//! scalar is written as is, so `expect_status: ${var:CODE}` is still a number; anything else
//! becomes a double-quoted scalar; inside a `|`/`>` block the value is indented like the block).
//! A value can therefore never change the file's structure (a value holding `\n  faults:` is a
//! string, not a new key). Each rewrite is an [`Edit`], so every diagnostic of the later stages,
//! which read the rewritten text, is mapped back to the line and column the author wrote
//! ([`Substituted::locate`]). Resolved before validation, so a value is checked like any text.
//!
//! Secrets: every value from the environment, and every value marked secret (a `--var-file`
//! entry `NAME: { secret: VALUE }`, or a name that reads like one: token, key, secret, password,
//! auth), is registered with [`crate::redact::register_secret`] when used, so it never reaches a
//! report, the terminal or an error message.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use granit_parser::{Event, Parser, ScalarStyle};

use super::diagnostic::{Diagnostic, ExperimentError};

/// Where a variable's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarSource {
    /// `--var NAME=VALUE`.
    Flag,
    /// A `--var-file`.
    File,
}

#[derive(Debug, Clone)]
struct Var {
    value: String,
    secret: bool,
}

/// Why a `--var` flag cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VarsError {
    /// `--var` without `=`, or with a name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("--var {arg:?}: {reason}")]
    BadFlag {
        /// The flag's argument, with its value left out.
        arg: String,
        /// What is wrong.
        reason: String,
    },
    /// A `--var-file` could not be read or is not a mapping of names to values.
    #[error(transparent)]
    File(#[from] ExperimentError),
}

/// The variables of a run: `--var` and `--var-file` values, and the environment.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    vars: BTreeMap<String, Var>,
    /// The environment to read `${env:NAME}` from; `None`: the process's.
    env: Option<BTreeMap<String, String>>,
}

/// Is `name` a variable name: `[A-Za-z_][A-Za-z0-9_]*`?
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

impl Vars {
    /// No `--var`; `${env:NAME}` reads the process environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `${env:NAME}` from `env` instead of the process environment (tests).
    pub fn with_env(mut self, env: BTreeMap<String, String>) -> Self {
        self.env = Some(env);
        self
    }

    /// Sets a variable; a later value of the same name replaces an earlier one. `secret`
    /// values (and values whose name reads like a secret) are never written anywhere.
    pub fn set(&mut self, name: &str, value: &str, secret: bool) {
        let secret = secret || crate::redact::is_secret_header(name);
        self.vars.insert(
            name.to_string(),
            Var {
                value: value.to_string(),
                secret,
            },
        );
    }

    /// A `--var NAME=VALUE` argument.
    pub fn set_flag(&mut self, arg: &str) -> Result<(), VarsError> {
        let Some((name, value)) = arg.split_once('=') else {
            return Err(VarsError::BadFlag {
                arg: arg.to_string(),
                reason: "expected NAME=VALUE".into(),
            });
        };
        if !is_name(name) {
            return Err(VarsError::BadFlag {
                arg: format!("{name}=..."),
                reason: "a name is letters, digits and '_', not starting with a digit".into(),
            });
        }
        self.set(name, value, false);
        Ok(())
    }

    /// Reads a `--var-file`: a YAML or JSON mapping of names to values (strings, numbers or
    /// booleans), where `NAME: { secret: VALUE }` marks a secret. A missing, empty or malformed
    /// file is an error located in that file.
    pub fn load_file(&mut self, path: &Path) -> Result<(), VarsError> {
        let text = super::parse::read_text(path)?;
        let invalid = |diagnostics| ExperimentError::Invalid {
            path: path.to_path_buf(),
            diagnostics,
        };
        let file: VarFile = super::parse::parse_yaml(&text).map_err(|d| invalid(vec![d]))?;
        let mut problems = Vec::new();
        for (name, value) in file.0 {
            if !is_name(&name) {
                problems.push(Diagnostic {
                    line: name.line,
                    column: name.column,
                    field: name.value.clone(),
                    message: "a variable name is letters, digits and '_', not starting with \
                              a digit"
                        .into(),
                    snippet: None,
                });
                continue;
            }
            match value {
                FileValue::Plain(v) => self.set(&name, &v.into_string(), false),
                FileValue::Secret { secret } => self.set(&name, &secret.into_string(), true),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(invalid(problems).into())
        }
    }

    fn env_var(&self, name: &str) -> Option<String> {
        match &self.env {
            Some(env) => env.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }

    /// Resolves one reference's inside (`env:NAME`, `var:NAME`): its value and whether it is
    /// secret, or what is wrong.
    fn resolve(&self, inner: &str) -> Result<(String, bool), String> {
        let (ns, name) = match inner.split_once(':') {
            Some((ns @ ("env" | "var"), name)) => (ns, name),
            _ => {
                let hint = if is_name(inner) {
                    format!(" (`${{var:{inner}}}` or `${{env:{inner}}}`?)")
                } else {
                    String::new()
                };
                return Err(format!(
                    "`${{{inner}}}` is not a reference: write `${{var:NAME}}` or \
                     `${{env:NAME}}`{hint}, or `$${{` for a literal `${{`"
                ));
            }
        };
        if !is_name(name) {
            return Err(format!(
                "`${{{inner}}}`: `{name}` is not a name (letters, digits and '_', not starting \
                 with a digit)"
            ));
        }
        if ns == "env" {
            return match self.env_var(name) {
                Some(v) => Ok((v, true)),
                None => Err(format!("environment variable `{name}` is not set")),
            };
        }
        match self.vars.get(name) {
            Some(v) => Ok((v.value.clone(), v.secret)),
            None => {
                let known = if self.vars.is_empty() {
                    "no variable is set".to_string()
                } else {
                    format!(
                        "set: {}",
                        self.vars.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                };
                Err(format!(
                    "variable `{name}` is not set ({known}): pass `--var {name}=VALUE` or put \
                     it in a `--var-file`"
                ))
            }
        }
    }

    /// Substitutes every reference in the scalars of `text`. Errors (an unset name, a
    /// malformed reference) are all reported at once, each at the line and column of its
    /// reference. Text that is not YAML is returned as it is, for the parser to locate its
    /// syntax error. Secret values used are registered for redaction.
    pub fn substitute(&self, text: &str) -> Result<Substituted, Vec<Diagnostic>> {
        let mut out = Substituted {
            text: String::with_capacity(text.len()),
            edits: Vec::new(),
            original: text.to_string(),
        };
        if !text.contains("${") {
            out.text = text.to_string();
            return Ok(out);
        }
        let mut problems = Vec::new();
        let mut replacements: Vec<(Range<usize>, String)> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Some(event) = parser.next_event() {
            let Ok((event, span)) = event else {
                // A syntax error: the parser of the next stage reports it, located (unless a
                // reference explains it better).
                if !problems.is_empty() {
                    return Err(problems);
                }
                out.text = text.to_string();
                return Ok(out);
            };
            let Event::Scalar(value, style, _, _) = event else {
                continue;
            };
            let Some(range) = span.byte_range() else {
                continue;
            };
            let Some(source) = text.get(range.clone()) else {
                continue;
            };
            if style == ScalarStyle::Plain
                && source.ends_with('$')
                && text[range.end..].starts_with('{')
            {
                // `${` ends a plain scalar inside `{ }` or `[ ]`: say so rather than let the
                // value be read as `$`.
                problems.push(
                    self.problem(
                        text,
                        range.end - 1,
                        "inside `{ }` or `[ ]`, a value with a reference must be quoted: write \
                     \"${...}\""
                            .into(),
                    ),
                );
                continue;
            }
            if !source.contains("${") {
                continue;
            }
            match style {
                ScalarStyle::Literal | ScalarStyle::Folded => {
                    // Inside a block, the source is the value: rewrite each reference in
                    // place, a multi-line value indented like the block.
                    let line_start = text[..range.start].rfind('\n').map_or(0, |i| i + 1);
                    let indent = " ".repeat(text[line_start..range.start].chars().count());
                    for piece in scan(source) {
                        match piece {
                            Piece::Ref { at, len, inner } => match self.resolve(inner) {
                                Ok((v, secret)) => {
                                    if secret {
                                        crate::redact::register_secret(&v);
                                    }
                                    let v = v.replace('\n', &format!("\n{indent}"));
                                    let start = range.start + at;
                                    replacements.push((start..start + len, v));
                                }
                                Err(m) => problems.push(self.problem(text, range.start + at, m)),
                            },
                            Piece::Escape { at } => {
                                let start = range.start + at;
                                replacements.push((start..start + 3, "${".into()));
                            }
                            Piece::Bad { at, message } => {
                                problems.push(self.problem(text, range.start + at, message))
                            }
                        }
                    }
                }
                _ => {
                    // Errors are located in the source; the value is rebuilt from the parsed
                    // value (escapes decoded, lines folded).
                    let mut failed = false;
                    for piece in scan(source) {
                        match piece {
                            Piece::Ref { at, inner, .. } => {
                                if let Err(m) = self.resolve(inner) {
                                    failed = true;
                                    problems.push(self.problem(text, range.start + at, m));
                                }
                            }
                            Piece::Bad { at, message } => {
                                failed = true;
                                problems.push(self.problem(text, range.start + at, message));
                            }
                            Piece::Escape { .. } => {}
                        }
                    }
                    if failed {
                        continue;
                    }
                    let Ok(new_value) = self.expand(&value) else {
                        // Written with escapes that spell a reference only once decoded:
                        // located at the scalar.
                        problems.push(self.problem(
                            text,
                            range.start,
                            "a reference here is malformed once the escapes are decoded".into(),
                        ));
                        continue;
                    };
                    let encoded = if style == ScalarStyle::Plain && plain_safe(&new_value) {
                        new_value
                    } else {
                        serde_json::to_string(&new_value).unwrap_or_default()
                    };
                    replacements.push((range, encoded));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        replacements.sort_by_key(|(r, _)| r.start);
        let mut pos = 0;
        for (range, new) in replacements {
            if range.start < pos {
                continue;
            }
            out.text.push_str(&text[pos..range.start]);
            let new_start = out.text.len();
            out.text.push_str(&new);
            out.edits.push(Edit {
                original: range.clone(),
                new: new_start..out.text.len(),
            });
            pos = range.end;
        }
        out.text.push_str(&text[pos..]);
        Ok(out)
    }

    /// A value with its references replaced (secrets registered), `$${` made `${`.
    fn expand(&self, value: &str) -> Result<String, String> {
        let mut out = String::with_capacity(value.len());
        let mut pos = 0;
        for piece in scan(value) {
            match piece {
                Piece::Ref { at, len, inner } => {
                    out.push_str(&value[pos..at]);
                    let (v, secret) = self.resolve(inner)?;
                    if secret {
                        crate::redact::register_secret(&v);
                    }
                    out.push_str(&v);
                    pos = at + len;
                }
                Piece::Escape { at } => {
                    out.push_str(&value[pos..at]);
                    out.push_str("${");
                    pos = at + 3;
                }
                Piece::Bad { message, .. } => return Err(message),
            }
        }
        out.push_str(&value[pos..]);
        Ok(out)
    }

    fn problem(&self, text: &str, offset: usize, message: String) -> Diagnostic {
        let (line, column) = line_col(text, offset);
        Diagnostic {
            line,
            column,
            field: String::new(),
            message,
            snippet: super::parse::snippet_at(text, line, column),
        }
    }
}

/// A `--var-file`: its entries in order, each name with its place.
struct VarFile(Vec<(super::Located<String>, FileValue)>);

impl<'de> serde::Deserialize<'de> for VarFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = VarFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of variable names to values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<VarFile, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = m.next_entry()? {
                    entries.push(entry);
                }
                Ok(VarFile(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// A `--var-file` value: a scalar, or `{ secret: scalar }`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum FileValue {
    Plain(Scalar),
    Secret { secret: Scalar },
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Str(s) => s,
        }
    }
}

enum Piece<'a> {
    /// `${inner}` at byte `at`, `len` bytes long.
    Ref {
        at: usize,
        len: usize,
        inner: &'a str,
    },
    /// `$${` at byte `at`: a literal `${`.
    Escape { at: usize },
    /// A `${` with no closing `}`.
    Bad { at: usize, message: String },
}

/// The references and escapes of `s`, in order.
fn scan(s: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut i = 0;
    while let Some(found) = s[i..].find("${") {
        let at = i + found;
        if at > 0 && s.as_bytes()[at - 1] == b'$' {
            pieces.push(Piece::Escape { at: at - 1 });
            i = at + 2;
            continue;
        }
        match s[at + 2..].find(['}', '\n']) {
            Some(end) if s.as_bytes()[at + 2 + end] == b'}' => {
                let inner = &s[at + 2..at + 2 + end];
                pieces.push(Piece::Ref {
                    at,
                    len: end + 3,
                    inner,
                });
                i = at + end + 3;
            }
            _ => {
                pieces.push(Piece::Bad {
                    at,
                    message: "`${` with no closing `}` on its line: write `${var:NAME}` or \
                              `${env:NAME}`, or `$${` for a literal `${`"
                        .into(),
                });
                i = at + 2;
            }
        }
    }
    pieces
}

/// Can `v` be written as a plain scalar and read back as the same text (or the number or
/// boolean it spells)?
fn plain_safe(v: &str) -> bool {
    !v.is_empty()
        && v.trim() == v
        && !v.starts_with([
            '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%',
            '@', '`',
        ])
        && !v.contains(": ")
        && !v.contains(" #")
        && !v.ends_with(':')
        && !v.contains(['[', ']', '{', '}', ',', '\n', '\r', '\t'])
        && !v.chars().any(char::is_control)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (u64, u64) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() as u64 + 1;
    (line, column)
}

/// Byte offset of 1-based `line` and `column` (in characters) in `text`, if there is one.
fn offset_of(text: &str, line: u64, column: u64) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut start = 0;
    for _ in 1..line {
        start += text[start..].find('\n')? + 1;
    }
    let rest = &text[start..];
    let line_end = rest.find('\n').unwrap_or(rest.len());
    let col = column.saturating_sub(1) as usize;
    let within = rest[..line_end]
        .char_indices()
        .nth(col)
        .map_or(line_end, |(i, _)| i);
    Some(start + within)
}

/// One rewritten stretch: bytes `original` of the file became bytes `new` of the text parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// In the file as written.
    pub original: Range<usize>,
    /// In the substituted text.
    pub new: Range<usize>,
}

/// A file's text with its references substituted, and the way back to the file's positions.
#[derive(Debug, Clone)]
pub struct Substituted {
    /// The text to parse.
    pub text: String,
    /// The rewrites, in order.
    pub edits: Vec<Edit>,
    original: String,
}

impl Substituted {
    /// Maps a diagnostic of the substituted text back to the file: its line and column (a
    /// place inside a substituted value is the start of the reference's scalar), a snippet of
    /// the file as written, and no secret value in its message.
    pub fn locate(&self, mut d: Diagnostic) -> Diagnostic {
        if !self.edits.is_empty()
            && let Some(new) = offset_of(&self.text, d.line, d.column)
        {
            let mut delta: isize = 0;
            let mut orig = None;
            for e in &self.edits {
                if new < e.new.start {
                    break;
                }
                if new < e.new.end {
                    orig = Some(e.original.start);
                    break;
                }
                delta += e.original.len() as isize - e.new.len() as isize;
            }
            let orig = orig.unwrap_or_else(|| (new as isize + delta).max(0) as usize);
            let (line, column) = line_col(&self.original, orig);
            d.line = line;
            d.column = column;
            if d.snippet.is_some() {
                d.snippet = super::parse::snippet_at(&self.original, line, column);
            }
        }
        d.message = crate::redact::redact_secrets(&d.message).into_owned();
        d.snippet = d
            .snippet
            .map(|s| crate::redact::redact_secrets(&s).into_owned());
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::new().with_env(BTreeMap::from([(
            "RATTLE_T_TOKEN".to_string(),
            "s3cr3t-from-env-7f1".to_string(),
        )]));
        v.set("HOST", "127.0.0.1:8080", false);
        v.set("CODE", "204", false);
        v.set("EVIL", "x\nfaults: [oops]", false);
        v
    }

    #[test]
    fn references_are_replaced_by_style() {
        let text = "a: http://${var:HOST}/x\nb: ${var:CODE}\nc: \"Bearer ${env:RATTLE_T_TOKEN}\"\n\
                    d: '${var:EVIL}'\ne: $${var:HOST} and $$x\nf: |\n  line ${var:EVIL}\n";
        let s = vars().substitute(text).unwrap();
        assert_eq!(
            s.text,
            "a: http://127.0.0.1:8080/x\nb: 204\nc: \"Bearer s3cr3t-from-env-7f1\"\n\
             d: \"x\\nfaults: [oops]\"\ne: \"${var:HOST} and $$x\"\nf: |\n  line x\n  faults: [oops]\n"
        );
        assert_eq!(
            crate::redact::redact_secrets("t=s3cr3t-from-env-7f1"),
            "t=<redacted>"
        );
    }

    #[test]
    fn unset_and_malformed_references_are_located() {
        let text =
            "a: 1\nb: \"x ${var:NOPE}\"\nc:   ${oops}\nd: ${env:RATTLE_T_UNSET_9}\ne: ${var:A\n";
        let problems = vars().substitute(text).unwrap_err();
        let at: Vec<(u64, u64)> = problems.iter().map(|d| (d.line, d.column)).collect();
        assert_eq!(at, vec![(2, 7), (3, 6), (4, 4), (5, 4)], "{problems:?}");
        assert!(problems[0].message.contains("`NOPE` is not set"));
        assert!(problems[1].message.contains("${var:oops}"));
        assert!(problems[2].message.contains("environment variable"));
        assert!(problems[3].message.contains("no closing"));
    }

    #[test]
    fn later_positions_map_back_to_the_file() {
        let text = "a: { u: \"${var:HOST}\", b: [1, 2] }\n";
        let s = vars().substitute(text).unwrap();
        // `b` in the substituted text, mapped back.
        let (line, column) = line_col(&s.text, s.text.find("b:").unwrap());
        let d = s.locate(Diagnostic {
            line,
            column,
            field: "a.b".into(),
            message: "m".into(),
            snippet: None,
        });
        assert_eq!((d.line, d.column), (1, text.find("b:").unwrap() as u64 + 1));
    }

    #[test]
    fn flags_and_files() {
        let mut v = Vars::new();
        assert!(v.set_flag("noequals").is_err());
        assert!(v.set_flag("1X=y").is_err());
        v.set_flag("X=a=b").unwrap();
        assert_eq!(v.resolve("var:X").unwrap(), ("a=b".to_string(), false));
        v.set_flag("API_TOKEN=zzz").unwrap();
        assert!(
            v.resolve("var:API_TOKEN").unwrap().1,
            "a secret-looking name"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]

        // No text (YAML punctuation, references, escapes, multi-byte characters) makes
        // substitution or the mapping back of any position panic.
        #[test]
        fn arbitrary_text_never_panics(
            s in "([a-z:# \"'|>\\[\\]{},\n-]|\\$\\{var:HOST\\}|\\$\\{|\\$\\$\\{|\\}|é){0,60}",
            line in 0u64..8,
            column in 0u64..40,
        ) {
            if let Ok(sub) = vars().substitute(&s) {
                let _ = sub.locate(Diagnostic {
                    line,
                    column,
                    field: String::new(),
                    message: String::new(),
                    snippet: Some(String::new()),
                });
            }
        }
    }
}
