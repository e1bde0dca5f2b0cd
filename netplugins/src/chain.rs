//! An error shown to a person: its message and every cause, once.

use std::error::Error;

/// An error and its causes on one line (`a: b: c`), for logs, status
/// messages and events. berth's errors print only their own context and
/// return their cause from `source()`; a library's error that also prints
/// its cause (rusqlite's, hyper's and rustls' do) has that cause skipped,
/// so no text is said twice.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{context}")]
    struct Context {
        context: &'static str,
        #[source]
        source: Option<Box<dyn Error + Send + Sync>>,
    }

    /// Prints its cause and returns it too, as some libraries do.
    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }

    impl Error for Repeats {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    fn io() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::ENOENT)
    }

    #[test]
    fn every_cause_follows_its_context_once() {
        let err = Context {
            context: "pod web",
            source: Some(Box::new(Context {
                context: "creating /run/x",
                source: Some(Box::new(io())),
            })),
        };
        assert_eq!(
            chain(&err),
            "pod web: creating /run/x: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_cause_its_error_already_printed_is_skipped() {
        let err = Context {
            context: "opening the database",
            source: Some(Box::new(Repeats(io()))),
        };
        assert_eq!(
            chain(&err),
            "opening the database: No such file or directory (os error 2)"
        );
    }
}
