//! Store errors.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A uniqueness constraint was violated (e.g. an e-mail already registered).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database URL is not `sqlite://…` or `postgres://…`.
    #[error("unsupported database url `{0}` (use sqlite://… or postgres://…)")]
    UnsupportedUrl(String),
    /// A stored migration differs from the one this binary carries.
    #[error("migration {version} was changed after it was applied")]
    MigrationChanged {
        /// The migration version.
        version: i64,
    },
    /// Stored data could not be decoded (corrupt JSON column and the like).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database reported an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Maps unique-constraint violations to [`StoreError::Conflict`].
    pub(crate) fn from_write(e: sqlx::Error, what: &str) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return StoreError::Conflict(what.to_string());
        }
        StoreError::Database(e)
    }
}
