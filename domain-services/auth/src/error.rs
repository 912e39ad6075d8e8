//! Errors of token and password handling.

/// Why a credential was not accepted or could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token's `exp` lies in the past.
    #[error("token expired")]
    Expired,
    /// The token is malformed, signed with an unknown key or uses another algorithm.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The signing secret is too short to be safe.
    #[error("signing secret must be at least {min} bytes, got {got}")]
    WeakSecret {
        /// Minimum length in bytes.
        min: usize,
        /// Length given.
        got: usize,
    },
    /// Hashing or signing failed inside the crypto library.
    #[error("crypto failure: {0}")]
    Crypto(String),
}
