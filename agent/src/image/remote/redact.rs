//! Scrubbing credentials out of what a registry sends back. An error body
//! may echo the request (a debugging proxy, a misconfigured gateway), and
//! its excerpt goes into messages that reach the log, `berth status` and
//! events: the password, the Basic header and the token a session sent
//! must not come back that way.

use base64::Engine as _;

use crate::image::auth::Credential;

const REDACTED: &str = "<redacted>";
/// Authorization schemes whose parameter is a credential.
const SCHEMES: [&str; 2] = ["basic", "bearer"];

/// The secrets one session may have sent.
#[derive(Default)]
pub(super) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub(super) fn new(credential: Option<&Credential>) -> Self {
        let mut redactor = Self::default();
        if let Some(credential) = credential {
            let pair = format!("{}:{}", credential.username, credential.password);
            redactor.add(&credential.password);
            redactor.add(&base64::engine::general_purpose::STANDARD.encode(&pair));
            redactor.add(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(&pair));
        }
        redactor
    }

    /// Also scrubs `secret` (a bearer token the session got).
    pub(super) fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_owned());
            // Longest first, so a secret containing another goes whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with every known secret, and the parameter of every
    /// `Basic …` / `Bearer …` it holds, replaced by `<redacted>`.
    pub(super) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), REDACTED);
        }
        scrub_schemes(&text)
    }
}

/// Replaces the token after `Basic` or `Bearer` (any case), whoever's it is.
fn scrub_schemes(text: &str) -> String {
    // ASCII lower-casing keeps byte offsets.
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = 0;
    while at < text.len() {
        let scheme = SCHEMES
            .iter()
            .find(|scheme| lower[at..].starts_with(**scheme) && word_start(&lower, at));
        let Some(scheme) = scheme else {
            at += lower[at..].chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let after_scheme = at + scheme.len();
        let spaces = lower[after_scheme..]
            .bytes()
            .take_while(|b| *b == b' ' || *b == b'\t')
            .count();
        let token_start = after_scheme + spaces;
        let token_len = lower[token_start..]
            .bytes()
            .take_while(|b| is_token68(*b))
            .count();
        if spaces == 0 || token_len == 0 {
            at = after_scheme;
            continue;
        }
        out.push_str(&text[copied..token_start]);
        out.push_str(REDACTED);
        copied = token_start + token_len;
        at = copied;
    }
    out.push_str(&text[copied..]);
    out
}

fn word_start(lower: &str, at: usize) -> bool {
    at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric()
}

/// RFC 9110 `token68` characters (what follows an auth scheme).
fn is_token68(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> Credential {
        Credential {
            username: "bob".to_owned(),
            password: "hunter2-secret".to_owned(),
        }
    }

    #[test]
    fn an_echoed_basic_header_and_the_password_are_scrubbed() {
        let redactor = Redactor::new(Some(&credential()));
        let basic = credential().basic_header();
        let body = format!(
            "{{\"errors\":[{{\"detail\":\"headers: Authorization: {basic}; \
             password=hunter2-secret\"}}]}}"
        );
        let scrubbed = redactor.scrub(&body);
        assert!(!scrubbed.contains("hunter2-secret"), "{scrubbed}");
        assert!(
            !scrubbed.contains(basic.trim_start_matches("Basic ")),
            "{scrubbed}"
        );
        assert!(
            scrubbed.contains("Authorization: Basic <redacted>"),
            "{scrubbed}"
        );
    }

    #[test]
    fn any_bearer_or_basic_parameter_is_scrubbed_even_unknown_ones() {
        let redactor = Redactor::default();
        assert_eq!(
            redactor.scrub("got authorization: bearer abc.DEF-ghi_~+/= ok"),
            "got authorization: bearer <redacted> ok"
        );
        assert_eq!(redactor.scrub("BASIC\tdXNlcjpwYXNz"), "BASIC\t<redacted>");
        // Words that merely contain a scheme name stay.
        assert_eq!(
            redactor.scrub("basically fine; bearers: none"),
            "basically fine; bearers: none"
        );
    }

    #[test]
    fn tokens_added_later_are_scrubbed_and_text_without_secrets_is_kept() {
        let mut redactor = Redactor::new(None);
        redactor.add("tok-123");
        assert_eq!(
            redactor.scrub("token tok-123 expired — MANIFEST_UNKNOWN"),
            "token <redacted> expired — MANIFEST_UNKNOWN"
        );
    }
}
