//! User-derived text made inert where rattle shows it: on a terminal (no escape sequence, bell
//! or carriage return from a name, a description or a target's command line can retitle, clear
//! or rewrite the user's screen) and in a Markdown table cell or heading (no `|`, newline or
//! HTML from a name can break the table or inject markup into a rendered summary). On the ground
//! floor, like [`crate::redact`], so every writer applies the same rules without importing
//! another; ordinary text passes through unchanged (borrowed), so reports stay byte-identical.

use std::borrow::Cow;

/// True for a character that a terminal may act on rather than show: C0 and C1 controls, DEL,
/// and the bidirectional overrides and isolates that reorder what is shown ("Trojan Source").
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `\n`, `\r`, `\t`, else `\u001b`: visible, unambiguous, and a valid JSON escape for the same
/// character, so escaping the whole of a JSON document printed to a terminal leaves it valid
/// and equal (serde_json leaves DEL, C1 controls and bidi marks raw). Every character escaped
/// here is below U+10000, so four hex digits always suffice.
fn push_escape(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => out.push_str(&format!("\\u{:04x}", u32::from(c))),
    }
}

fn escape_where(s: &str, escape: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escape(c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One line of user-derived text (a name, a description, a reason, a command line), safe for a
/// terminal: every control character, newlines included, is shown escaped (ESC as `\u001b`,
/// a newline as `\n`).
pub fn terminal(s: &str) -> Cow<'_, str> {
    escape_where(s, is_unsafe)
}

/// Text that may span lines (an error message with its snippet), safe for a terminal: like
/// [`terminal`], but newlines and tabs are kept.
pub fn terminal_lines(s: &str) -> Cow<'_, str> {
    escape_where(s, |c| c != '\n' && c != '\t' && is_unsafe(c))
}

/// True where `<` would open an HTML tag, comment, declaration or autolink in CommonMark.
fn opens_html(next: Option<char>) -> bool {
    next.is_some_and(|n| n.is_ascii_alphabetic() || matches!(n, '/' | '!' | '?'))
}

/// True where `&` would start an entity or a character reference.
fn starts_entity(next: Option<char>) -> bool {
    next.is_some_and(|n| n.is_ascii_alphanumeric() || n == '#')
}

/// User-derived text safe in a Markdown table cell, heading or one-line paragraph: one line
/// (a line break or tab read as a space, other controls spelt like `U+001B`), `|`, backslash and backtick escaped, a leading `>` or `#` escaped
/// (no blockquote, no heading), and `<` or `&` as an entity where they would open HTML or an
/// entity. Prose like `expected < 500ms` or `A & B` is left as written.
pub fn markdown_cell(s: &str) -> Cow<'_, str> {
    let chars: Vec<char> = s.chars().collect();
    let first = chars.iter().position(|c| *c != ' ');
    let special = |i: usize, c: char| match c {
        '|' | '\\' | '`' => true,
        '<' => opens_html(chars.get(i + 1).copied()),
        '&' => starts_entity(chars.get(i + 1).copied()),
        '>' | '#' => Some(i) == first,
        c => is_unsafe(c),
    };
    if !chars.iter().enumerate().any(|(i, c)| special(i, *c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if !special(i, c) {
            out.push(c);
            continue;
        }
        match c {
            '<' => out.push_str("&lt;"),
            '&' => out.push_str("&amp;"),
            '|' | '\\' | '`' | '>' | '#' => {
                out.push('\\');
                out.push(c);
            }
            // A line break or tab: one line, read as a space (what a reader expects).
            '\n' | '\r' | '\t' => out.push(' '),
            // A backslash escape would itself be read by Markdown: spell the code point.
            c => out.push_str(&format!("U+{:04X}", u32::from(c))),
        }
    }
    Cow::Owned(out)
}

/// User-derived text inside a Markdown code span (`` `name` ``): one line, no backtick to end
/// the span early. Inside a code span Markdown shows everything literally, so `<` or `|` need
/// no entity; a `|` still ends a table cell in GitHub's tables, so it is escaped.
pub fn markdown_code(s: &str) -> Cow<'_, str> {
    let special = |c: char| matches!(c, '|' | '`') || is_unsafe(c);
    if !s.chars().any(special) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '`' => out.push('\''),
            c if is_unsafe(c) => out.push_str(&format!("U+{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for s in [
            "checkout-api",
            "kill one pod — 50%",
            "p99 < 250ms? no: ≥",
            "a.b_c[1]",
        ] {
            assert!(matches!(terminal(s), Cow::Borrowed(_)), "{s}");
            assert!(matches!(terminal_lines(s), Cow::Borrowed(_)), "{s}");
        }
        assert!(matches!(markdown_cell("kill one pod"), Cow::Borrowed(_)));
    }

    #[test]
    fn terminals_see_escapes_not_controls() {
        assert_eq!(terminal("a\x1b]0;pwned\x07b"), "a\\u001b]0;pwned\\u0007b");
        assert_eq!(terminal("x\ny\rz"), "x\\ny\\rz");
        assert_eq!(terminal("\u{9b}2J"), "\\u009b2J");
        assert_eq!(terminal("evil\u{202e}txt"), "evil\\u202etxt");
        assert_eq!(terminal_lines("a\nb\x1b[2J\tc"), "a\nb\\u001b[2J\tc");
    }

    #[test]
    fn markdown_cells_stay_one_inert_cell() {
        assert_eq!(
            markdown_cell("a|b\n<img src=x onerror=alert(1)>&amp;\t\x1b"),
            "a\\|b &lt;img src=x onerror=alert(1)>&amp;amp;\x20U+001B"
        );
        assert_eq!(markdown_cell("> # x"), "\\> # x");
        for prose in ["expected < 500ms", "A & B", "p99 > 1ms", "kill-one"] {
            assert_eq!(markdown_cell(prose), prose);
        }
        assert_eq!(markdown_code("p99 | `x`"), "p99 \\| 'x'");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn no_control_survives(s in any::<String>()) {
            prop_assert!(!terminal(&s).chars().any(is_unsafe));
            prop_assert!(!terminal_lines(&s).chars().any(|c| c != '\n' && c != '\t' && is_unsafe(c)));
            let cell = markdown_cell(&s);
            prop_assert!(!cell.chars().any(is_unsafe));
            for (b, c) in cell.char_indices() {
                let next = cell[b + c.len_utf8()..].chars().next();
                prop_assert!(!(c == '<' && opens_html(next)), "{}", cell);
                // The only `&` that can start an entity is one of ours.
                let ours = cell[b..].starts_with("&lt;") || cell[b..].starts_with("&amp;");
                prop_assert!(c != '&' || !starts_entity(next) || ours, "{}", cell);
            }
            let code = markdown_code(&s);
            prop_assert!(!code.chars().any(|c| is_unsafe(c) || c == '`'));
        }
    }
}
