//! Durations as the database stores them. Instants are the database's (each statement reads its
//! clock, `sql_with_now!`), never a node's: nothing here reads the wall clock.

use std::time::Duration;

/// `duration` in whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
