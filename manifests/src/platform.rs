//! Platforms (`os/arch[/variant]`): the grammar an `Image`'s `spec.platform`
//! and `berth pull --platform` are read with, by validation and the agent
//! alike. The agent normalises what this accepts (`aarch64` = `arm64`,
//! any case), so case is not checked here.

/// The parts of a platform as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformParts<'a> {
    pub os: &'a str,
    pub architecture: &'a str,
    pub variant: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid platform {input:?}: {reason} (expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8)"
)]
pub struct PlatformError {
    input: String,
    reason: &'static str,
}

/// Splits `os/arch[/variant]`; each part is letters, digits, `_`, `-` or `.`
/// (containerd's component characters, and `.`).
pub fn parse(input: &str) -> Result<PlatformParts<'_>, PlatformError> {
    let bad = |reason| PlatformError {
        input: input.to_owned(),
        reason,
    };
    let parts: Vec<&str> = input.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("an empty component"));
    }
    if !parts.iter().all(|p| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    }) {
        return Err(bad(
            "a component has a character other than letters, digits, _, - or .",
        ));
    }
    match parts.as_slice() {
        [os, architecture] => Ok(PlatformParts {
            os,
            architecture,
            variant: None,
        }),
        [os, architecture, variant] => Ok(PlatformParts {
            os,
            architecture,
            variant: Some(variant),
        }),
        [_] => Err(bad("missing the architecture")),
        _ => Err(bad("too many components")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        assert_eq!(
            parse("Linux/aarch64/8"),
            Ok(PlatformParts {
                os: "Linux",
                architecture: "aarch64",
                variant: Some("8")
            })
        );
        for ok in [
            "linux/amd64",
            "linux/arm64/v8",
            "linux/x86_64",
            "windows/amd64/10.0",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux//v8",
            "a/b/c/d",
            "linux/amd 64",
            "linux/amd64\n",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
