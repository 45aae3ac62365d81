//! The protocol's statements of [`super::sql`], implemented once for every backend: only the
//! types differ. Each function sends its statement in the dialect of the connection at hand;
//! where the dialects differ in more than words, it branches on that [`Dialect`](super::Dialect),
//! which is how [`Any`](sqlx::Any) serves all three.

/// Binds the response and the key's scope, in the parameter order of [`STORE_RESPONSE`](super::sql::STORE_RESPONSE).
macro_rules! bind_response {
    ($query:expr, $scope:expr, $response:expr) => {{
        let (scope, response) = ($scope, $response);
        serde_json::to_string(&response.headers)
            .map_err(|e| sqlx::Error::Encode(e.into()))
            .map(|headers| {
                $query
                    .bind(i32::from(response.status))
                    .bind(headers)
                    .bind(response.body.as_slice())
                    .bind(scope.tenant.as_str())
                    .bind(scope.operation)
                    .bind(scope.key.as_str())
            })
    }};
}

/// The protocol's statements on every backend, each in the dialect of the connection at hand
/// ([`SqlDialect`](super::SqlDialect)); only the types differ.
macro_rules! shared_statements {
    () => {
        async fn postgres_findings(
            pool: &Pool<Self>,
            statements: Statements,
            check: PostgresCheck,
        ) -> Result<Vec<String>, sqlx::Error> {
            #[cfg(feature = "postgres")]
            if Self::pool_dialect(pool) == Dialect::Postgres {
                return Ok(in_session!(pool, statements, |conn| {
                    sqlx::query_scalar::<_, String>(check.sql())
                        .persistent(statements.persistent())
                        .fetch_all(conn)
                        .await?
                }));
            }
            let _ = (pool, statements, check);
            Ok(Vec::new())
        }

        async fn end_write(
            conn: &mut Self::Connection,
            statements: Statements,
        ) -> Result<(), sqlx::Error> {
            #[cfg(feature = "mysql")]
            if Self::dialect(conn) == Dialect::MySql {
                return sqlx::raw_sql(MYSQL_END_WRITE).execute(conn).await.map(drop);
            }
            if statements == Statements::Unnamed {
                if conn.cached_statements_size() > 0 {
                    conn.clear_cached_statements().await?;
                }
                sqlx::raw_sql("DEALLOCATE ALL").execute(conn).await?;
            }
            Ok(())
        }

        async fn find_record(
            conn: &mut Self::Connection,
            statements: Statements,
            scope: &KeyScope<'_>,
        ) -> Result<Option<KeyRecord>, sqlx::Error> {
            sqlx::query_as::<_, RecordRow>(FIND_RECORD.get(Self::dialect(conn)))
                .persistent(statements.persistent())
                .bind(scope.tenant.as_str())
                .bind(scope.operation)
                .bind(scope.key.as_str())
                .fetch_optional(conn)
                .await?
                .map(decode_record)
                .transpose()
        }

        async fn claim(
            tx: &mut Transaction<'_, Self>,
            statements: Statements,
            claim: &Claim<'_>,
        ) -> Result<bool, sqlx::Error> {
            let dialect = Self::dialect(tx);
            let mut entity_id = Uuid::encode_buffer();
            let query = sqlx::query(CLAIM.get(dialect))
                .persistent(statements.persistent())
                .bind(claim.scope.tenant.as_str())
                .bind(claim.scope.operation)
                .bind(claim.scope.key.as_str())
                .bind(claim.fingerprint.to_stored())
                .bind(&*claim.entity_id.hyphenated().encode_lower(&mut entity_id))
                .bind(claim.attempt_id)
                .bind(claim.retention_ms);
            #[cfg(feature = "mysql")]
            if dialect == Dialect::MySql {
                let done = query.execute(&mut **tx).await?;
                return match Self::last_insert_id(&done) {
                    // No AUTO_INCREMENT column: a fresh insert sets none (0); a conflict sets
                    // the row's attempt id after the update, ours if this attempt took it over.
                    Some(holder) => Ok(holder == 0 || holder == claim.attempt_id.cast_unsigned()),
                    None => Err(sqlx::Error::Protocol(
                        "MySQL answered the claim without its LAST_INSERT_ID".into(),
                    )),
                };
            }
            Ok(query.fetch_optional(&mut **tx).await?.is_some())
        }

        async fn applied_migrations(
            pool: &Pool<Self>,
            statements: Statements,
        ) -> Result<Vec<i64>, sqlx::Error> {
            let applied = in_session!(pool, statements, |conn| {
                sqlx::query_scalar::<_, i64>(APPLIED_MIGRATIONS)
                    .persistent(statements.persistent())
                    .fetch_all(conn)
                    .await
            });
            match applied {
                // The table does not exist: nothing was applied. Any other failure (no
                // permission, no connection) is reported as what it is.
                Err(sqlx::Error::Database(error)) if is_missing_table(error.as_ref()) => {
                    Ok(Vec::new())
                }
                applied => applied,
            }
        }

        async fn record_event(
            tx: &mut Transaction<'_, Self>,
            statements: Statements,
            event: &OutboxRecord<'_>,
        ) -> Result<(), sqlx::Error> {
            let (mut event_id, mut entity_id) = (Uuid::encode_buffer(), Uuid::encode_buffer());
            sqlx::query(RECORD_EVENT.get(Self::dialect(tx)))
                .persistent(statements.persistent())
                .bind(&*event.event_id.hyphenated().encode_lower(&mut event_id))
                .bind(event.tenant.as_str())
                .bind(event.operation)
                .bind(&*event.entity_id.hyphenated().encode_lower(&mut entity_id))
                .bind(event.topic)
                .bind(event.payload)
                .bind(event.sequence)
                .execute(&mut **tx)
                .await
                .map(drop)
        }

        async fn claim_events(
            pool: &Pool<Self>,
            statements: Statements,
            lease_ms: i64,
            limit: i64,
        ) -> Result<Vec<EventRow>, sqlx::Error> {
            let dialect = Self::pool_dialect(pool);
            #[cfg(feature = "mysql")]
            if dialect == Dialect::MySql {
                // No `UPDATE … RETURNING`: lock the due rows, then lease them, in one transaction.
                let mut tx = pool.begin_with(MYSQL_CLAIM_BEGIN).await?;
                let rows = sqlx::query_as::<_, EventRow>(CLAIM_EVENTS.get(dialect))
                    .persistent(statements.persistent())
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                if !rows.is_empty() {
                    let lease = mysql_lease_events(rows.len());
                    let query = rows.iter().fold(
                        sqlx::query(sqlx::AssertSqlSafe(lease))
                            .persistent(false)
                            .bind(lease_ms),
                        |query, row| query.bind(row.0.as_str()),
                    );
                    query.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                return Ok(rows);
            }
            Ok(in_session!(pool, statements, |conn| {
                sqlx::query_as::<_, EventRow>(CLAIM_EVENTS.get(dialect))
                    .persistent(statements.persistent())
                    .bind(lease_ms)
                    .bind(limit)
                    .fetch_all(conn)
                    .await?
            }))
        }

        async fn defer_event(
            pool: &Pool<Self>,
            statements: Statements,
            event_id: &str,
            delay_ms: i64,
        ) -> Result<(), sqlx::Error> {
            in_session!(pool, statements, |conn| {
                sqlx::query(DEFER_EVENT.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(delay_ms)
                    .bind(event_id)
                    .execute(conn)
                    .await?
            });
            Ok(())
        }

        async fn record_delivery_failure(
            pool: &Pool<Self>,
            statements: Statements,
            failure: &DeliveryFailure<'_>,
        ) -> Result<bool, sqlx::Error> {
            // Two statements (MySQL has no `RETURNING`): a failure is the rare path.
            let dialect = Self::pool_dialect(pool);
            let parked: Option<Option<i64>> = in_session!(pool, statements, |conn| {
                let done = sqlx::query(RECORD_DELIVERY_FAILURE.get(dialect))
                    .persistent(statements.persistent())
                    .bind(failure.error)
                    .bind(failure.backoff_ms)
                    .bind(failure.park_after)
                    .bind(failure.event_id)
                    .execute(&mut *conn)
                    .await?;
                if done.rows_affected() == 0 {
                    None
                } else {
                    sqlx::query_scalar(PARKED_AT.get(dialect))
                        .persistent(statements.persistent())
                        .bind(failure.event_id)
                        .fetch_optional(&mut *conn)
                        .await?
                }
            });
            Ok(matches!(parked, Some(Some(_))))
        }

        async fn parked_events(
            pool: &Pool<Self>,
            statements: Statements,
            limit: i64,
        ) -> Result<Vec<ParkedRow>, sqlx::Error> {
            Ok(in_session!(pool, statements, |conn| {
                sqlx::query_as::<_, ParkedRow>(PARKED_EVENTS.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(limit)
                    .fetch_all(conn)
                    .await?
            }))
        }

        async fn requeue_parked(
            pool: &Pool<Self>,
            statements: Statements,
            event_id: &str,
        ) -> Result<bool, sqlx::Error> {
            let done = in_session!(pool, statements, |conn| {
                sqlx::query(REQUEUE_PARKED.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(event_id)
                    .execute(conn)
                    .await?
            });
            Ok(done.rows_affected() == 1)
        }

        async fn outbox_backlog(
            pool: &Pool<Self>,
            statements: Statements,
        ) -> Result<(i64, i64, Option<i64>), sqlx::Error> {
            Ok(in_session!(pool, statements, |conn| {
                sqlx::query_as(OUTBOX_BACKLOG.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .fetch_one(conn)
                    .await?
            }))
        }

        async fn purge_delivered(
            pool: &Pool<Self>,
            statements: Statements,
            retention_ms: i64,
            limit: i64,
        ) -> Result<u64, sqlx::Error> {
            let done = in_session!(pool, statements, |conn| {
                sqlx::query(PURGE_DELIVERED.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(retention_ms)
                    .bind(limit)
                    .execute(conn)
                    .await?
            });
            Ok(done.rows_affected())
        }

        async fn mark_delivered(
            pool: &Pool<Self>,
            statements: Statements,
            event_id: &str,
        ) -> Result<bool, sqlx::Error> {
            let done = in_session!(pool, statements, |conn| {
                sqlx::query(MARK_DELIVERED.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(event_id)
                    .execute(conn)
                    .await?
            });
            Ok(done.rows_affected() == 1)
        }

        async fn record_write(
            tx: &mut Transaction<'_, Self>,
            statements: Statements,
            scope: &KeyScope<'_>,
            response: &StoredResponse,
            audit: &AuditRecord,
        ) -> Result<(), sqlx::Error> {
            let dialect = Self::dialect(tx);
            let persistent = statements.persistent();
            #[cfg(feature = "postgres")]
            if dialect == Dialect::Postgres {
                // One statement: a round trip saved on every new write.
                let query = sqlx::query(RECORD_WRITE_TOGETHER).persistent(persistent);
                let query = bind_response!(query, scope, response)?;
                bind_audit!(query, audit).execute(&mut **tx).await?;
                return Ok(());
            }
            // Two statements where a statement costs no round trip (SQLite) or the dialect
            // cannot say it in one (MySQL).
            let store = sqlx::query(STORE_RESPONSE.get(dialect)).persistent(persistent);
            bind_response!(store, scope, response)?
                .execute(&mut **tx)
                .await?;
            bind_audit!(
                sqlx::query(APPEND_AUDIT.get(dialect)).persistent(persistent),
                audit
            )
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        async fn append_audit_batch(
            pool: &Pool<Self>,
            statements: Statements,
            records: &[AuditRecord],
        ) -> Result<(), sqlx::Error> {
            let dialect = Self::pool_dialect(pool);
            in_session!(pool, statements, |conn| {
                // One text per batch size: not worth a prepared statement each.
                let mut insert =
                    sqlx::query(append_audit_rows(records.len(), dialect)).persistent(false);
                for record in records {
                    insert = bind_audit!(insert, record);
                }
                insert.execute(conn).await?
            });
            Ok(())
        }

        async fn purge_audit(
            pool: &Pool<Self>,
            statements: Statements,
            older_than_ms: i64,
            limit: i64,
        ) -> Result<u64, sqlx::Error> {
            let dialect = Self::pool_dialect(pool);
            #[cfg(feature = "postgres")]
            if dialect == Dialect::Postgres {
                let purged: i64 = in_session!(pool, statements, |conn| {
                    sqlx::query_scalar(PURGE_AUDIT_AS_OWNER)
                        .persistent(statements.persistent())
                        .bind(older_than_ms)
                        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
                        .fetch_one(conn)
                        .await?
                });
                return Ok(u64::try_from(purged).unwrap_or(0));
            }
            // The maintenance transaction opens its horizon (the log's triggers let rows older
            // than it go), deletes one batch, and closes it.
            let mut tx = pool.begin().await?;
            sqlx::query(OPEN_AUDIT_MAINTENANCE.get(dialect))
                .persistent(statements.persistent())
                .bind(older_than_ms)
                .execute(&mut *tx)
                .await?;
            let purged = sqlx::query(PURGE_AUDIT_BATCH.get(dialect))
                .persistent(statements.persistent())
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(CLOSE_AUDIT_MAINTENANCE)
                .persistent(statements.persistent())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(purged)
        }

        async fn database_clock(
            pool: &Pool<Self>,
            statements: Statements,
        ) -> Result<i64, sqlx::Error> {
            Ok(in_session!(pool, statements, |conn| {
                sqlx::query_scalar::<_, i64>(DATABASE_CLOCK.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .fetch_one(conn)
                    .await?
            }))
        }

        async fn audit_rows(
            pool: &Pool<Self>,
            statements: Statements,
            after: i64,
            through: i64,
            settle_ms: i64,
            limit: i64,
        ) -> Result<Vec<(SealedRow, bool)>, sqlx::Error> {
            use sqlx::Row as _;

            let rows = in_session!(pool, statements, |conn| {
                sqlx::query(AUDIT_ROWS_TO_SEAL.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(settle_ms)
                    .bind(after)
                    .bind(through)
                    .bind(limit)
                    .fetch_all(conn)
                    .await?
            });
            rows.iter()
                .map(|row| {
                    let text = |index: usize| row.try_get::<Option<String>, _>(index);
                    let number = |index: usize| row.try_get::<Option<i64>, _>(index);
                    let sealed = SealedRow {
                        seq: row.try_get(0)?,
                        text: [
                            text(1)?,
                            text(2)?,
                            text(3)?,
                            text(4)?,
                            text(5)?,
                            text(6)?,
                            text(7)?,
                            text(8)?,
                            text(9)?,
                            text(11)?,
                            text(14)?,
                        ],
                        numbers: [
                            number(10)?,
                            number(12)?,
                            number(15)?,
                            number(16)?,
                            number(17)?,
                            number(18)?,
                        ],
                        duration_ms: row.try_get(13)?,
                    };
                    Ok((sealed, row.try_get::<i64, _>(19)? == 1))
                })
                .collect()
        }

        async fn audit_seals(
            pool: &Pool<Self>,
            statements: Statements,
            latest_only: bool,
        ) -> Result<Vec<SealRow>, sqlx::Error> {
            Ok(in_session!(pool, statements, |conn| {
                sqlx::query_as::<_, SealRow>(if latest_only {
                    LATEST_AUDIT_SEAL
                } else {
                    AUDIT_SEALS
                })
                .persistent(statements.persistent())
                .fetch_all(conn)
                .await?
            }))
        }

        async fn record_seal(
            pool: &Pool<Self>,
            statements: Statements,
            seal: &AuditSeal,
        ) -> Result<bool, sqlx::Error> {
            let recorded = in_session!(pool, statements, |conn| {
                sqlx::query(RECORD_AUDIT_SEAL.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(seal.number)
                    .bind(seal.first_row)
                    .bind(seal.last_row)
                    .bind(seal.rows)
                    .bind(seal.digest.as_str())
                    .bind(seal.previous_digest.as_str())
                    .execute(conn)
                    .await
            });
            match recorded {
                Ok(_) => Ok(true),
                Err(sqlx::Error::Database(error)) if error.is_unique_violation() => Ok(false),
                Err(error) => Err(error),
            }
        }

        async fn oldest_audit_seq(
            pool: &Pool<Self>,
            statements: Statements,
        ) -> Result<Option<i64>, sqlx::Error> {
            Ok(in_session!(pool, statements, |conn| {
                sqlx::query_scalar::<_, Option<i64>>(OLDEST_AUDIT_SEQ)
                    .persistent(statements.persistent())
                    .fetch_one(conn)
                    .await?
            }))
        }

        async fn purge_expired(
            pool: &Pool<Self>,
            statements: Statements,
            limit: i64,
        ) -> Result<u64, sqlx::Error> {
            let done = in_session!(pool, statements, |conn| {
                sqlx::query(PURGE_EXPIRED.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(limit)
                    .execute(conn)
                    .await?
            });
            Ok(done.rows_affected())
        }
    };
}

pub(crate) use {bind_response, shared_statements};
