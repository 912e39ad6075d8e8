//! The Centrifugo client protocol v2, JSON flavour: commands in, replies and pushes out.
//!
//! A WebSocket text frame carries one or more JSON objects separated by `\n`. A command is
//! `{"id": N, "<method>": {...}}`; its reply is `{"id": N, "<method>": {...}}` or
//! `{"id": N, "error": {"code", "message"}}`. Server-initiated messages are pushes,
//! `{"push": {"channel": "...", "pub" | "join" | "leave" | "unsubscribe" | "subscribe": {...}}}`.
//! An empty object `{}` is a ping from the server and the pong from the client.

use crate::error::GatewayError;
use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The ping (server → client) and pong (client → server) frame.
pub const PING: &[u8] = b"{}";

/// Validated JSON text, shared without copying (publication payloads).
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(Arc<str>);

impl RawJson {
    /// Serializes a value.
    pub fn from_value(v: &Value) -> Self {
        RawJson(v.to_string().into())
    }

    /// Checks that `text` is one JSON value.
    pub fn parse(text: &str) -> Result<Self, GatewayError> {
        serde_json::from_str::<&RawValue>(text)
            .map(|r| RawJson(r.get().into()))
            .map_err(|_| GatewayError::BadRequest("invalid JSON".into()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the text back into a value.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(RawJson(raw.get().into()))
    }
}

/// Who published, joined or left: Centrifugo's `ClientInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// User id.
    pub user: String,
    /// Connection id.
    pub client: String,
    /// Connection info (the token's display name, as `{"name": …}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_info: Option<Value>,
}

/// One message of a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    /// Position in the channel's stream (0 when the channel keeps no history).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// The payload.
    pub data: RawJson,
    /// The publishing client, when a client published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
}

/// A position in a channel's stream: `epoch` names the stream, `offset` counts in it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamPosition {
    /// Offset of the last publication (0 = none yet).
    #[serde(default)]
    pub offset: u64,
    /// Stream identity; changes when history is lost (restart, expiry).
    #[serde(default)]
    pub epoch: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

// ---------------------------------------------------------------------------------------------
// Commands

/// `connect` request.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectRequest {
    /// Connection JWT.
    #[serde(default)]
    pub token: String,
    /// Recovery state of server-side subscriptions.
    #[serde(default)]
    pub subs: BTreeMap<String, SubscribeRequest>,
    /// Client name (informational).
    #[serde(default)]
    pub name: String,
    /// Client version (informational).
    #[serde(default)]
    pub version: String,
}

/// `subscribe` request (also the recovery state of a server-side subscription).
#[derive(Debug, Default, Deserialize)]
pub struct SubscribeRequest {
    /// Channel name.
    #[serde(default)]
    pub channel: String,
    /// Ask to recover from `offset`/`epoch`.
    #[serde(default)]
    pub recover: bool,
    /// Stream epoch known to the client.
    #[serde(default)]
    pub epoch: String,
    /// Last offset the client saw.
    #[serde(default)]
    pub offset: u64,
    /// Subscription data; a geo filter `{"bbox": [...], "zoom": z}` on geo namespaces.
    #[serde(default)]
    pub data: Option<Value>,
    /// Ask for join/leave pushes.
    #[serde(default)]
    pub join_leave: bool,
}

/// A request naming only a channel (`unsubscribe`, `presence`, `presence_stats`).
#[derive(Debug, Default, Deserialize)]
pub struct ChannelRequest {
    /// Channel name.
    #[serde(default)]
    pub channel: String,
}

/// `publish` request.
#[derive(Debug, Deserialize)]
pub struct PublishRequest {
    /// Channel name.
    #[serde(default)]
    pub channel: String,
    /// Payload.
    pub data: Value,
}

/// `history` request.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryRequest {
    /// Channel name.
    #[serde(default)]
    pub channel: String,
    /// Publications wanted (0: only the stream position; negative: all kept).
    #[serde(default)]
    pub limit: i64,
    /// Return publications after this position.
    #[serde(default)]
    pub since: Option<StreamPosition>,
    /// Newest first.
    #[serde(default)]
    pub reverse: bool,
}

