//! Test harness: a gateway on a loopback socket and a small Centrifugo-protocol client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use nexus_auth::{Claims, Role, TokenKeys};
use nexus_gateway::{ApiKey, ConnSocket, Engine, Gateway, GatewayConfig, MemoryEngine, router};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tower::ServiceExt;

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";
pub const API_KEY: &str = "test-api-key";
const WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    pub addr: SocketAddr,
    pub gw: Gateway,
    pub keys: TokenKeys,
}

pub fn config() -> GatewayConfig {
    GatewayConfig {
        api_key: Some(ApiKey::new(API_KEY)),
        ..GatewayConfig::default()
    }
}

pub async fn start(config: GatewayConfig) -> Server {
    start_with(config, MemoryEngine::new()).await
}

/// How the test server hands WebSocket upgrades to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// As `nexus serve` does on plain TCP: each request carries its connection's socket
    /// ([`ConnSocket`]), and the gateway frames and writes it itself.
    Direct,
    /// Through axum's WebSocket (what `nexus serve` does over TLS).
    Axum,
}

pub async fn start_with(config: GatewayConfig, engine: impl Engine) -> Server {
    start_on(Transport::Direct, config, engine).await
}

pub async fn start_on(transport: Transport, config: GatewayConfig, engine: impl Engine) -> Server {
    let keys = TokenKeys::new(SECRET, &[]);
    let gw = Gateway::new(config, keys.clone(), engine).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(gw.clone());
    match transport {
        Transport::Axum => {
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
        Transport::Direct => {
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let socket = socket2::SockRef::from(&stream).try_clone().unwrap();
                    let socket = ConnSocket::new(socket.into());
                    let service =
                        hyper_util::service::TowerToHyperService::new(app.clone().map_request(
                            move |mut req: hyper::Request<hyper::body::Incoming>| {
                                req.extensions_mut().insert(socket.clone());
                                req
                            },
                        ));
                    tokio::spawn(async move {
                        let builder = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        );
                        let _ = builder
                            .serve_connection_with_upgrades(
                                hyper_util::rt::TokioIo::new(stream),
                                service,
                            )
                            .await;
                    });
                }
            });
        }
    }
    Server { addr, gw, keys }
}

impl Server {
    pub fn token(&self, sub: &str, roles: &[Role], channels: &[&str], ttl: u64) -> String {
        let claims = Claims::new(sub, ttl)
            .with_roles(roles.to_vec())
            .with_channels(channels.iter().map(|c| c.to_string()).collect());
        self.keys.mint(&claims).unwrap()
    }

    /// A connected client (connect reply checked).
    pub async fn client(&self, sub: &str, roles: &[Role], channels: &[&str]) -> Client {
        let mut c = Client::open(self.addr).await;
        let token = self.token(sub, roles, channels, 600);
        let r = c.call("connect", json!({ "token": token })).await;
        assert!(r.get("connect").is_some(), "connect failed: {r}");
        c.connect_reply = r["connect"].clone();
        c
    }

    /// Calls the server HTTP API through the router (no socket).
    pub async fn api(&self, method: &str, body: Value) -> Value {
        let (status, v) = self.api_raw(method, body, Some(API_KEY)).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    pub async fn api_raw(&self, method: &str, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut req = axum::http::Request::post(format!("/api/{method}"))
            .header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let req = req.body(Body::from(body.to_string())).unwrap();
        let resp = router(self.gw.clone()).oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u32,
    pushes: VecDeque<Value>,
    replies: VecDeque<Value>,
    pub answer_pings: bool,
    pub pings_seen: usize,
    pub connect_reply: Value,
}

/// How a read ended when the server closed the connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed(pub u16, pub String);

impl Client {
    pub async fn open(addr: SocketAddr) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/connection/websocket"))
            .await
            .unwrap();
        Client {
            ws,
            next_id: 0,
            pushes: VecDeque::new(),
            replies: VecDeque::new(),
            answer_pings: true,
            pings_seen: 0,
            connect_reply: Value::Null,
        }
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Sends a command and returns its id.
    pub async fn send(&mut self, method: &str, params: Value) -> u32 {
        self.next_id += 1;
        let id = self.next_id;
        self.send_text(json!({ "id": id, method: params }).to_string())
            .await;
        id
    }

    /// Reads one frame; `Err` when the server closed.
    async fn read(&mut self) -> Result<(), Closed> {
        let msg = tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("timed out waiting for the server");
        match msg {
            Some(Ok(Message::Text(t))) => {
                for line in t.as_str().lines().filter(|l| !l.is_empty()) {
                    let v: Value = serde_json::from_str(line).unwrap();
                    if v.as_object().is_some_and(|o| o.is_empty()) {
                        self.pings_seen += 1;
                        if self.answer_pings {
                            self.ws.send(Message::text("{}")).await.unwrap();
                        }
                    } else if v.get("push").is_some() {
                        self.pushes.push_back(v);
                    } else {
                        self.replies.push_back(v);
                    }
                }
                Ok(())
            }
            Some(Ok(Message::Close(Some(f)))) => {
                Err(Closed(u16::from(f.code), f.reason.to_string()))
            }
            Some(Ok(Message::Close(None))) | None => Err(Closed(0, String::new())),
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(Closed(1, e.to_string())),
        }
    }

    pub async fn reply(&mut self, id: u32) -> Value {
        loop {
            if let Some(i) = self.replies.iter().position(|r| r["id"] == id) {
                return self.replies.remove(i).unwrap();
            }
            if let Err(c) = self.read().await {
                panic!("closed {c:?} while waiting for reply {id}");
            }
        }
    }

    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params).await;
        self.reply(id).await
    }

    /// Subscribes and returns the `subscribe` result (panics on error).
    pub async fn subscribe(&mut self, params: Value) -> Value {
        let r = self.call("subscribe", params).await;
        assert!(r.get("subscribe").is_some(), "subscribe failed: {r}");
        r["subscribe"].clone()
    }

    pub async fn push(&mut self) -> Value {
        loop {
            if let Some(p) = self.pushes.pop_front() {
                return p["push"].clone();
            }
            if let Err(c) = self.read().await {
                panic!("closed {c:?} while waiting for a push");
            }
        }
    }

    /// The next publication push's data.
    pub async fn publication(&mut self) -> Value {
        loop {
            let p = self.push().await;
            if p.get("pub").is_some() {
                return p["pub"].clone();
            }
        }
    }

    /// Whether a push arrives within `d`.
    pub async fn quiet_for(&mut self, d: Duration) -> bool {
        if !self.pushes.is_empty() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < deadline {
            let left = deadline - tokio::time::Instant::now();
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Text(t)))) => {
                    for line in t.as_str().lines() {
                        let v: Value = serde_json::from_str(line).unwrap();
                        if v.get("push").is_some() {
                            self.pushes.push_back(v);
                            return false;
                        }
                        if v.as_object().is_some_and(|o| o.is_empty()) {
                            self.pings_seen += 1;
                            self.ws.send(Message::text("{}")).await.unwrap();
                        }
                    }
                }
                Ok(_) => return false,
            }
        }
        true
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn closed(&mut self) -> Closed {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for the close");
            match msg {
                Some(Ok(Message::Close(Some(f)))) => {
                    return Closed(u16::from(f.code), f.reason.to_string());
                }
                Some(Ok(Message::Close(None))) | None => return Closed(0, String::new()),
                Some(Err(e)) => return Closed(1, e.to_string()),
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
