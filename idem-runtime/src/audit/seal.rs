//! The sealed audit log: tampering by the tables' owner is detected after the fact.
//!
//! The log's triggers refuse `UPDATE` and `DELETE` to the application, but the tables' owner can
//! disable them, which is exactly what an auditor asks about. So [`Maintenance`](crate::Maintenance)
//! seals the log, off the write path: each seal covers the rows inserted since the previous one
//! (by `seq`, their place in the order of insertion), stores their count and a SHA-256 over their
//! canonical encoding, and is chained to the previous seal's digest.
//! [`IdempotencyStore::verify_audit_log`] recomputes the chain and names the first seal that no
//! longer matches; its latest digest, kept outside the database, proves that the seals
//! themselves were not rewritten.
//!
//! A seal covers only rows inserted at least the settle delay ago
//! ([`Maintenance::with_seal_delay`](crate::Maintenance::with_seal_delay), 5 minutes): a row's
//! `seq` is taken when it is inserted, and its transaction commits later, so a seal made at once
//! could skip a row that commits after it. A transaction that stays open longer than the delay
//! and then commits an audit row below a seal shows as a row inserted into a sealed range.

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clock::millis;
use crate::hex::LowerHex;
use crate::{Backend, IdempotencyStore, StoreError};

/// The most rows one seal covers: one read and one hash per seal, bounded.
pub const SEAL_ROWS: i64 = 1000;

/// The digest the first seal chains to.
const GENESIS_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the canonical encoding starts with: a new encoding is a new version here.
const ENCODING: &[u8] = b"idem audit seal v1\n";

/// One seal of the audit log: the rows with `seq` from `first_row` to `last_row`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditSeal {
    /// 1 for the first seal, then one more for each.
    pub number: i64,
    /// The first `seq` the seal covers: one past the previous seal's last.
    pub first_row: i64,
    /// The last `seq` the seal covers.
    pub last_row: i64,
    /// How many rows the range held when it was sealed.
    pub rows: i64,
    /// SHA-256, in hex, over the previous digest, this seal's number and range, and its rows'
    /// canonical encoding.
    pub digest: String,
    /// The previous seal's digest (64 zeros for the first seal).
    pub previous_digest: String,
    /// When the seal was made, by the database's clock, in Unix milliseconds.
    pub sealed_at_ms: i64,
}

/// The raw row of a seal: number, first and last seq, rows, digest, previous digest, time.
pub type SealRow = (i64, i64, i64, i64, String, String, i64);

impl From<SealRow> for AuditSeal {
    fn from(row: SealRow) -> Self {
        let (number, first_row, last_row, rows, digest, previous_digest, sealed_at_ms) = row;
        Self {
            number,
            first_row,
            last_row,
            rows,
            digest,
            previous_digest,
            sealed_at_ms,
        }
    }
}

/// One audit row as a seal covers it: every column, integers widened to 64 bits.
#[derive(Debug, Clone)]
pub struct SealedRow {
    pub(crate) seq: i64,
    pub(crate) text: [Option<String>; 11],
    pub(crate) numbers: [Option<i64>; 6],
    pub(crate) duration_ms: f64,
}

impl SealedRow {
    /// Feeds the row's canonical encoding to `hasher`: its `seq`, then every column in the
    /// table's order, each NULL as one `0` byte and each value as a `1` byte and its bytes
    /// (text length-prefixed, integers and the duration as 8 big-endian bytes).
    fn encode(&self, hasher: &mut Sha256) {
        hasher.update(self.seq.to_be_bytes());
        for text in &self.text {
            match text {
                None => hasher.update([0]),
                Some(text) => {
                    hasher.update([1]);
                    hasher.update((text.len() as u64).to_be_bytes());
                    hasher.update(text.as_bytes());
                }
            }
        }
        for number in &self.numbers {
            match number {
                None => hasher.update([0]),
                Some(number) => {
                    hasher.update([1]);
                    hasher.update(number.to_be_bytes());
                }
            }
        }
        hasher.update(self.duration_ms.to_bits().to_be_bytes());
    }
}

