//! Errors of the gateway, and the Centrifugo error and disconnect codes they map to.

use std::borrow::Cow;

/// Why a gateway operation failed.
///
/// Each variant maps to one Centrifugo protocol error code ([`GatewayError::code`]), which is
/// what clients and server-API callers see.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The channel name matches no configured namespace, or is malformed.
    #[error("unknown channel")]
    UnknownChannel,
    /// The caller's token or roles do not allow this operation on this channel.
    #[error("permission denied")]
    PermissionDenied,
    /// The connection is already subscribed to the channel.
    #[error("already subscribed")]
    AlreadySubscribed,
    /// A per-connection limit (channels per connection) was reached.
    #[error("limit exceeded")]
    LimitExceeded,
    /// The request is malformed: bad JSON, bad bounding box, missing field.
    #[error("bad request: {0}")]
    BadRequest(Cow<'static, str>),
    /// The feature (history, presence, RPC) is not enabled where it was asked for.
    #[error("not available")]
    NotAvailable,
    /// The connection token's `exp` lies in the past.
    #[error("token expired")]
    TokenExpired,
    /// A history query named a stream position from another epoch.
    #[error("unrecoverable position")]
    UnrecoverablePosition,
    /// The engine (Redis) failed or is unreachable.
    #[error("engine error: {0}")]
    Engine(String),
    /// The gateway configuration is inconsistent.
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    /// The gateway is shutting down.
    #[error("gateway is shutting down")]
    Shutdown,
    /// An invariant broke inside the gateway.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// The Centrifugo protocol error code for this error.
    pub fn code(&self) -> u32 {
        match self {
            GatewayError::UnknownChannel => ErrorCode::UNKNOWN_CHANNEL.0,
            GatewayError::PermissionDenied => ErrorCode::PERMISSION_DENIED.0,
            GatewayError::AlreadySubscribed => ErrorCode::ALREADY_SUBSCRIBED.0,
            GatewayError::LimitExceeded => ErrorCode::LIMIT_EXCEEDED.0,
            GatewayError::BadRequest(_) | GatewayError::Config(_) => ErrorCode::BAD_REQUEST.0,
            GatewayError::NotAvailable => ErrorCode::NOT_AVAILABLE.0,
            GatewayError::TokenExpired => ErrorCode::TOKEN_EXPIRED.0,
            GatewayError::UnrecoverablePosition => ErrorCode::UNRECOVERABLE_POSITION.0,
            GatewayError::Engine(_) | GatewayError::Shutdown | GatewayError::Internal(_) => {
                ErrorCode::INTERNAL.0
            }
        }
    }

    /// The message sent on the wire: the Centrifugo wording, without internal details.
    pub fn wire_message(&self) -> &'static str {
        ErrorCode(self.code()).message()
    }

    /// Whether the client may retry the same command later (Centrifugo's `temporary`).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            GatewayError::Engine(_) | GatewayError::Shutdown | GatewayError::Internal(_)
        )
    }
}

/// A Centrifugo protocol error code, sent as `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// 100: the server failed.
    pub const INTERNAL: ErrorCode = ErrorCode(100);
    /// 101: no or invalid credentials.
    pub const UNAUTHORIZED: ErrorCode = ErrorCode(101);
    /// 102: no namespace matches the channel.
    pub const UNKNOWN_CHANNEL: ErrorCode = ErrorCode(102);
    /// 103: not allowed.
    pub const PERMISSION_DENIED: ErrorCode = ErrorCode(103);
    /// 104: no such method.
    pub const METHOD_NOT_FOUND: ErrorCode = ErrorCode(104);
    /// 105: the connection already has this subscription.
    pub const ALREADY_SUBSCRIBED: ErrorCode = ErrorCode(105);
    /// 106: a limit was reached.
    pub const LIMIT_EXCEEDED: ErrorCode = ErrorCode(106);
    /// 107: the request is malformed.
    pub const BAD_REQUEST: ErrorCode = ErrorCode(107);
    /// 108: the feature is off.
    pub const NOT_AVAILABLE: ErrorCode = ErrorCode(108);
    /// 109: the connection token expired: get a new one.
    pub const TOKEN_EXPIRED: ErrorCode = ErrorCode(109);
    /// 110: the connection expired.
    pub const EXPIRED: ErrorCode = ErrorCode(110);
    /// 111: too many requests.
    pub const TOO_MANY_REQUESTS: ErrorCode = ErrorCode(111);
    /// 112: the stream position cannot be recovered.
    pub const UNRECOVERABLE_POSITION: ErrorCode = ErrorCode(112);

    /// Centrifugo's message for the code.
    pub fn message(self) -> &'static str {
        match self.0 {
            100 => "internal server error",
            101 => "unauthorized",
            102 => "unknown channel",
            103 => "permission denied",
            104 => "method not found",
            105 => "already subscribed",
            106 => "limit exceeded",
            107 => "bad request",
            108 => "not available",
            109 => "token expired",
            110 => "expired",
            111 => "too many requests",
            112 => "unrecoverable position",
            _ => "error",
        }
    }
}

