//! Why a command failed, as its exit status tells a script: an error is marked with its class
//! where it arises (`.fail_as(Failure::Usage)`), and `main` turns the mark into the status, so
//! no subcommand picks numbers of its own.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | fine |
//! | 1 | the checks failed or a difference was found; or an unmarked error |
//! | 2 | [`Failure::Usage`]: bad input or usage |
//! | 3 | [`Failure::CannotTrace`]: no privileges, no BPF/BTF, programs refused |
use std::fmt;

/// The class of an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Bad input or usage: an unknown pid, a malformed record, bad rules, a missing file.
    Usage,
    /// Tracing is impossible here: missing privileges, no BPF or BTF, programs refused.
    CannotTrace,
}

/// The status of a command that checked something and found it wanting (or of an error that
/// carries no class).
pub const FOUND: u8 = 1;

impl Failure {
    pub const fn exit_code(self) -> u8 {
        match self {
            Failure::Usage => 2,
            Failure::CannotTrace => 3,
        }
    }

    /// `err`, marked with this class; its messages and sources stay as they were.
    pub fn mark(self, err: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Marked {
            class: self,
            inner: err,
        })
    }

    /// The class marked on `err`, under any context added since (the outermost mark wins).
    pub fn of(err: &anyhow::Error) -> Option<Self> {
        // anyhow's downcast looks through context layers; the chain, through other wrappers.
        err.downcast_ref::<Marked>()
            .or_else(|| err.chain().find_map(|e| e.downcast_ref::<Marked>()))
            .map(|m| m.class)
    }
}

/// The error of type `T` anywhere in `err`'s chain, marks included (a mark stands in the
/// chain for the error it marks).
pub fn find<T: std::error::Error + Send + Sync + 'static>(err: &anyhow::Error) -> Option<&T> {
    err.chain().find_map(|e| {
        e.downcast_ref::<T>().or_else(|| {
            e.downcast_ref::<Marked>()
                .and_then(|m| m.inner.downcast_ref::<T>())
        })
    })
}

/// The exit status for `err`.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    Failure::of(err).map_or(FOUND, Failure::exit_code)
}

/// Marks the error of a `Result` with its class: `.fail_as(Failure::Usage)?`.
pub trait FailAs<T> {
    fn fail_as(self, class: Failure) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> FailAs<T> for Result<T, E> {
    fn fail_as(self, class: Failure) -> anyhow::Result<T> {
        self.map_err(|e| class.mark(e.into()))
    }
}

/// An error and its class. It shows as the error itself (same message, same sources), so a
/// mark never changes what is printed, only the status.
struct Marked {
    class: Failure,
    inner: anyhow::Error,
}

impl fmt::Display for Marked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for Marked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl std::error::Error for Marked {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

#[cfg(test)]
mod tests {
    use anyhow::{Context as _, anyhow};

    use super::*;

    #[test]
    fn a_mark_under_later_context_decides_the_status_and_prints_nothing() {
        let err = Err::<(), _>(std::io::Error::from_raw_os_error(libc::ENOENT))
            .context("cannot read x.vgt")
            .fail_as(Failure::Usage)
            .context("checking")
            .unwrap_err();
        assert_eq!(exit_code(&err), 2);
        assert_eq!(
            format!("{err:#}"),
            "checking: cannot read x.vgt: No such file or directory (os error 2)"
        );
        let err = Failure::CannotTrace.mark(anyhow!("tracing needs root"));
        assert_eq!(exit_code(&err), 3);
        assert_eq!(format!("{err:#}"), "tracing needs root");
    }

    #[test]
    fn the_outermost_mark_wins() {
        let err = Failure::CannotTrace
            .mark(Failure::Usage.mark(anyhow!("inner")))
            .context("outer");
        assert_eq!(Failure::of(&err), Some(Failure::CannotTrace));
    }

    #[test]
    fn an_unmarked_error_is_a_plain_failure() {
        let err = anyhow::Error::new(std::io::Error::other("disk full")).context("writing");
        assert_eq!(exit_code(&err), 1);
        assert_eq!(Failure::of(&err), None);
    }
}