/// The digest of seal `number` over `rows`, chained to `previous_digest`.
fn seal_digest(
    number: i64,
    first_row: i64,
    last_row: i64,
    previous_digest: &str,
    rows: &[SealedRow],
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(ENCODING);
    hasher.update(previous_digest.as_bytes());
    for field in [number, first_row, last_row, rows.len() as i64] {
        hasher.update(field.to_be_bytes());
    }
    for row in rows {
        row.encode(&mut hasher);
    }
    LowerHex(&hasher.finalize()).to_string()
}

/// What [`IdempotencyStore::verify_audit_log`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditVerification {
    /// The seals whose rows were recomputed and matched.
    pub verified_seals: u64,
    /// The rows those seals cover.
    pub verified_rows: u64,
    /// The oldest seals, whose rows retention has all deleted: their chain is checked, their
    /// rows cannot be.
    pub seals_past_retention: u64,
    /// The seal retention is emptying now (some of its rows deleted, the oldest first): its
    /// chain is checked, its rows cannot be.
    pub seal_partly_past_retention: Option<i64>,
    /// The first seal that no longer matches; none when the log verifies.
    pub broken: Option<BrokenSeal>,
    /// The latest seal: keep its digest outside the database, where it cannot be rewritten,
    /// and compare it with the next verification's.
    pub latest: Option<AuditSeal>,
}

impl AuditVerification {
    /// `true` when no seal is broken.
    pub fn holds(&self) -> bool {
        self.broken.is_none()
    }
}

/// A seal that no longer matches the rows or the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokenSeal {
    /// The seal's number.
    pub seal: i64,
    /// The first `seq` it covers.
    pub first_row: i64,
    /// The last `seq` it covers.
    pub last_row: i64,
    /// What no longer matches.
    pub finding: SealFinding,
}

/// What no longer matches in a [`BrokenSeal`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealFinding {
    /// The range holds another number of rows: a row was removed from it or inserted into it.
    RowCount {
        /// The rows the range held when it was sealed.
        sealed: i64,
        /// The rows it holds now.
        found: i64,
    },
    /// The same number of rows, but one of them was changed.
    Digest,
    /// The seal does not follow the previous one (its number, range or previous digest): the
    /// seals themselves were changed, removed or inserted.
    Chain,
}

impl fmt::Display for BrokenSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (seal, first, last) = (self.seal, self.first_row, self.last_row);
        match &self.finding {
            SealFinding::RowCount { sealed, found } => write!(
                f,
                "seal {seal} (rows {first}..={last}) held {sealed} rows and now holds {found}: \
                 a row was removed from the range or inserted into it"
            ),
            SealFinding::Digest => write!(
                f,
                "seal {seal} (rows {first}..={last}) holds its rows' count but not their digest: \
                 a row in the range was changed"
            ),
            SealFinding::Chain => write!(
                f,
                "seal {seal} (rows {first}..={last}) does not follow the previous seal: the \
                 seals themselves were changed"
            ),
        }
    }
}

impl<DB: Backend> IdempotencyStore<DB> {
    /// Seals the audit rows inserted since the last seal and at least `settle` ago, in seals of
    /// at most [`SEAL_ROWS`] rows; the rows sealed. [`Maintenance`](crate::Maintenance) calls it
    /// on every run. Instances that seal at once do not conflict: a seal another made first
    /// ends this call.
    pub async fn seal_audit_log(&self, settle: Duration) -> Result<u64, StoreError> {
        Ok(self.seal_stoppable(settle, &mut || false).await?)
    }

