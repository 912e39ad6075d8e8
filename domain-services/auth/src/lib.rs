//! Credentials for Nexus: signed tokens, roles and grants, password and secret hashing.
//!
//! One HS256 key signs every token the platform issues — API access tokens, gateway connection
//! tokens and SFU room tokens. What a token may do is decided by its claims (see
//! [`Claims`]): `roles` for the product API, `channels` for the realtime gateway, and
//! `room`/`room_kind`/`grants` for the SFU. Keys rotate by moving the current secret into the
//! list of previous secrets, which still verify but never sign.
//!
//! This crate does no I/O: it hashes, signs and verifies, and the callers store the results.
//!
//! # Layout
//! - [`token`] — [`Claims`], [`TokenKeys`] (mint and verify with rotation);
//! - [`role`] — [`Role`], [`Grant`], [`RoomKind`];
//! - [`secret`] — argon2id password hashing, opaque random secrets (refresh tokens, API keys) and
//!   their SHA-256 digests for storage;
//! - [`error`] — [`AuthError`].
//!
//! # Example
//! ```
//! use nexus_auth::{Claims, Grant, Role, RoomKind, TokenKeys};
//!
//! let keys = TokenKeys::new(b"current-secret-of-32-bytes-or-more!!", &[]);
//! let claims = Claims::new("doctor-1", 600)
//!     .with_roles(vec![Role::Provider])
//!     .with_room("consult-42", RoomKind::Consultation, vec![Grant::Publish, Grant::Subscribe]);
//! let token = keys.mint(&claims).unwrap();
//! let back = keys.verify(&token).unwrap();
//! assert_eq!(back.sub, "doctor-1");
//! assert!(back.has_grant("consult-42", Grant::Publish));
//! assert!(!back.has_grant("another-room", Grant::Publish));
//! ```

pub mod error;
pub mod role;
pub mod secret;
pub mod token;

pub use error::AuthError;
pub use role::{Grant, Role, RoomKind};
pub use secret::{hash_password, opaque_secret, sha256_hex, verify_password};
pub use token::{Claims, TokenKeys};
