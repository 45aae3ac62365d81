//! The append-only audit log: one row per attempt outcome of a protected write.
//!
//! A new write's row commits in the write's own transaction ([`sql`], with the stored
//! response). The rows of outcomes that changed nothing (replays, mismatches, failures,
//! conflicts) go through a bounded [`queue`] to the [`writer`], which inserts them in batches
//! after their answers. Rows leave only through the retention purge. The [`seal`]s chain digests
//! of the rows, so that a change by the tables' owner is found.

mod queue;
mod record;
mod seal;
pub(crate) mod sql;
mod writer;

pub(crate) use queue::{AuditQueue, Queued};
pub use record::AuditRecord;
pub(crate) use record::{Failure, WriteOutcome};
pub use seal::{AuditSeal, AuditVerification, BrokenSeal, SEAL_ROWS, SealFinding};
pub(crate) use seal::{SealRow, SealedRow};
