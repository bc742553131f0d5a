//! What is never written to reports or logs: secret header values and the credentials of a
//! URL, whether in a parsed value, in free text (an error message) or in a line of an input file
//! (a validation snippet). On the ground floor so that every writer (the plan, the probes, the
//! reports, the error messages) applies the same rules without importing one another.

use std::borrow::Cow;

/// Header names whose values are never written to reports or logs.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
    ]
    .contains(&n.as_str())
        || ["token", "secret", "key", "password", "auth"]
            .iter()
            .any(|s| n.contains(s))
}

/// A URL with any `user:password@` replaced by `<redacted>@`, for reports and logs.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// A URL as an error message may show it, also when it is too broken for [`redact_url`] to find
/// its authority (`http//user:pw@host`): anything before its last `@` is hidden then.
pub fn redact_url_loose(url: &str) -> String {
    let r = redact_url(url);
    if r.contains("://") || !r.contains('@') {
        return r;
    }
    format!("<redacted>@{}", r.rsplit('@').next().unwrap_or_default())
}

/// Every URL in free text (an error message, a line of an input file) with its `user:password@`
/// replaced by `<redacted>@`. The authority ends at the first `/`, `?`, `#`, whitespace, quote,
/// or flow-syntax punctuation, so a URL inside YAML or JSON is found too.
pub fn redact_urls_in(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| {
                c.is_whitespace()
                    || matches!(c, '/' | '?' | '#' | '"' | '\'' | ',' | '}' | ']' | '>')
            })
            .unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(at) => {
                out.push_str("<redacted>");
                out.push_str(&after[at..end]);
                changed = true;
            }
            None => out.push_str(&after[..end]),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// One line of an input file (YAML or JSON, block or flow style) with what it must not show:
/// URL credentials ([`redact_urls_in`]) and the value of every `key: value` pair whose key is a
/// secret header name ([`is_secret_header`]), up to the end of the line or, in flow style, the
/// next `,` or `}`. Returns whether a secret key had no value on its line (the value follows on
/// the next, more indented lines, which the caller redacts too).
pub fn redact_line(line: &str) -> (Cow<'_, str>, bool) {
    let line = redact_urls_in(line);
    let mut out = String::with_capacity(line.len());
    let mut changed = false;
    let mut dangling = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        // A key: a name (maybe quoted) at the start of the line or after `{`, `,` or `- `.
        let at_key_start = i == 0
            || matches!(bytes[i - 1], b'{' | b',' | b' ' | b'\t')
                && line[..i]
                    .trim_end()
                    .chars()
                    .last()
                    .is_none_or(|c| matches!(c, '{' | ',' | '-'));
        if at_key_start {
            let rest = &line[i..];
            let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'');
            let name_start = quote.map_or(0, |_| 1);
            let name_len = rest[name_start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .unwrap_or(rest.len() - name_start);
            let name = &rest[name_start..name_start + name_len];
            let mut after = name_start + name_len;
            if let Some(q) = quote {
                if rest[after..].starts_with(q) {
                    after += 1;
                } else {
                    after = usize::MAX;
                }
            }
            if after != usize::MAX
                && !name.is_empty()
                && rest[after..].starts_with(':')
                && rest[after + 1..]
                    .chars()
                    .next()
                    .is_none_or(char::is_whitespace)
                && is_secret_header(name)
            {
                let value_from = after + 1;
                let value = &rest[value_from..];
                // Flow style ends the value at `,` or `}` outside quotes; block style at the end.
                let in_flow = line[..i].contains('{');
                let value_end = if in_flow {
                    flow_value_end(value)
                } else {
                    value.len()
                };
                let shown = &value[..value_end];
                out.push_str(&rest[..value_from]);
                let trimmed = shown.trim();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    dangling = !in_flow;
                    out.push_str(shown);
                } else {
                    out.push_str(" <redacted>");
                    // Flow style: keep the space before `,` or `}`.
                    out.push_str(&shown[shown.trim_end().len()..]);
                    changed = true;
                }
                i += value_from + value_end;
                continue;
            }
        }
        let c = line[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    if changed {
        (Cow::Owned(out), dangling)
    } else {
        (line, dangling)
    }
}

/// Where a flow-style value ends: the first `,` or `}` outside quotes.
fn flow_value_end(value: &str) -> usize {
    let mut quote: Option<char> = None;
    for (i, c) in value.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, ',' | '}') => return i,
            (None, _) => {}
        }
    }
    value.len()
}

