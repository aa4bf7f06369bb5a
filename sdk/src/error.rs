//! The SDK's error type.

use std::fmt;

use bunraku_abi::ErrorCode;

/// A failed operation: a typed [`ErrorCode`] plus details for a person.
///
/// Everything an actor does through [`Ctx`](crate::Ctx) fails with this type, and so does a
/// request whose target answered with an error. Match on [`code`](Error::code); the message is
/// for logs.
///
/// ```
/// use bunraku_sdk::{Error, ErrorCode};
///
/// let e = Error::new(ErrorCode::NoSuchActor, "`billing` is not running");
/// assert_eq!(e.code(), ErrorCode::NoSuchActor);
/// assert_eq!(e.to_string(), "no such actor: `billing` is not running");
/// assert_eq!(Error::from(ErrorCode::Timeout).to_string(), "timeout");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    message: String,
}

impl Error {
    /// An error with a code and a message (which may be empty).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An [`ErrorCode::Application`] error: the actor's own failure.
    pub fn application(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Application, message)
    }

    /// What kind of failure this is.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The details (empty when there are none).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        Self::new(code, String::new())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Error {}
