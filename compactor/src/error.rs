//! The compactor's error type. Every message names the blocks, group or flag at fault.
//!
//! Errors come in three kinds, as in Thanos: a **halt** (the bucket is in a state the compactor must
//! not touch further without an operator, e.g. overlapping blocks without vertical compaction), a
//! **retry** (object storage or a block read failed; the next iteration tries again) and bad
//! **configuration** (refused at start-up).

/// Errors of the compactor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The compactor must stop changing the bucket until an operator looked at it.
    #[error("halting: {reason}")]
    Halt {
        /// What was found, naming the group and the blocks.
        reason: String,
    },
    /// An options value cannot be used.
    #[error("bad compactor configuration: {reason}")]
    Config {
        /// What is wrong, naming the flag.
        reason: String,
    },
    /// Reading the bucket, a block or writing a block failed (the engine's message names the
    /// object).
    #[error("{context}: {source}")]
    Engine {
        /// What the compactor was doing (which group, which blocks).
        context: String,
        /// The engine's error.
        #[source]
        source: engine::Error,
    },
    /// The work was stopped (shutdown) before it finished; nothing visible was left half done.
    #[error("stopped before {what} finished")]
    Stopped {
        /// What was interrupted.
        what: String,
    },
    /// A task running a group's compaction failed to complete.
    #[error("compaction task of group {group}: {reason}")]
    Task {
        /// The group.
        group: String,
        /// Why the task ended.
        reason: String,
    },
}

impl Error {
    /// True for errors that must halt the compactor (see the module docs).
    pub fn is_halt(&self) -> bool {
        matches!(self, Error::Halt { .. })
    }

    /// Wraps an engine error with what the compactor was doing.
    pub fn engine(context: impl Into<String>, source: engine::Error) -> Self {
        Error::Engine { context: context.into(), source }
    }
}

/// Result alias of the compactor.
pub type Result<T, E = Error> = std::result::Result<T, E>;