/// `refresh` request.
#[derive(Debug, Default, Deserialize)]
pub struct RefreshRequest {
    /// The new connection JWT.
    #[serde(default)]
    pub token: String,
}

#[derive(Deserialize)]
struct WireCommand {
    #[serde(default)]
    id: u32,
    connect: Option<ConnectRequest>,
    subscribe: Option<SubscribeRequest>,
    unsubscribe: Option<ChannelRequest>,
    publish: Option<PublishRequest>,
    presence: Option<ChannelRequest>,
    presence_stats: Option<ChannelRequest>,
    history: Option<HistoryRequest>,
    ping: Option<IgnoredAny>,
    send: Option<IgnoredAny>,
    rpc: Option<IgnoredAny>,
    refresh: Option<RefreshRequest>,
    sub_refresh: Option<IgnoredAny>,
}

/// What a command asks for.
#[derive(Debug)]
pub enum Method {
    /// Authenticate the connection.
    Connect(ConnectRequest),
    /// Subscribe to a channel.
    Subscribe(SubscribeRequest),
    /// Leave a channel.
    Unsubscribe(ChannelRequest),
    /// Publish into a channel.
    Publish(PublishRequest),
    /// List who is in a channel.
    Presence(ChannelRequest),
    /// Count who is in a channel.
    PresenceStats(ChannelRequest),
    /// Read a channel's history.
    History(HistoryRequest),
    /// Replace the connection token.
    Refresh(RefreshRequest),
    /// Old-style client ping: answered with an empty reply.
    Ping,
    /// Asynchronous message to the server (no reply; ignored).
    Send,
    /// RPC (not available: no RPC handler).
    Rpc,
    /// Subscription token refresh (not available: no subscription tokens).
    SubRefresh,
    /// `{}`: the answer to a server ping.
    Pong,
    /// A command naming no method this server knows.
    Unknown,
}

impl Method {
    /// The reply field name.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Connect(_) => "connect",
            Method::Subscribe(_) => "subscribe",
            Method::Unsubscribe(_) => "unsubscribe",
            Method::Publish(_) => "publish",
            Method::Presence(_) => "presence",
            Method::PresenceStats(_) => "presence_stats",
            Method::History(_) => "history",
            Method::Refresh(_) => "refresh",
            Method::Ping => "ping",
            Method::Send => "send",
            Method::Rpc => "rpc",
            Method::SubRefresh => "sub_refresh",
            Method::Pong | Method::Unknown => "",
        }
    }
}

/// One decoded command.
#[derive(Debug)]
pub struct Command {
    /// Request id echoed in the reply (0 for commands without a reply).
    pub id: u32,
    /// The request.
    pub method: Method,
}

