//! Several shape errors in one pass, where that is sound. serde stops at the first error, so
//! on its own a file with two misspelt keys takes two edit-validate rounds. An unknown key,
//! though, contributes nothing to the experiment: the same text with that key and its value
//! blanked out parses to exactly what the author meant everywhere else. So on an unknown key
//! written in block style at the start of its line, its lines are replaced by empty lines
//! (every other line keeps its number, so later diagnostics point at the right place) and the
//! text is parsed again; this repeats until the text parses or another kind of error is found.
//!
//! What still stops the pass: a syntax error (the structure after it is unknown), a value of
//! the wrong type or a missing field (removing it would invent a second error), an unknown key
//! whose lines hold a `&` (an anchor an alias elsewhere may need), and an unknown key in flow
//! style (`{a: 1, typo: 2}`) or as the first key of a sequence item, whose lines
//! cannot be blanked without breaking their neighbours. Meaning checks (`validate`) run once
//! the text parses, on the text without the unknown keys, so they are reported too.

use super::diagnostic::Diagnostic;

/// At most this many unknown keys are skipped before the pass stops (each costs a parse).
const MAX_SKIPPED: usize = 50;

/// And the parses after the first read at most this many bytes in all, so a hostile 1 MiB file
/// of unknown keys costs a few parses, not fifty (a real experiment is a few KiB: it gets all
/// fifty).
const MAX_PARSED_BYTES: usize = 8 * 1024 * 1024;

/// Parses with `parse`, and on each unknown key that can be blanked soundly, blanks it and
/// parses again. Returns the value when the text (less its unknown keys) parses, and every
/// diagnostic found: the unknown keys in the order found, then what stopped the pass. A later
/// diagnostic's snippet shows the text with the earlier unknown keys blanked.
pub fn parse_collecting<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, Diagnostic>,
) -> (Option<T>, Vec<Diagnostic>) {
    let mut found: Vec<Diagnostic> = Vec::new();
    let max_skipped = MAX_SKIPPED.min(MAX_PARSED_BYTES / text.len().max(1));
    let mut current = std::borrow::Cow::Borrowed(text);
    loop {
        match parse(&current) {
            Ok(v) => return (Some(v), found),
            Err(d) => {
                let blanked = if found.len() < max_skipped {
                    blank_unknown_key(&current, &d)
                } else {
                    None
                };
                found.push(d);
                match blanked {
                    Some(next) => current = std::borrow::Cow::Owned(next),
                    None => return (None, found),
                }
            }
        }
    }
}

/// The key of an unknown-field message: "unknown field `KEY`, expected ...".
fn unknown_key(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    Some(&rest[..end])
}

/// `text` with the unknown key of `d` and its value's lines blanked, when the key starts its
/// line in block style; `None` otherwise.
fn blank_unknown_key(text: &str, d: &Diagnostic) -> Option<String> {
    let key = unknown_key(&d.message)?;
    let lines: Vec<&str> = text.split('\n').collect();
    let index = usize::try_from(d.line).ok()?.checked_sub(1)?;
    let line = *lines.get(index)?;
    let indent = line.len() - line.trim_start_matches(' ').len();
    // The column must be the key's, and the key must be the first thing on its line.
    if usize::try_from(d.column).ok()? != indent + 1 || key.is_empty() {
        return None;
    }
    let rest = &line[indent..];
    let after = [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
        .into_iter()
        .find_map(|k| rest.strip_prefix(k.as_str()).map(str::to_string))?;
    let after = after.trim_start_matches(' ');
    if !after.starts_with(':') {
        return None;
    }
    // A value on the key's own line (not a comment) ends there, apart from more indented
    // continuation lines; an empty one may be a sequence at the key's own indentation.
    let value_inline = {
        let v = after[1..].trim();
        !v.is_empty() && !v.starts_with('#')
    };
    let mut end = index + 1;
    while let Some(next) = lines.get(end) {
        let trimmed = next.trim_start_matches(' ');
        let next_indent = next.len() - trimmed.len();
        let continues = trimmed.trim().is_empty()
            || next_indent > indent
            || (!value_inline
                && next_indent == indent
                && (trimmed.starts_with("- ") || trimmed.trim_end() == "-"));
        if !continues {
            break;
        }
        end += 1;
    }
    // Trailing blank lines are not the value's; leave them.
    while end > index + 1 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    // An anchor defined there may be used elsewhere: blanking it would invent an error.
    if lines[index..end].iter().any(|l| l.contains('&')) {
        return None;
    }
    let mut out: Vec<&str> = lines;
    for l in out.iter_mut().take(end).skip(index) {
        *l = "";
    }
    Some(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(line: u64, column: u64, key: &str) -> Diagnostic {
        Diagnostic {
            line,
            column,
            field: key.into(),
            message: format!("unknown field `{key}`, expected one of a, b"),
            snippet: None,
        }
    }

    #[test]
    fn blanks_a_block_key_and_its_value_keeping_line_numbers() {
        let text = "a: 1\nbogus:\n  x: 1\n  y: [2]\nb: 2\n";
        let out = blank_unknown_key(text, &diag(2, 1, "bogus")).unwrap();
        assert_eq!(out, "a: 1\n\n\n\nb: 2\n");
        let text = "a: 1\nbogus:\n- 1\n- 2\nb: 2";
        assert_eq!(
            blank_unknown_key(text, &diag(2, 1, "bogus")).unwrap(),
            "a: 1\n\n\n\nb: 2"
        );
        let text = "list:\n  - a: 1\n    bogus: 2\n  - a: 3\n";
        assert_eq!(
            blank_unknown_key(text, &diag(3, 5, "bogus")).unwrap(),
            "list:\n  - a: 1\n\n  - a: 3\n"
        );
    }

    #[test]
    fn stops_after_the_budget() {
        // Every parse fails on an unknown key at the first non-blank line.
        let text: String = (0..80).map(|i| format!("k{i}: 1\n")).collect();
        let parse = |t: &str| -> Result<(), Diagnostic> {
            match t.split('\n').enumerate().find(|(_, l)| !l.is_empty()) {
                Some((i, l)) => Err(diag(i as u64 + 1, 1, l.split(':').next().unwrap_or(""))),
                None => Ok(()),
            }
        };
        let (v, found) = parse_collecting(&text, parse);
        assert!(v.is_none());
        assert_eq!(found.len(), MAX_SKIPPED + 1);
        // A 2 MiB text: four keys skipped (five parses, 10 MiB), then the pass stops.
        let big = format!("{text}{}", "#".repeat(MAX_PARSED_BYTES / 4 - text.len()));
        let (_, found) = parse_collecting(&big, parse);
        assert_eq!(found.len(), 4 + 1);
    }

    #[test]
    fn refuses_what_cannot_be_blanked_soundly() {
        // Flow style, first key of a sequence item, another kind of error.
        assert!(blank_unknown_key("m: {a: 1, bogus: 2}\n", &diag(1, 11, "bogus")).is_none());
        assert!(blank_unknown_key("- bogus: 1\n  a: 2\n", &diag(1, 3, "bogus")).is_none());
        let mut d = diag(1, 1, "a");
        d.message = "invalid type: string, expected u32".into();
        assert!(blank_unknown_key("a: x\n", &d).is_none());
        // An anchor that an alias elsewhere may use.
        assert!(blank_unknown_key("bogus: &x 5\nb: *x\n", &diag(1, 1, "bogus")).is_none());
        // A key whose name only starts like the unknown one.
        assert!(blank_unknown_key("bogusx: 1\n", &diag(1, 1, "bogus")).is_none());
    }
}
