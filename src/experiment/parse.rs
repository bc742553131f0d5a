//! Reading input files (experiments, game days): syntax (serde-saphyr, with budgets against
//! alias bombs and deep nesting) and shape (serde, unknown fields are errors), every problem a
//! [`Diagnostic`] naming line, column and field path, so a user can go straight to the place.
//! JSON files are read by the same parser (JSON is YAML 1.2 flow syntax), so they get the same
//! locations. Meaning is checked above this, by `validate` (see [`super::load`]). A snippet
//! shows lines of the file, so it is redacted here, once, for every stage: secret header values
//! and URL credentials never reach an error message (issue #19).

use std::path::Path;

use super::diagnostic::{Diagnostic, ExperimentError};

/// Largest experiment file accepted (1 MiB): far above any real experiment, far below trouble.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads an input file (experiment, game day) as UTF-8 text, refusing files above 1 MiB and
/// anything that is not a regular file (issue #19: `/dev/zero` or a FIFO would be read forever,
/// whatever size the file system reports), reading at most 1 MiB + 1 byte.
pub fn read_text(path: &Path) -> Result<String, ExperimentError> {
    let bytes = crate::fsutil::read_bounded(path, MAX_FILE_BYTES).map_err(|source| {
        if source.kind() == std::io::ErrorKind::FileTooLarge {
            let size = std::fs::metadata(path)
                .map(|m| m.len())
                .unwrap_or(MAX_FILE_BYTES + 1)
                .max(MAX_FILE_BYTES + 1);
            ExperimentError::TooLarge {
                path: path.to_path_buf(),
                size,
            }
        } else {
            ExperimentError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    String::from_utf8(bytes).map_err(|e| ExperimentError::Invalid {
        path: path.to_path_buf(),
        diagnostics: vec![Diagnostic {
            line: 0,
            column: 0,
            field: String::new(),
            message: format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            snippet: None,
        }],
    })
}

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    // An experiment is small: refuse anything that looks like an attack long before it costs.
    budget.max_depth = 32;
    budget.max_aliases = 64;
    budget.max_anchors = 64;
    budget.max_nodes = 100_000;
    budget.max_events = 200_000;
    budget.max_total_scalar_bytes = 1024 * 1024;
    budget.max_documents = 1;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Syntax and shape of any input file format (experiment, game day): serde-saphyr with the
/// budgets above, unknown fields refused by the types, the error located by line, column and
/// field path.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Diagnostic> {
    if is_empty_document(text) {
        return Err(Diagnostic {
            line: 0,
            column: 0,
            field: String::new(),
            message: "the whole file is empty (nothing but blank lines or comments): expected a \
                      mapping of fields"
                .into(),
            snippet: None,
        });
    }
    let mut field = String::new();
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            field = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let bare = e.without_snippet().to_string();
        let mut message = strip_location_prefix(&bare).to_string();
        let rendered = e.to_string();
        // The rendered form is "error: <msg>\n --> <input>:l:c\n<snippet>": keep the snippet.
        let snippet = rendered
            .split_once('\n')
            .and_then(|(_, rest)| rest.split_once('\n'))
            .map(|(_, snippet)| redact_snippet(snippet.trim_end(), text))
            .filter(|s| !s.is_empty());
        // `Located` reads through serde-saphyr's Spanned, whose synthesized map adds a `value`
        // segment to the path; no field of the format is named `value`.
        let mut field = field
            .split('.')
            .filter(|seg| *seg != "value" && *seg != "?")
            .collect::<Vec<_>>()
            .join(".");
        // serde_path_to_error names the root `.` and a key it never entered `?`.
        if field == "." {
            field.clear();
        }
        let mut snippet = snippet;
        if let Some(key) = duplicate_key(&e) {
            // The path stops at the mapping; the duplicate is the key inside it. The hint about
            // the parser's options means nothing to the author of the file.
            let hint = DUPLICATE_KEY_HINT;
            message = match key {
                Some(key) => {
                    field = if field.is_empty() {
                        key.to_string()
                    } else {
                        format!("{field}.{key}")
                    };
                    format!("duplicate key `{key}`: each key may appear once in a mapping")
                }
                None => "duplicate key: each key may appear once in a mapping".into(),
            };
            snippet = snippet.map(|s| s.replace(hint, ""));
        }
        // An error message may quote a value of the file: never its URL credentials.
        let message = crate::redact::redact_urls_in(&message).into_owned();
        Diagnostic {
            line,
            column,
            field,
            message,
            snippet,
        }
    })
}

