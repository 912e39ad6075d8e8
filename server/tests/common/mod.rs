//! Test harness: runs the real `nexus` binary on a free port with its own data dir, and talks
//! HTTP to it.

#![allow(dead_code, clippy::unwrap_used)]

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The JWT secret test servers use, so tests can mint tokens (e.g. expired ones) themselves.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// Path of the binary under test.
pub fn nexus_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nexus")
}

/// A running server.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The data dir (kept alive for the server's life).
    pub dir: tempfile::TempDir,
    /// Everything the server logged so far.
    pub log: Arc<Mutex<String>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response, with the body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Raw body.
    pub body: Bytes,
    /// Parsed JSON body, or Null.
    pub json: serde_json::Value,
}

impl Resp {
    /// Content type header.
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a problem document with the given status and type slug.
    pub fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.content_type(), "application/problem+json", "{self:?}");
        assert_eq!(
            self.json["type"],
            format!("/problems/{kind}"),
            "{}",
            self.json
        );
        assert_eq!(self.json["status"], status);
        assert!(self.json["title"].is_string());
    }
}

impl Server {
    /// Starts `nexus serve` with extra environment variables; SQLite in a temp dir by default.
    pub fn start(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Server::start_in(dir, env)
    }

    /// Starts on PostgreSQL when the test environment provides it.
    pub async fn start_postgres(env: &[(&str, &str)]) -> Option<Server> {
        let url = nexus_store::testing::fresh_postgres_url().await?;
        let mut all: Vec<(&str, &str)> = env.to_vec();
        all.push(("NEXUS_DATABASE_URL", url.as_str()));
        Some(Server::start(&all))
    }

    /// Starts with a given data dir.
    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(nexus_bin());
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NEXUS_HTTP_ADDR", "127.0.0.1:0")
            .env("NEXUS_DATA_DIR", dir.path())
            .env("NEXUS_JWT_SECRET", JWT_SECRET)
            .env("NEXUS_LOG_FORMAT", "json")
            .env("NEXUS_SHUTDOWN_GRACE", "5s")
            // Free UDP ports, so that servers of parallel tests do not collide on 7882.
            .env("NEXUS_SFU_UDP_ADDR", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn nexus");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    {
                        let mut l = log.lock().unwrap();
                        l.push_str(&line);
                        l.push('\n');
                    }
                    if line.contains("\"listening\"")
                        && line.contains("\"scheme\":\"http")
                        && let Some(tx) = tx.take()
                    {
                        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                        let _ = tx.send(v["addr"].as_str().unwrap().to_string());
                    }
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start: {}", log.lock().unwrap());
            }
        };
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
            dir,
            log,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request; `body` is sent as JSON when it is not Null.
    pub async fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> Resp {
        let mut headers = vec![];
        if let Some(t) = token {
            headers.push(("authorization".to_string(), format!("Bearer {t}")));
        }
        let raw = if body.is_null() {
            None
        } else {
            headers.push(("content-type".into(), "application/json".into()));
            Some(body.to_string().into_bytes())
        };
        self.raw(method, path, &headers, raw).await
    }

    /// Like [`Server::raw`], but `None` when the connection fails before a response arrives.
    pub async fn try_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Option<Resp> {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        let req = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let resp = self.client.request(req).await.ok()?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        if status >= 500 {
            // A server error is never expected by a test: keep the server's side of it with
            // the test's output (shown when the test fails). The log reader runs on its own
            // thread, so give it a moment to catch up.
            tokio::time::sleep(Duration::from_millis(200)).await;
            eprintln!(
                "{method} {path} answered {status}; server log:\n{}",
                self.logs()
            );
        }
        Some(Resp {
            status,
            headers,
            body,
            json,
        })
    }

    /// Sends a request with explicit headers and raw body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        self.try_raw(method, path, headers, body)
            .await
            .unwrap_or_else(|| panic!("{method} {path}: no response"))
    }

    /// Registers a user and logs in; returns (user id, access token, refresh token).
    pub async fn register_login(
        &self,
        email: &str,
        password: &str,
        name: &str,
    ) -> (String, String, String) {
        let r = self
            .req(
                "POST",
                "/api/v1/auth/register",
                None,
                serde_json::json!({"email": email, "password": password, "name": name}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        let id = r.json["id"].as_str().unwrap().to_string();
        let r = self
            .req(
                "POST",
                "/api/v1/auth/login",
                None,
                serde_json::json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        (
            id,
            r.json["access_token"].as_str().unwrap().to_string(),
            r.json["refresh_token"].as_str().unwrap().to_string(),
        )
    }

    /// Mints a token with the server's secret.
    pub fn token(&self, sub: &str, roles: &[nexus_auth::Role], ttl: u64) -> String {
        let keys = nexus_auth::TokenKeys::new(JWT_SECRET.as_bytes(), &[]);
        keys.mint(&nexus_auth::Claims::new(sub, ttl).with_roles(roles.to_vec()))
            .unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop within 30 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Runs another `nexus` command against this server's data dir.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        run_cli(self.dir.path(), args, stdin)
    }
}

/// Runs `nexus ARGS` with the test secret and the given data dir.
pub fn run_cli(
    data_dir: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut cmd = Command::new(nexus_bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NEXUS_DATA_DIR", data_dir)
        .env("NEXUS_JWT_SECRET", JWT_SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