/// Decodes a frame of newline-separated commands. Any malformed line fails the whole frame
/// (the connection is then closed with 3501 bad request).
pub fn decode_frame(text: &str) -> Result<Vec<Command>, serde_json::Error> {
    text.split('\n')
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let w: WireCommand = serde_json::from_str(line)?;
            let method = if let Some(r) = w.connect {
                Method::Connect(r)
            } else if let Some(r) = w.subscribe {
                Method::Subscribe(r)
            } else if let Some(r) = w.unsubscribe {
                Method::Unsubscribe(r)
            } else if let Some(r) = w.publish {
                Method::Publish(r)
            } else if let Some(r) = w.presence {
                Method::Presence(r)
            } else if let Some(r) = w.presence_stats {
                Method::PresenceStats(r)
            } else if let Some(r) = w.history {
                Method::History(r)
            } else if let Some(r) = w.refresh {
                Method::Refresh(r)
            } else if w.ping.is_some() {
                Method::Ping
            } else if w.send.is_some() {
                Method::Send
            } else if w.rpc.is_some() {
                Method::Rpc
            } else if w.sub_refresh.is_some() {
                Method::SubRefresh
            } else if w.id == 0 {
                Method::Pong
            } else {
                Method::Unknown
            };
            Ok(Command { id: w.id, method })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Replies and pushes

/// `connect` result.
#[derive(Debug, Default, Serialize)]
pub struct ConnectResult {
    /// Connection id.
    pub client: String,
    /// Server version.
    pub version: &'static str,
    /// Whether the connection expires (token `exp`).
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until expiry.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u64,
    /// Server-side subscriptions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeResult>,
    /// Server ping interval in seconds.
    pub ping: u64,
    /// The server expects pongs.
    pub pong: bool,
    /// Node name.
    pub node: String,
}

/// `subscribe` result (also each server-side subscription of a connect result).
#[derive(Debug, Default, Serialize, Clone)]
pub struct SubscribeResult {
    /// The channel keeps history: the client should recover on resubscribe.
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    /// Stream epoch.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Stream offset.
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Missed publications (on recovery).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    /// Whether every missed publication was recovered.
    #[serde(skip_serializing_if = "is_false")]
    pub recovered: bool,
    /// Whether the client asked to recover.
    #[serde(skip_serializing_if = "is_false")]
    pub was_recovering: bool,
}

/// `refresh` result.
#[derive(Debug, Serialize)]
pub struct RefreshResult {
    /// Connection id.
    pub client: String,
    /// Server version.
    pub version: &'static str,
    /// Whether the connection expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until expiry.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u64,
}

/// `history` result.
#[derive(Debug, Serialize)]
pub struct HistoryResult {
    /// Publications, oldest first unless `reverse`.
    pub publications: Vec<Publication>,
    /// Stream epoch.
    pub epoch: String,
    /// Top offset of the stream.
    pub offset: u64,
}

/// `presence` result.
#[derive(Debug, Serialize)]
pub struct PresenceResult {
    /// Connection id → info.
    pub presence: BTreeMap<String, ClientInfo>,
}

/// `presence_stats` result.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Default, Clone, Copy)]
pub struct PresenceStats {
    /// Connections subscribed.
    pub num_clients: u64,
    /// Distinct users subscribed.
    pub num_users: u64,
}

/// An empty result object.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// `{"id": id, "<method>": result}`.
pub fn encode_reply(id: u32, method: &str, result: &impl Serialize) -> Bytes {
    let body = serde_json::to_string(result).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("{{\"id\":{id},\"{method}\":{body}}}"))
}

/// `{"id": id, "error": {"code", "message"}}`.
pub fn encode_error(id: u32, err: &GatewayError) -> Bytes {
    let temporary = if err.is_temporary() {
        ",\"temporary\":true"
    } else {
        ""
    };
    Bytes::from(format!(
        "{{\"id\":{id},\"error\":{{\"code\":{},\"message\":\"{}\"{temporary}}}}}",
        err.code(),
        err.wire_message()
    ))
}

/// `{"id": id, "error": {...}}` for a bare code.
pub fn encode_error_code(id: u32, code: crate::error::ErrorCode) -> Bytes {
    Bytes::from(format!(
        "{{\"id\":{id},\"error\":{{\"code\":{},\"message\":\"{}\"}}}}",
        code.0,
        code.message()
    ))
}

#[derive(Serialize)]
struct Push<'a, T: Serialize> {
    push: PushBody<'a, T>,
}

#[derive(Serialize)]
struct PushBody<'a, T: Serialize> {
    channel: &'a str,
    #[serde(flatten)]
    body: T,
}

fn encode_push(channel: &str, kind: &'static str, body: &impl Serialize) -> Bytes {
    let mut m = BTreeMap::new();
    m.insert(kind, body);
    let v = Push {
        push: PushBody { channel, body: m },
    };
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

/// `{"push": {"channel", "pub": publication}}` — encoded once per publication.
pub fn encode_publication(channel: &str, p: &Publication) -> Bytes {
    encode_push(channel, "pub", p)
}

#[derive(Serialize)]
struct InfoBody<'a> {
    info: &'a ClientInfo,
}

/// `{"push": {"channel", "join": {"info"}}}`.
pub fn encode_join(channel: &str, info: &ClientInfo) -> Bytes {
    encode_push(channel, "join", &InfoBody { info })
}

/// `{"push": {"channel", "leave": {"info"}}}`.
pub fn encode_leave(channel: &str, info: &ClientInfo) -> Bytes {
    encode_push(channel, "leave", &InfoBody { info })
}