/// The tail serde-saphyr adds to a duplicate-key message.
const DUPLICATE_KEY_HINT: &str = ", set DuplicateKeyPolicy in Options if acceptable";

/// `Some(key)` when the error is a duplicate mapping key (the key when it is a scalar).
fn duplicate_key(e: &serde_saphyr::Error) -> Option<Option<&str>> {
    let mut e = e;
    loop {
        match e {
            serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } => e = error,
            serde_saphyr::Error::DuplicateMappingKey { key, .. } => return Some(key.as_deref()),
            _ => return None,
        }
    }
}

/// True when a document holds nothing: blank lines, comments, document markers.
fn is_empty_document(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}

/// The lines of `text` that show a secret, redacted (`None` for a line with nothing to hide):
/// values of secret header names and URL credentials ([`crate::redact::redact_line`]), a
/// secret whose value continues on more indented lines included.
fn redacted_lines(text: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    // The indentation of a secret key whose value continues on the next lines.
    let mut secret_block: Option<usize> = None;
    for source in text.lines() {
        let indent = source.len() - source.trim_start().len();
        if let Some(block) = secret_block {
            if source.trim().is_empty() {
                out.push(None);
                continue;
            }
            if indent > block {
                out.push(Some(format!("{}<redacted>", &source[..indent])));
                continue;
            }
            secret_block = None;
        }
        let (redacted, dangling) = crate::redact::redact_line(source);
        if dangling {
            secret_block = Some(indent);
        }
        out.push(match redacted {
            std::borrow::Cow::Owned(r) => Some(r),
            std::borrow::Cow::Borrowed(_) => None,
        });
    }
    out
}

/// The snippet without secrets. A snippet line is `NN | source`, maybe cropped around the
/// column; a line of the file that shows a secret is replaced whole by its redacted form
/// ([`redacted_lines`]: from the whole file, so a key cropped away or a value on the lines
/// below its key is still found). Other lines, the caret line with the message included, lose
/// URL credentials only.
fn redact_snippet(snippet: &str, text: &str) -> String {
    let redacted = redacted_lines(text);
    let mut out = Vec::new();
    for line in snippet.lines() {
        let numbered = line.split_once(" | ").and_then(|(gutter, _)| {
            let n: usize = gutter.trim().parse().ok()?;
            Some((gutter, n))
        });
        match numbered.and_then(|(gutter, n)| {
            let r = redacted.get(n.checked_sub(1)?)?.as_ref()?;
            Some(format!("{gutter} | {r}"))
        }) {
            Some(r) => out.push(r),
            None => out.push(crate::redact::redact_urls_in(line).into_owned()),
        }
    }
    out.join("\n").trim_end().to_string()
}

/// A snippet of `text` at 1-based `line` and `column` (the line, redacted like every snippet,
/// and a caret), for diagnostics found outside the parser (a variable reference, issue #15).
pub(crate) fn snippet_at(text: &str, line: u64, column: u64) -> Option<String> {
    let index = usize::try_from(line.checked_sub(1)?).ok()?;
    let source = text.lines().nth(index)?;
    let shown = redacted_lines(text)
        .into_iter()
        .nth(index)
        .flatten()
        .unwrap_or_else(|| crate::redact::redact_urls_in(source).into_owned());
    let gutter = " ".repeat(line.to_string().len());
    let caret = " ".repeat(usize::try_from(column.saturating_sub(1)).unwrap_or(0));
    Some(format!("{gutter} |\n{line} | {shown}\n{gutter} | {caret}^"))
}

fn strip_location_prefix(msg: &str) -> &str {
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    // "... at line 3, column 9" at the end repeats what the diagnostic already says.
    let msg = match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(", column ") => &msg[..i],
        _ => msg,
    };
    // "line 3 column 9: rest"
    if let Some(rest) = msg.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
        && rest
            .split_once(": ")
            .is_some_and(|(loc, _)| loc.contains("column"))
    {
        return after;
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_prefix() {
        assert_eq!(strip_location_prefix("line 3 column 9: bad"), "bad");
        assert_eq!(
            strip_location_prefix("error: line 3 column 9: bad: x"),
            "bad: x"
        );
        assert_eq!(strip_location_prefix("bad"), "bad");
        assert_eq!(
            strip_location_prefix("bad thing at line 3, column 9"),
            "bad thing"
        );
    }
}
