//! User accounts.

use crate::db::Store;
use crate::error::StoreError;
use crate::now_ms;
use crate::outbox::{NewEvent, insert_events};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A stored user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// User id (UUID text).
    pub id: String,
    /// E-mail, stored lower-cased; unique.
    pub email: String,
    /// Display name.
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Role names (`patient`, `admin`, …).
    pub roles: Vec<String>,
    /// Whether the e-mail address was confirmed.
    pub email_verified: bool,
    /// Free-form user settings (notification preferences, language, …).
    pub settings: serde_json::Value,
    /// Phone number for SMS, if given.
    pub phone: Option<String>,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Last change, Unix ms.
    pub updated_at: i64,
}

impl UserRecord {
    /// A new, unverified user with empty settings, created at `now` (Unix ms).
    pub fn new(
        id: impl Into<String>,
        email: impl Into<String>,
        name: impl Into<String>,
        password_hash: impl Into<String>,
        roles: Vec<String>,
        now: i64,
    ) -> Self {
        UserRecord {
            id: id.into(),
            email: email.into().to_lowercase(),
            name: name.into(),
            password_hash: password_hash.into(),
            roles,
            email_verified: false,
            settings: serde_json::json!({}),
            phone: None,
            created_at: now,
            updated_at: now,
        }
    }

    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let roles: String = row.try_get("roles")?;
        let settings: String = row.try_get("settings")?;
        Ok(UserRecord {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            password_hash: row.try_get("password_hash")?,
            roles: serde_json::from_str(&roles)
                .map_err(|e| StoreError::Corrupt(format!("users.roles: {e}")))?,
            email_verified: row.try_get::<i64, _>("email_verified")? != 0,
            settings: serde_json::from_str(&settings)
                .map_err(|e| StoreError::Corrupt(format!("users.settings: {e}")))?,
            phone: row.try_get("phone")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// Changes to a user's profile; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    /// New display name.
    pub name: Option<String>,
    /// New phone number (`Some(None)` clears it).
    pub phone: Option<Option<String>>,
}

const USER_COLUMNS: &str = "id, email, name, password_hash, roles, email_verified, settings, phone, created_at, updated_at";

fn json_text<T: Serialize>(v: &T) -> String {
    // Serializing plain strings and JSON values cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

impl Store {
    /// Inserts a user and its events; [`StoreError::Conflict`] when the e-mail is taken.
    pub async fn create_user(
        &self,
        user: &UserRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&user.id)
        .bind(user.email.to_lowercase())
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(json_text(&user.roles))
        .bind(i64::from(user.email_verified))
        .bind(json_text(&user.settings))
        .bind(user.phone.clone())
        .bind(user.created_at)
        .bind(user.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "email already registered"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(UserRecord::from_row)
            .transpose()
    }

    /// The user with this e-mail (case-insensitive).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
        ))
        .bind(email.to_lowercase())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(UserRecord::from_row)
        .transpose()
    }

    /// Applies `patch`; returns the updated user, or `None` when there is no such user.
    pub async fn update_user(
        &self,
        id: &str,
        patch: &UserPatch,
        events: &[NewEvent],
    ) -> Result<Option<UserRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let mut user = UserRecord::from_row(&row)?;
        if let Some(name) = &patch.name {
            user.name.clone_from(name);
        }
        if let Some(phone) = &patch.phone {
            user.phone.clone_from(phone);
        }
        user.updated_at = now_ms();
        sqlx::query("UPDATE users SET name = $1, phone = $2, updated_at = $3 WHERE id = $4")
            .bind(&user.name)
            .bind(user.phone.clone())
            .bind(user.updated_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    /// Replaces a user's roles; false when there is no such user.
    pub async fn set_roles(
        &self,
        id: &str,
        roles: &[String],
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        self.update_column(id, "roles", json_text(&roles), events)
            .await
    }

    /// Replaces a user's settings document; false when there is no such user.
    pub async fn set_settings(
        &self,
        id: &str,
        settings: &serde_json::Value,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        self.update_column(id, "settings", json_text(settings), events)
            .await
    }

    /// Replaces a user's password hash; false when there is no such user.
    pub async fn set_password_hash(&self, id: &str, hash: &str) -> Result<bool, StoreError> {
        self.update_column(id, "password_hash", hash.to_string(), &[])
            .await
    }

    /// Marks the e-mail address as verified; false when there is no such user.
    pub async fn mark_email_verified(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE users SET email_verified = 1, updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn update_column(
        &self,
        id: &str,
        column: &'static str,
        value: String,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(&format!(
            "UPDATE users SET {column} = $1, updated_at = $2 WHERE id = $3"
        ))
        .bind(value)
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            insert_events(&mut tx, events).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Erases a user (GDPR art. 17): the account row and every credential derived from it.
    /// The audit log keeps its entries, which name users only by id. False when there is no
    /// such user.
    pub async fn erase_user(&self, id: &str, events: &[NewEvent]) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        for table in ["refresh_tokens", "one_time_tokens"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        crate::healthcare::erase_person_in(&mut tx, id).await?;
        // Alert subscriptions hold addresses and the device's last known location; their
        // deliveries hold the addresses too (the targeting index forgets the ids lazily:
        // targeting finds the rows gone).
        sqlx::query(
            "DELETE FROM alert_deliveries WHERE recipient_id IN \
             (SELECT id FROM alert_subscriptions WHERE user_id = $1) OR recipient_id = $2",
        )
        .bind(id)
        .bind(format!("user#{id}"))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM alert_subscriptions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            insert_events(&mut tx, events).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Number of users holding `role`.
    pub async fn count_with_role(&self, role: &str) -> Result<i64, StoreError> {
        // Roles are a JSON array of fixed names, so a quoted substring match is exact.
        let row = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM users WHERE roles LIKE $1")
            .bind(format!("%\"{role}\"%"))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }
}
