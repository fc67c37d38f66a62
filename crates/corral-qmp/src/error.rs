//! Error types of the QMP client.

use std::fmt;

/// Everything that can go wrong while talking to QEMU over QMP.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket itself failed (connect, read or write).
    #[error("QMP I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// QEMU sent something we could not make sense of: malformed JSON, a
    /// missing or invalid greeting, a reply of an unexpected shape.
    #[error("QMP protocol error: {0}")]
    Protocol(String),

    /// QEMU answered a command with `{"error": {"class": ..., "desc": ...}}`.
    #[error("QEMU refused {command}: {desc}")]
    Command {
        class: ErrorClass,
        desc: String,
        command: String,
    },

    /// The connection closed (QEMU exited or the socket was shut down)
    /// before the reply arrived, or before the command could be sent.
    #[error("QMP connection closed")]
    Disconnected,

    /// An operation did not finish in time; the text says which.
    #[error("timed out: {0}")]
    Timeout(String),

    /// A job started by [`crate::Qmp::run_job`] concluded with an error.
    #[error("QEMU job {job_id} failed: {message}")]
    JobFailed { job_id: String, message: String },
}

impl QmpError {
    /// The QEMU error class, if this is a [`QmpError::Command`].
    pub fn class(&self) -> Option<&ErrorClass> {
        match self {
            QmpError::Command { class, .. } => Some(class),
            _ => None,
        }
    }
}

/// QEMU's error classes (the `"class"` member of an error reply).
///
/// QEMU 7.2 only ever sends the five named ones; anything else is kept
/// verbatim in [`ErrorClass::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    GenericError,
    CommandNotFound,
    DeviceNotActive,
    DeviceNotFound,
    /// QEMU spells this one `KVMMissingCap`.
    KvmMissingCap,
    Other(String),
}

impl ErrorClass {
    /// Maps QEMU's class string to an [`ErrorClass`].
    pub fn from_qemu(class: &str) -> ErrorClass {
        match class {
            "GenericError" => ErrorClass::GenericError,
            "CommandNotFound" => ErrorClass::CommandNotFound,
            "DeviceNotActive" => ErrorClass::DeviceNotActive,
            "DeviceNotFound" => ErrorClass::DeviceNotFound,
            "KVMMissingCap" => ErrorClass::KvmMissingCap,
            other => ErrorClass::Other(other.to_string()),
        }
    }

    /// The class string as QEMU spells it.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotActive => "DeviceNotActive",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
            ErrorClass::KvmMissingCap => "KVMMissingCap",
            ErrorClass::Other(s) => s,
        }
    }
}

impl From<&str> for ErrorClass {
    fn from(s: &str) -> Self {
        ErrorClass::from_qemu(s)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_all_known_classes() {
        let cases = [
            ("GenericError", ErrorClass::GenericError),
            ("CommandNotFound", ErrorClass::CommandNotFound),
            ("DeviceNotActive", ErrorClass::DeviceNotActive),
            ("DeviceNotFound", ErrorClass::DeviceNotFound),
            ("KVMMissingCap", ErrorClass::KvmMissingCap),
        ];
        for (s, class) in cases {
            assert_eq!(ErrorClass::from_qemu(s), class, "{s}");
            assert_eq!(class.as_str(), s);
            assert_eq!(class.to_string(), s);
        }
    }

    #[test]
    fn unknown_and_misspelled_classes_are_other() {
        assert_eq!(
            ErrorClass::from_qemu("KvmMissingCap"),
            ErrorClass::Other("KvmMissingCap".into())
        );
        assert_eq!(
            ErrorClass::from("SomethingNew"),
            ErrorClass::Other("SomethingNew".into())
        );
        assert_eq!(ErrorClass::Other("X".into()).as_str(), "X");
    }

    #[test]
    fn command_error_display() {
        let e = QmpError::Command {
            class: ErrorClass::CommandNotFound,
            desc: "The command query-foo has not been found".into(),
            command: "query-foo".into(),
        };
        assert_eq!(
            e.to_string(),
            "QEMU refused query-foo: The command query-foo has not been found"
        );
        assert_eq!(e.class(), Some(&ErrorClass::CommandNotFound));
        assert_eq!(QmpError::Disconnected.class(), None);
    }
}