/// Why the server closes a connection: a WebSocket close code and a short reason.
///
/// Codes follow Centrifuge: 3000–3499 and 4000–4499 let the client reconnect, 3500–3999 and
/// 4500–4999 are terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The close code.
    pub code: u16,
    /// The close reason (at most 123 bytes on the wire).
    pub reason: Cow<'static, str>,
}

impl Disconnect {
    /// 3000: the connection closed without advice from the server.
    pub const CONNECTION_CLOSED: Disconnect = Disconnect::new_static(3000, "connection closed");
    /// 3001: the node is shutting down; reconnect elsewhere.
    pub const SHUTDOWN: Disconnect = Disconnect::new_static(3001, "shutdown");
    /// 3004: the server failed.
    pub const SERVER_ERROR: Disconnect = Disconnect::new_static(3004, "internal server error");
    /// 3005: the connection token expired and was not refreshed.
    pub const EXPIRED: Disconnect = Disconnect::new_static(3005, "connection expired");
    /// 3008: the client did not read fast enough: its outgoing queue overflowed.
    pub const SLOW: Disconnect = Disconnect::new_static(3008, "slow");
    /// 3009: writing to the connection failed.
    pub const WRITE_ERROR: Disconnect = Disconnect::new_static(3009, "write error");
    /// 3010: the client's stream position is inconsistent; reconnect and recover.
    pub const INSUFFICIENT_STATE: Disconnect = Disconnect::new_static(3010, "insufficient state");
    /// 3011: the server asks the client to reconnect.
    pub const FORCE_RECONNECT: Disconnect = Disconnect::new_static(3011, "force reconnect");
    /// 3012: the client did not answer a ping in time.
    pub const NO_PONG: Disconnect = Disconnect::new_static(3012, "no pong");
    /// 3500: the connection token is invalid (terminal).
    pub const INVALID_TOKEN: Disconnect = Disconnect::new_static(3500, "invalid token");
    /// 3501: malformed frame or wrong command order (terminal).
    pub const BAD_REQUEST: Disconnect = Disconnect::new_static(3501, "bad request");
    /// 3502: no connect command arrived in time (terminal).
    pub const STALE: Disconnect = Disconnect::new_static(3502, "stale");
    /// 3503: disconnected by the server API, do not reconnect (terminal).
    pub const FORCE_NO_RECONNECT: Disconnect = Disconnect::new_static(3503, "force disconnect");
    /// 3504: too many connections (terminal).
    pub const CONNECTION_LIMIT: Disconnect = Disconnect::new_static(3504, "connection limit");

    const fn new_static(code: u16, reason: &'static str) -> Self {
        Disconnect {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    /// A custom disconnect (server API); the reason is cut to fit a close frame.
    pub fn custom(code: u16, reason: impl Into<String>) -> Self {
        let mut reason: String = reason.into();
        if reason.len() > 123 {
            let mut cut = 123;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Disconnect {
            code,
            reason: Cow::Owned(reason),
        }
    }

    /// Whether a client should reconnect after this disconnect.
    pub fn reconnect(&self) -> bool {
        !((3500..4000).contains(&self.code) || (4500..5000).contains(&self.code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_centrifugo_codes() {
        assert_eq!(GatewayError::UnknownChannel.code(), 102);
        assert_eq!(GatewayError::PermissionDenied.code(), 103);
        assert_eq!(GatewayError::BadRequest("x".into()).code(), 107);
        assert_eq!(GatewayError::TokenExpired.code(), 109);
        assert_eq!(GatewayError::UnrecoverablePosition.code(), 112);
        assert_eq!(
            GatewayError::Engine("down".into()).wire_message(),
            "internal server error"
        );
        assert!(GatewayError::Engine("down".into()).is_temporary());
    }

    #[test]
    fn terminal_codes_do_not_reconnect() {
        assert!(Disconnect::SLOW.reconnect());
        assert!(Disconnect::SHUTDOWN.reconnect());
        assert!(!Disconnect::INVALID_TOKEN.reconnect());
        assert!(!Disconnect::custom(4501, "bye").reconnect());
        assert_eq!(Disconnect::custom(4000, "é".repeat(100)).reason.len(), 122);
    }
}