// The run's secret values (issue #15): values that came from the environment (`${env:NAME}`) or
// were marked secret (`--var-file`), registered when an input file is loaded. Process-wide,
// because a secret may reach any writer (the plan, a probe's error, a report, a log line) and
// the writers do not share a handle; the list only grows, and redacting more is always safe.
static SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Registers a secret value: from now on [`redact_secrets`] replaces it, in the forms writers
/// produce (as is, JSON-escaped, HTML-escaped), by `<redacted>`. Empty values are ignored.
pub fn register_secret(value: &str) {
    if value.is_empty() {
        return;
    }
    let json = serde_json::to_string(value).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or(value)
        .to_string();
    let html = value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;");
    let mut secrets = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    for form in [value.to_string(), json, html] {
        if !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered secret value ([`register_secret`]) replaced by `<redacted>`.
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "<redacted>");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_secret_values_and_url_credentials() {
        let r = |l: &str| redact_line(l).0.into_owned();
        assert_eq!(
            r("    Authorization: Bearer s3cret"),
            "    Authorization: <redacted>"
        );
        assert_eq!(
            r("  - \"X-Api-Key\": \"k\", # x"),
            "  - \"X-Api-Key\": <redacted>"
        );
        assert_eq!(
            r("headers: { Authorization: \"Bearer s3cret\", Accept: x }"),
            "headers: { Authorization: <redacted>, Accept: x }"
        );
        assert_eq!(
            r("{\"url\": \"http://u:pw@h:1/x\", \"cookie\": \"a=b\"}"),
            "{\"url\": \"http://<redacted>@h:1/x\", \"cookie\": <redacted>}"
        );
        assert_eq!(
            r("  url: https://u:p@h/x?a=b@c"),
            "  url: https://<redacted>@h/x?a=b@c"
        );
        assert_eq!(r("name: author-token-free"), "name: author-token-free");
        assert_eq!(r("  rate: 200/s # token: x"), "  rate: 200/s # token: x");
        assert!(redact_line("  Authorization:").1);
        assert!(matches!(
            redact_line("  accept: text/html").0,
            Cow::Borrowed(_)
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// A secret header's value or a URL's password never survives, whatever the layout
        /// (block, flow, quoted, list item) and whatever surrounds it.
        #[test]
        fn no_secret_survives_a_line(
            name in "(Authorization|authorization|Cookie|X-Api-Key|x-auth-token|Proxy-Authorization)",
            secret in "[A-Za-z0-9]{8,20}",
            layout in 0usize..6,
            indent in " {0,6}",
            before in "[a-z_]{1,8}",
            after in "[a-z_]{1,8}",
        ) {
            let secret = format!("S{secret}");
            let line = match layout {
                0 => format!("{indent}{name}: Bearer {secret}"),
                1 => format!("{indent}\"{name}\": \"Bearer {secret}\","),
                2 => format!("{indent}- {name}: '{secret}'"),
                3 => format!("{indent}{before}: {{ {name}: \"{secret}\", {after}: 1 }}"),
                4 => format!("{indent}{before}: {{ {after}: 1, '{name}': {secret}}}"),
                _ => format!("{indent}{before}: \"https://{after}:{secret}@h:1/x\""),
            };
            let (out, _) = redact_line(&line);
            proptest::prop_assert!(!out.contains(&secret), "{} -> {}", line, out);
            proptest::prop_assert!(!redact_urls_in(&out).contains(&secret));
        }
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("http://u:p@h:1/x?a=b@c"),
            "http://<redacted>@h:1/x?a=b@c"
        );
        assert_eq!(redact_url("http://h/x@y"), "http://h/x@y");
        assert_eq!(redact_url("nonsense"), "nonsense");
        assert_eq!(redact_url_loose("http//u:p@h/x"), "<redacted>@h/x");
        assert_eq!(redact_url_loose("http://h/x"), "http://h/x");
    }

    #[test]
    fn secret_headers() {
        assert!(is_secret_header("Authorization"));
        assert!(is_secret_header("X-Api-Key"));
        assert!(is_secret_header("x-auth-token"));
        assert!(!is_secret_header("Accept"));
    }

    #[test]
    fn registered_secrets_are_redacted_in_every_written_form() {
        // Unique values: the registry is process-wide and other tests share it.
        register_secret("");
        register_secret("q\"<tok>9Zr-unit");
        register_secret("q\"<tok>9Zr-unit-longer");
        assert_eq!(redact_secrets("a q\"<tok>9Zr-unit b"), "a <redacted> b");
        assert_eq!(redact_secrets("q\"<tok>9Zr-unit-longer"), "<redacted>");
        assert_eq!(
            redact_secrets(r#"{"t":"q\"<tok>9Zr-unit"}"#),
            r#"{"t":"<redacted>"}"#
        );
        assert_eq!(redact_secrets("q&quot;&lt;tok&gt;9Zr-unit"), "<redacted>");
        assert!(matches!(redact_secrets("nothing here"), Cow::Borrowed(_)));
    }
}