    pub(crate) async fn seal_stoppable(
        &self,
        settle: Duration,
        stop: &mut (dyn FnMut() -> bool + Send),
    ) -> Result<u64, sqlx::Error> {
        let (pool, statements) = (&self.pool, self.config.statements());
        // The chain's end: read once, then carried from each seal this call records.
        let (mut number, mut after, mut previous) =
            match DB::audit_seals(pool, statements, true).await?.pop() {
                Some((number, _, last, _, digest, _, _)) => (number + 1, last, digest),
                None => (1, 0, GENESIS_DIGEST.to_owned()),
            };
        let mut sealed = 0;
        while !stop() {
            let rows: Vec<SealedRow> =
                DB::audit_rows(pool, statements, after, i64::MAX, millis(settle), SEAL_ROWS)
                    .await?
                    .into_iter()
                    .take_while(|(_, settled)| *settled)
                    .map(|(row, _)| row)
                    .collect();
            let Some(last) = rows.last().map(|row| row.seq) else {
                break;
            };
            let seal = AuditSeal {
                number,
                first_row: after + 1,
                last_row: last,
                rows: rows.len() as i64,
                digest: seal_digest(number, after + 1, last, &previous, &rows),
                previous_digest: previous,
                sealed_at_ms: 0, // the database's clock, set by the insert
            };
            if !DB::record_seal(pool, statements, &seal).await? {
                break; // another instance sealed this range first
            }
            sealed += rows.len() as u64;
            if seal.rows < SEAL_ROWS {
                break;
            }
            (number, after, previous) = (number + 1, last, seal.digest);
        }
        Ok(sealed)
    }

    /// Recomputes every seal of the audit log, in order, and stops at the first that no
    /// longer matches its rows or the chain. Reads one seal's rows at a time.
    pub async fn verify_audit_log(&self) -> Result<AuditVerification, StoreError> {
        let (pool, statements) = (&self.pool, self.config.statements());
        let seals = DB::audit_seals(pool, statements, false).await?;
        let oldest = DB::oldest_audit_seq(pool, statements).await?;
        let mut verification = AuditVerification {
            verified_seals: 0,
            verified_rows: 0,
            seals_past_retention: 0,
            seal_partly_past_retention: None,
            broken: None,
            latest: None,
        };
        let (mut previous_digest, mut previous_last) = (GENESIS_DIGEST.to_owned(), 0);
        let mut in_retention = true;
        for (index, row) in seals.into_iter().enumerate() {
            let seal = AuditSeal::from(row);
            let broken = |finding| BrokenSeal {
                seal: seal.number,
                first_row: seal.first_row,
                last_row: seal.last_row,
                finding,
            };
            let follows = seal.number == index as i64 + 1
                && seal.previous_digest == previous_digest
                && seal.first_row == previous_last + 1
                && seal.last_row >= seal.first_row;
            if !follows {
                verification.broken = Some(broken(SealFinding::Chain));
                break;
            }
            let emptied = oldest.is_none_or(|oldest| oldest > seal.last_row);
            let emptying = oldest.is_some_and(|oldest| oldest > seal.first_row);
            if in_retention && emptied {
                verification.seals_past_retention += 1;
            } else if in_retention && emptying {
                verification.seal_partly_past_retention = Some(seal.number);
                in_retention = false;
            } else {
                in_retention = false;
                let rows: Vec<SealedRow> = DB::audit_rows(
                    pool,
                    statements,
                    seal.first_row - 1,
                    seal.last_row,
                    0,
                    seal.rows + 1,
                )
                .await?
                .into_iter()
                .map(|(row, _)| row)
                .collect();
                let found = rows.len() as i64;
                if found != seal.rows {
                    verification.broken = Some(broken(SealFinding::RowCount {
                        sealed: seal.rows,
                        found,
                    }));
                    break;
                }
                let digest = seal_digest(
                    seal.number,
                    seal.first_row,
                    seal.last_row,
                    &seal.previous_digest,
                    &rows,
                );
                if digest != seal.digest {
                    verification.broken = Some(broken(SealFinding::Digest));
                    break;
                }
                verification.verified_seals += 1;
                verification.verified_rows += found.unsigned_abs();
            }
            previous_digest.clone_from(&seal.digest);
            previous_last = seal.last_row;
            verification.latest = Some(seal);
        }
        Ok(verification)
    }
}