#[derive(Serialize)]
struct UnsubscribeBody<'a> {
    code: u32,
    reason: &'a str,
}

/// Unsubscribe code sent when the server API unsubscribes a client.
pub const UNSUBSCRIBE_SERVER: u32 = 2000;

/// `{"push": {"channel", "unsubscribe": {"code", "reason"}}}`.
pub fn encode_unsubscribe(channel: &str, code: u32, reason: &str) -> Bytes {
    encode_push(channel, "unsubscribe", &UnsubscribeBody { code, reason })
}

/// `{"push": {"channel", "subscribe": result}}` (server-side subscribe by the API).
pub fn encode_subscribe(channel: &str, r: &SubscribeResult) -> Bytes {
    encode_push(channel, "subscribe", r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_batched_commands_and_pong() {
        let frame = "{\"id\":1,\"connect\":{\"token\":\"t\",\"name\":\"js\"}}\n{\"id\":2,\"subscribe\":{\"channel\":\"incidents\",\"recover\":true,\"offset\":5,\"epoch\":\"e\",\"data\":{\"bbox\":[0,0,1,1]}}}\n\n{}";
        let cmds = decode_frame(frame).unwrap();
        assert_eq!(cmds.len(), 3);
        assert!(matches!(&cmds[0].method, Method::Connect(c) if c.token == "t"));
        match &cmds[1].method {
            Method::Subscribe(s) => {
                assert_eq!(
                    (s.channel.as_str(), s.recover, s.offset, s.epoch.as_str()),
                    ("incidents", true, 5, "e")
                );
                assert!(s.data.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(cmds[2].method, Method::Pong));
        assert!(matches!(
            decode_frame("{\"id\":3,\"frobnicate\":{}}").unwrap()[0].method,
            Method::Unknown
        ));
        assert!(decode_frame("{\"id\":1,\"connect\":").is_err());
        assert!(decode_frame("[1,2]").is_err());
    }

    #[test]
    fn encodes_replies_errors_and_pushes() {
        let r = encode_reply(
            7,
            "subscribe",
            &SubscribeResult {
                recoverable: true,
                epoch: "ab".into(),
                offset: 3,
                ..Default::default()
            },
        );
        let v: Value = serde_json::from_slice(&r).unwrap();
        assert_eq!(
            v,
            json!({"id": 7, "subscribe": {"recoverable": true, "epoch": "ab", "offset": 3}})
        );
        let e: Value =
            serde_json::from_slice(&encode_error(2, &GatewayError::PermissionDenied)).unwrap();
        assert_eq!(
            e,
            json!({"id": 2, "error": {"code": 103, "message": "permission denied"}})
        );
        let p = Publication {
            offset: 9,
            data: RawJson::parse(r#"{"a":1}"#).unwrap(),
            info: None,
        };
        let v: Value = serde_json::from_slice(&encode_publication("incidents", &p)).unwrap();
        assert_eq!(
            v,
            json!({"push": {"channel": "incidents", "pub": {"offset": 9, "data": {"a": 1}}}})
        );
        let info = ClientInfo {
            user: "u".into(),
            client: "c".into(),
            conn_info: None,
        };
        let v: Value = serde_json::from_slice(&encode_join("class:1", &info)).unwrap();
        assert_eq!(
            v,
            json!({"push": {"channel": "class:1", "join": {"info": {"user": "u", "client": "c"}}}})
        );
        let v: Value =
            serde_json::from_slice(&encode_unsubscribe("x", 2000, "server unsubscribe")).unwrap();
        assert_eq!(v["push"]["unsubscribe"]["code"], 2000);
    }

    #[test]
    fn raw_json_round_trips_and_rejects_garbage() {
        let r = RawJson::parse(" {\"x\": [1, 2]} ").unwrap();
        assert_eq!(r.to_value(), json!({"x": [1, 2]}));
        assert!(RawJson::parse("{").is_err());
        let p: Publication = serde_json::from_str(r#"{"offset":2,"data":{"k":"v"}}"#).unwrap();
        assert_eq!(p.data.as_str(), r#"{"k":"v"}"#);
    }
}
