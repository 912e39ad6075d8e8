//! Refresh-token families, one-time tokens (e-mail verification, password reset) and API keys.
//!
//! Secrets are never stored: callers pass their SHA-256 digests.

use crate::db::Store;
use crate::error::StoreError;
use sqlx::Row;

/// A refresh token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// SHA-256 of the opaque token.
    pub token_hash: String,
    /// Rotation family: every token obtained by refreshing shares the first token's family.
    pub family_id: String,
    /// Owner.
    pub user_id: String,
    /// Expiry, Unix ms.
    pub expires_at: i64,
    /// Creation, Unix ms.
    pub created_at: i64,
}

/// What happened when a refresh token was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The token was valid; it is now used and its successor stored.
    Rotated {
        /// The owner.
        user_id: String,
    },
    /// The token had already been used or revoked: a sign of theft, so the whole family has
    /// been revoked.
    Reused {
        /// The owner.
        user_id: String,
    },
    /// Unknown token.
    NotFound,
    /// The token expired.
    Expired,
}

/// A stored API key (without its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Key id.
    pub id: String,
    /// Human name.
    pub name: String,
    /// `gateway` or `admin`.
    pub scope: String,
    /// Creation, Unix ms.
    pub created_at: i64,
}

impl Store {
    /// Stores a new refresh token.
    pub async fn insert_refresh(&self, rec: &RefreshRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&rec.token_hash)
        .bind(&rec.family_id)
        .bind(&rec.user_id)
        .bind(rec.expires_at)
        .bind(rec.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::from_write(e, "refresh token exists"))?;
        Ok(())
    }

    /// Uses the token with digest `old_hash` and stores `next` (same family, same user) in one
    /// transaction. Presenting a used or revoked token revokes its whole family.
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        next: &RefreshRecord,
        now: i64,
    ) -> Result<RotateOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query(
            "SELECT family_id, user_id, expires_at, used_at, revoked_at FROM refresh_tokens \
             WHERE token_hash = $1",
        )
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(RotateOutcome::NotFound);
        };
        let family: String = row.try_get("family_id")?;
        let user_id: String = row.try_get("user_id")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let used_at: Option<i64> = row.try_get("used_at")?;
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        if used_at.is_some() || revoked_at.is_some() {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(&family)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(RotateOutcome::Reused { user_id });
        }
        if expires_at <= now {
            return Ok(RotateOutcome::Expired);
        }
        // The guard on used_at makes the rotation single-use even if two requests race.
        let n = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(old_hash)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(RotateOutcome::Reused { user_id });
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&next.token_hash)
        .bind(&family)
        .bind(&user_id)
        .bind(next.expires_at)
        .bind(next.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RotateOutcome::Rotated { user_id })
    }

    /// Revokes the family of the token with digest `hash` (logout). Returns the owner, or
    /// `None` for an unknown token.
    pub async fn revoke_refresh_family(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(row) =
            sqlx::query("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(hash)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(None);
        };
        let family: String = row.try_get(0)?;
        let user_id: String = row.try_get(1)?;
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&family)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(user_id))
    }

    /// Revokes every refresh token of a user (password change, role change).
    pub async fn revoke_user_refresh(&self, user_id: &str, now: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Stores a one-time token (`purpose` e.g. `verify_email`, `reset_password`).
    pub async fn insert_one_time(
        &self,
        hash: &str,
        user_id: &str,
        purpose: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO one_time_tokens (token_hash, user_id, purpose, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(user_id)
        .bind(purpose)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consumes a one-time token: returns its user when it exists, has this purpose, is unused
    /// and unexpired; it cannot be used again.
    pub async fn consume_one_time(
        &self,
        hash: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT user_id FROM one_time_tokens WHERE token_hash = $1 AND purpose = $2 \
             AND used_at IS NULL AND expires_at > $3",
        )
        .bind(hash)
        .bind(purpose)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id: String = row.try_get(0)?;
        sqlx::query("UPDATE one_time_tokens SET used_at = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(user_id))
    }

    /// Stores an API key by the digest of its secret.
    pub async fn insert_api_key(
        &self,
        rec: &ApiKeyRecord,
        key_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, scope, key_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&rec.id)
        .bind(&rec.name)
        .bind(&rec.scope)
        .bind(key_hash)
        .bind(rec.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::from_write(e, "api key exists"))?;
        Ok(())
    }

    /// The unrevoked API key whose secret has digest `key_hash`.
    pub async fn api_key_by_hash(
        &self,
        key_hash: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, scope, created_at FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ApiKeyRecord {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                scope: r.try_get(2)?,
                created_at: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Revokes an API key by id; false when unknown or already revoked.
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }
}
