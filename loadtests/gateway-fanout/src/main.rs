//! Fan-out benchmark of the Nexus realtime gateway (issue 5).
//!
//! Starts a release `nexus serve` (or targets one by URL), opens N WebSocket connections
//! (Centrifugo JSON protocol) whose token subscribes them server-side to one channel, then
//! publishes 200-byte messages through `POST /api/publish` at increasing rates and measures,
//! per rate step: deliveries/s, p50/p99 publish→receive latency (the publish time travels in
//! the payload), and the server's CPU time. Before the steps it measures the server's memory
//! per idle connection (`VmRSS` from `/proc/PID/status` before and after connecting).
//!
//! Bounded: stops by itself after `--max-secs` (default 110 s) or at the first saturated
//! step; binds only 127.0.0.x.
//!
//! ```text
//! cargo run --release -- --nexus-bin ../target/release/nexus            # starts nexus itself
//! cargo run --release -- --url http://127.0.0.1:8080 --api-key K --token T [--nexus-pid P]
//! ```
//! Options: `--connections 10000 --rates 10,25,50,100 --step-secs 8 --source-ips 4
//! --channel incidents:bench --payload-bytes 200 --max-secs 110 --connect-concurrency 200
//! --max-p99-ms 2000` (a step that delivers < 90 %, or whose p99 is above this, is the last)
//! `--aligned-lanes` (fire all publisher lanes at once, in bursts, as the harness did before
//! 2026-11-26: to compare with earlier figures).
//! `--read-tick-us T` (0 = off, the default): each client thread takes its sockets' readiness
//! every T µs instead of sleeping in `epoll_wait` until the next frame arrives — as a NIC's
//! interrupt moderation does for a real client machine. On loopback every write otherwise
//! wakes the sleeping client thread *inside the server's `sendto`* (a cross-CPU wake-up charged
//! to the server), a cost that clients on other machines do not put on the server. Latency is
//! still measured at the read, so the tick's wait is included in the figures.
//! `--nexus-nice N` starts nexus under `nice -n N` (relative to the harness): run the harness
//! itself at `nice -n -N` and the clients read as soon as their data arrives, as clients with
//! their own CPUs do, while nexus gets what the clients leave of the machine. Without it,
//! client threads waiting for a core add their wait to the measured latency.

use anyhow::{Context, Result, anyhow, bail};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// Latency buckets: 100 µs wide below 100 ms, 1 ms wide up to 10 s, then one overflow bucket.
const FINE: u64 = 100_000;
const COARSE: u64 = 10_000_000;
const BUCKETS: usize = (FINE / 100 + (COARSE - FINE) / 1000 + 1) as usize;
const MAX_STEPS: usize = 16;

struct Args {
    url: Option<String>,
    nexus_bin: Option<String>,
    api_key: Option<String>,
    token: Option<String>,
    nexus_pid: Option<u32>,
    connections: usize,
    rates: Vec<u64>,
    step_secs: u64,
    source_ips: u8,
    channel: String,
    payload_bytes: usize,
    max_secs: u64,
    connect_concurrency: usize,
    client_threads: usize,
    max_p99_ms: f64,
    aligned_lanes: bool,
    read_tick_us: u64,
    nexus_nice: i32,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        url: None,
        nexus_bin: None,
        api_key: None,
        token: None,
        nexus_pid: None,
        connections: 10_000,
        rates: vec![10, 25, 50, 100],
        step_secs: 8,
        source_ips: 4,
        channel: "incidents:bench".into(),
        payload_bytes: 200,
        max_secs: 110,
        connect_concurrency: 200,
        client_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        max_p99_ms: 2000.0,
        aligned_lanes: false,
        read_tick_us: 0,
        nexus_nice: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = Some(val()?),
            "--nexus-bin" => a.nexus_bin = Some(val()?),
            "--api-key" => a.api_key = Some(val()?),
            "--token" => a.token = Some(val()?),
            "--nexus-pid" => a.nexus_pid = Some(val()?.parse()?),
            "--connections" => a.connections = val()?.parse()?,
            "--rates" => {
                a.rates = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--step-secs" => a.step_secs = val()?.parse()?,
            "--source-ips" => a.source_ips = val()?.parse()?,
            "--channel" => a.channel = val()?,
            "--payload-bytes" => a.payload_bytes = val()?.parse()?,
            "--max-secs" => a.max_secs = val()?.parse()?,
            "--connect-concurrency" => a.connect_concurrency = val()?.parse()?,
            "--client-threads" => a.client_threads = val()?.parse()?,
            "--max-p99-ms" => a.max_p99_ms = val()?.parse()?,
            "--aligned-lanes" => a.aligned_lanes = true,
            "--read-tick-us" => a.read_tick_us = val()?.parse()?,
            "--nexus-nice" => a.nexus_nice = val()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("main.rs")
                        .lines()
                        .take_while(|l| l.starts_with("//!"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other} (see --help)"),
        }
    }
    if a.url.is_none() == a.nexus_bin.is_none() {
        bail!("give exactly one of --url or --nexus-bin");
    }
    if a.rates.is_empty() || a.rates.len() > MAX_STEPS || a.rates.contains(&0) {
        bail!("--rates: 1 to {MAX_STEPS} positive rates");
    }
    if a.client_threads == 0 {
        bail!("--client-threads must be at least 1");
    }
    if a.source_ips == 0 {
        bail!("--source-ips must be at least 1");
    }
    Ok(a)
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Raises the soft open-files limit to the hard one (10k sockets need more than 1024).
fn raise_nofile() -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of a process, in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

/// Per-step counters shared by all receivers.
struct Meter {
    step: AtomicUsize,
    deliveries: Vec<AtomicU64>,
    hist: Vec<Vec<AtomicU64>>,
    connected: AtomicUsize,
    closed: AtomicUsize,
    close_codes: std::sync::Mutex<std::collections::BTreeMap<u16, usize>>,
}

impl Meter {
    fn new() -> Meter {
        Meter {
            step: AtomicUsize::new(0),
            deliveries: (0..=MAX_STEPS).map(|_| AtomicU64::new(0)).collect(),
            hist: (0..=MAX_STEPS)
                .map(|_| (0..BUCKETS).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            connected: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            close_codes: Default::default(),
        }
    }

    fn record(&self, latency_us: u64) {
        let s = self.step.load(Relaxed);
        self.deliveries[s].fetch_add(1, Relaxed);
        let b = if latency_us < FINE {
            latency_us / 100
        } else if latency_us < COARSE {
            FINE / 100 + (latency_us - FINE) / 1000
        } else {
            BUCKETS as u64 - 1
        };
        self.hist[s][b as usize].fetch_add(1, Relaxed);
    }
}

/// The meters of all client threads (one each: no cache line shared on the hot path).
struct Meters(Vec<Arc<Meter>>);

impl Meters {
    fn set_step(&self, s: usize) {
        self.0.iter().for_each(|m| m.step.store(s, Relaxed));
    }

    fn connected(&self) -> usize {
        self.0.iter().map(|m| m.connected.load(Relaxed)).sum()
    }

    fn closed(&self) -> usize {
        self.0.iter().map(|m| m.closed.load(Relaxed)).sum()
    }

    fn delivered(&self, s: usize) -> u64 {
        self.0.iter().map(|m| m.deliveries[s].load(Relaxed)).sum()
    }

    fn close_codes(&self) -> std::collections::BTreeMap<u16, usize> {
        let mut all = std::collections::BTreeMap::new();
        for m in &self.0 {
            if let Ok(codes) = m.close_codes.lock() {
                for (c, n) in codes.iter() {
                    *all.entry(*c).or_default() += n;
                }
            }
        }
        all
    }

    /// The `q` quantile of step `s`, in milliseconds (upper edge of its bucket).
    fn quantile_ms(&self, s: usize, q: f64) -> Option<f64> {
        let counts: Vec<u64> = (0..BUCKETS)
            .map(|b| self.0.iter().map(|m| m.hist[s][b].load(Relaxed)).sum())
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= want {
                let i = i as u64;
                let upper_us = if i < FINE / 100 {
                    (i + 1) * 100
                } else {
                    FINE + (i - FINE / 100 + 1) * 1000
                };
                return Some(upper_us as f64 / 1000.0);
            }
        }
        None
    }
}

/// The server's `nexus_gateway_publish_write_seconds` histogram: (upper bound in seconds,
/// cumulative count) pairs, `+Inf` last.
async fn server_histogram(server: SocketAddr) -> Option<Vec<(f64, u64)>> {
    let mut tcp = TcpStream::connect(server).await.ok()?;
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.ok()?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut body))
        .await
        .ok()?
        .ok()?;
    let buckets: Vec<(f64, u64)> = body
        .lines()
        .filter_map(|l| l.strip_prefix("nexus_gateway_publish_write_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, n) = l.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n.trim().parse().ok()?))
        })
        .collect();
    (!buckets.is_empty()).then_some(buckets)
}

/// The `q` quantile of the server histogram's growth between two scrapes, as "≤ X ms".
fn server_quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> String {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .map(|&(le, n)| {
            let b = before.iter().find(|(l, _)| *l == le).map_or(0, |x| x.1);
            (le, n.saturating_sub(b))
        })
        .collect();
    let total = delta.last().map_or(0, |x| x.1);
    if total == 0 {
        return "n/a".into();
    }
    let want = ((total as f64) * q).ceil() as u64;
    match delta.iter().find(|(_, n)| *n >= want) {
        Some((le, _)) if le.is_finite() => format!("≤ {}", le * 1000.0),
        _ => "> 10000".into(),
    }
}

/// Frames to the server must be masked (RFC 6455 §5.3); the key does not matter here.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// Read buffer of one connection: big enough for a coalesced frame of many publications,
/// so that a backlog is read in one system call.
const READ_BUFFER: usize = 64 << 10;

/// Writes one masked client frame (`opcode` 1 text, 10 pong).
async fn send_frame(tcp: &mut TcpStream, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    tcp.write_all(&f).await
}

/// One complete server frame at the start of `buf`: (FIN, opcode, payload range, frame length).
fn parse_frame(buf: &[u8]) -> Option<(bool, u8, std::ops::Range<usize>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (fin, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x0f);
    let (len, head) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let head = head + if buf[1] & 0x80 != 0 { 4 } else { 0 }; // servers do not mask; tolerate it
    (buf.len() >= head + len).then_some((fin, opcode, head..head + len, head + len))
}

/// Publish times (`"ts":<µs>`) in a text payload: a byte scan, no JSON parse.
fn timestamps(text: &[u8]) -> impl Iterator<Item = u64> + '_ {
    memchr::memmem::find_iter(text, b"\"ts\":").map(move |p| {
        text[p + 5..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .fold(0u64, |n, c| n * 10 + u64::from(c - b'0'))
    })
}

/// One read before `deadline`, during the handshake.
async fn read_some(tcp: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, tcp.read_buf(buf)).await {
        Ok(Ok(0)) => bail!("closed during the handshake"),
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("handshake timed out"),
    }
}

/// Opens the WebSocket (handshake by hand: a fixed key, the 101 checked) and sends the
/// Centrifugo `connect`; returns the socket and what was read past the connect reply.
async fn open(
    i: usize,
    server: SocketAddr,
    token: &str,
    channel: &str,
    source_ips: u8,
) -> Result<(TcpStream, Vec<u8>)> {
    let src = IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        1 + (i % usize::from(source_ips)) as u8,
    ));
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    let mut tcp = sock.connect(server).await?;
    tcp.set_nodelay(true)?;
    let req = format!(
        "GET /connection/websocket HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(READ_BUFFER);
    let deadline = Instant::now() + Duration::from_secs(30);
    let end = loop {
        if let Some(p) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        read_some(&mut tcp, &mut buf, deadline).await?;
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        bail!(
            "upgrade refused: {}",
            String::from_utf8_lossy(&buf[..end])
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    buf.drain(..end);
    let connect = format!(r#"{{"id":1,"connect":{{"token":"{token}","name":"bench"}}}}"#);
    send_frame(&mut tcp, 1, connect.as_bytes()).await?;
    loop {
        while let Some((_, opcode, body, len)) = parse_frame(&buf) {
            let reply = buf[body].to_vec();
            buf.drain(..len);
            if opcode == 8 {
                bail!("closed before the connect reply");
            }
            if memchr::memmem::find(&reply, br#""id":1"#).is_some() {
                if memchr::memmem::find(&reply, format!(r#""{channel}""#).as_bytes()).is_none() {
                    bail!(
                        "connect reply without the server-side subscription: {}",
                        String::from_utf8_lossy(&reply)
                    );
                }
                return Ok((tcp, buf));
            }
        }
        read_some(&mut tcp, &mut buf, deadline).await?;
    }
}

/// One subscriber: connect, then read frames until the end, answering pings and timing
/// publications. Cheap per message: one read per wake-up, a byte scan per frame.
async fn subscriber(
    i: usize,
    server: SocketAddr,
    (token, channel): (Arc<str>, Arc<str>),
    source_ips: u8,
    meter: Arc<Meter>,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
) {
    let (mut tcp, mut buf) = match open(i, server, &token, &channel, source_ips).await {
        Ok(ok) => {
            meter.connected.fetch_add(1, Relaxed);
            let _ = ready.send(Ok(()));
            ok
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop((token, channel));
    buf.shrink_to(READ_BUFFER);
    let code = 'conn: loop {
        let now = unix_micros();
        let mut pong = false;
        let mut used = 0;
        while let Some((fin, opcode, body, len)) = parse_frame(&buf[used..]) {
            let payload = &buf[used..][body];
            match opcode {
                // Text (and continuations: the server does not fragment, but they hold text).
                0 | 1 => {
                    for ts in timestamps(payload) {
                        meter.record(now.saturating_sub(ts));
                    }
                    // A Centrifugo ping is an empty command, alone or among pushes.
                    pong |= payload == b"{}"
                        || payload.starts_with(b"{}\n")
                        || memchr::memmem::find(payload, b"\n{}\n").is_some()
                        || payload.ends_with(b"\n{}");
                    let _ = fin;
                }
                8 => {
                    let code = payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    break 'conn code;
                }
                9 => {
                    let p = payload.to_vec();
                    if send_frame(&mut tcp, 10, &p).await.is_err() {
                        break 'conn 1006;
                    }
                }
                _ => {}
            }
            used += len;
        }
        buf.drain(..used);
        if pong && send_frame(&mut tcp, 1, b"{}").await.is_err() {
            break 1006;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_BUFFER);
        }
        match tcp.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break 1006,
            Ok(_) => {}
        }
    };
    meter.connected.fetch_sub(1, Relaxed);
    meter.closed.fetch_add(1, Relaxed);
    if let Ok(mut codes) = meter.close_codes.lock() {
        *codes.entry(code).or_default() += 1;
    }
}

/// A minimal keep-alive HTTP/1.1 client for `POST /api/publish`.
struct Publisher {
    io: BufReader<TcpStream>,
    host: String,
    api_key: String,
}

impl Publisher {
    async fn connect(server: SocketAddr, api_key: &str) -> Result<Publisher> {
        let tcp = TcpStream::connect(server).await?;
        tcp.set_nodelay(true)?;
        Ok(Publisher {
            io: BufReader::new(tcp),
            host: server.to_string(),
            api_key: api_key.to_string(),
        })
    }

    async fn publish(&mut self, body: &str) -> Result<()> {
        let req = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nX-API-Key: {}\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.api_key,
            body.len()
        );
        self.io.get_mut().write_all(req.as_bytes()).await?;
        let mut status = String::new();
        self.io.read_line(&mut status).await?;
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if self.io.read_line(&mut h).await? == 0 {
                bail!("connection closed");
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse()?;
            }
        }
        let mut buf = vec![0; len];
        self.io.read_exact(&mut buf).await?;
        if !status.contains(" 200 ") || buf.windows(8).any(|w| w == b"\"error\":") {
            bail!(
                "publish failed: {} {}",
                status.trim(),
                String::from_utf8_lossy(&buf)
            );
        }
        Ok(())
    }
}

/// Publishes at `rate`/s for `secs` over up to 32 keep-alive connections (one request at a
/// time each), evenly spaced in time; returns the published and failed counts and each
/// request's duration (µs, request written → response read).
async fn publish_step(
    server: SocketAddr,
    api_key: &str,
    args: &Args,
    rate: u64,
    seq: Arc<AtomicU64>,
) -> Result<(u64, u64, Vec<u64>)> {
    let (channel, payload_bytes) = (&args.channel, args.payload_bytes);
    let (secs, aligned) = (args.step_secs, args.aligned_lanes);
    let lanes = rate.clamp(1, 32);
    let period = Duration::from_secs_f64(lanes as f64 / rate as f64);
    let mut publishers = Vec::with_capacity(lanes as usize);
    for _ in 0..lanes {
        publishers.push(Publisher::connect(server, api_key).await?);
    }
    let start = tokio::time::Instant::now();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (k, mut p) in publishers.into_iter().enumerate() {
        let channel = channel.to_string();
        let seq = seq.clone();
        // Lane k starts k/lanes of a period late, so that publications arrive one every
        // 1/rate s. In phase, every lane would fire at the same instant: bursts of `lanes`
        // publications once per period (what `--aligned-lanes` keeps, to compare).
        let first = if aligned {
            start
        } else {
            start + period.mul_f64(k as f64 / lanes as f64)
        };
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut took = Vec::new();
            while Instant::now() < until {
                tick.tick().await;
                let n = seq.fetch_add(1, Relaxed);
                let head = format!(r#"{{"ts":{},"seq":{n},"pad":""#, unix_micros());
                let pad = payload_bytes.saturating_sub(head.len() + 2);
                let body = format!(
                    r#"{{"channel":"{channel}","data":{head}{}"}}}}"#,
                    "x".repeat(pad)
                );
                let t = Instant::now();
                let r = p.publish(&body).await;
                took.push(t.elapsed().as_micros() as u64);
                match r {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        failed += 1;
                        if failed == 1 {
                            eprintln!("publish error: {e}");
                        }
                    }
                }
            }
            (ok, failed, took)
        }));
    }
    let (mut ok, mut failed, mut took) = (0, 0, Vec::new());
    for t in tasks {
        let (o, f, d) = t.await?;
        ok += o;
        failed += f;
        took.extend(d);
    }
    Ok((ok, failed, took))
}

/// A `nexus serve` started by the harness; killed on drop.
struct Nexus {
    child: tokio::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Nexus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_nexus(
    bin: &str,
    channel: &str,
    nice: i32,
) -> Result<(Nexus, SocketAddr, String, String)> {
    let dir = std::env::temp_dir().join(format!("gateway-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let secret = format!(
        "bench-{:x}-{:x}-secret-secret-secret",
        std::process::id(),
        unix_micros()
    );
    let env = |cmd: &mut tokio::process::Command| {
        cmd.env("NEXUS_DATA_DIR", &dir)
            .env("NEXUS_JWT_SECRET", &secret)
            .env("NEXUS_HTTP_ADDR", "127.0.0.1:0")
            .env("NEXUS_SFU_UDP_ADDR", "127.0.0.1:0")
            .env("NEXUS_RATE_LIMIT_PER_IP", "0")
            .env("NEXUS_RATE_LIMIT_PER_USER", "0")
            .env("NEXUS_LOG", "warn,nexus=info")
            .env("NEXUS_LOG_FORMAT", "json")
            .env_remove("NEXUS_REDIS_URL");
    };
    let mut cmd = if nice == 0 {
        tokio::process::Command::new(bin)
    } else {
        let mut c = tokio::process::Command::new("nice");
        c.args(["-n", &nice.to_string(), bin]);
        c
    };
    cmd.arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    env(&mut cmd);
    let mut child = cmd.spawn().with_context(|| format!("spawn {bin}"))?;
    let stderr = child.stderr.take().context("stderr")?;
    let nexus = Nexus {
        child,
        dir: dir.clone(),
    };
    let mut lines = BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains(r#""listening""#) {
                let v: serde_json::Value = serde_json::from_str(&line)?;
                let addr = v["addr"].as_str().context("addr")?.parse::<SocketAddr>()?;
                return Ok::<_, anyhow::Error>(addr);
            }
        }
        bail!("nexus exited before listening")
    })
    .await
    .context("nexus did not start in 60 s")??;
    // Keep draining its log so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let run = |args: Vec<&str>| {
        let mut c = tokio::process::Command::new(bin);
        c.args(args).stderr(std::process::Stdio::null());
        env(&mut c);
        c
    };
    let out = run(vec!["apikey", "create", "--name", "bench"])
        .output()
        .await?;
    if !out.status.success() {
        bail!("nexus apikey create failed");
    }
    let api_key = String::from_utf8(out.stdout)?.trim().to_string();
    let out = run(vec![
        "token",
        "--sub",
        "bench",
        "--channels",
        channel,
        "--ttl",
        "3600",
    ])
    .output()
    .await?;
    if !out.status.success() {
        bail!("nexus token failed");
    }
    let token = String::from_utf8(out.stdout)?.trim().to_string();
    Ok((nexus, addr, api_key, token))
}

/// Client threads: each runs a current-thread runtime (no work stealing, no cross-thread
/// wake-ups) holding its share of the connections. Dropping the senders stops them.
///
/// With a `read_tick` each thread also runs a task that sleeps the thread for the tick and
/// then yields: the runtime always has a task to run, so it polls its sockets without blocking
/// (once per tick) and never sleeps in `epoll_wait`, where each arriving frame would wake it.
fn client_threads(
    n: usize,
    read_tick: Option<Duration>,
) -> Result<Vec<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>)>> {
    (0..n)
        .map(|k| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            if let Some(tick) = read_tick {
                handle.spawn(async move {
                    loop {
                        std::thread::sleep(tick);
                        tokio::task::yield_now().await;
                    }
                });
            }
            std::thread::Builder::new()
                .name(format!("clients-{k}"))
                .spawn(move || {
                    let _ = rt.block_on(stopped);
                    rt.shutdown_background();
                })?;
            Ok((handle, stop))
        })
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.max_secs);
    let nofile = raise_nofile()?;
    if nofile < args.connections as u64 + 256 {
        bail!(
            "open-files limit {nofile} is too low for {} connections",
            args.connections
        );
    }

    let (_nexus, server, api_key, token, pid) = match (&args.nexus_bin, &args.url) {
        (Some(bin), _) => {
            let (n, addr, key, token) = start_nexus(bin, &args.channel, args.nexus_nice).await?;
            let pid = n.child.id();
            (Some(n), addr, key, token, pid)
        }
        (None, Some(url)) => {
            let hostport = url.trim_start_matches("http://").trim_end_matches('/');
            let addr: SocketAddr = hostport.parse().context("--url must be http://IP:PORT")?;
            if !addr.ip().is_loopback() {
                bail!("this harness only targets loopback addresses");
            }
            let key = args.api_key.clone().context("--url needs --api-key")?;
            let token = args.token.clone().context("--url needs --token")?;
            (None, addr, key, token, args.nexus_pid)
        }
        (None, None) => unreachable!("checked in parse_args"),
    };
    eprintln!("nexus at {server} (pid {pid:?}); open-files limit {nofile}");

    let rss_before = pid.and_then(rss_kib);
    let read_tick = (args.read_tick_us > 0).then(|| Duration::from_micros(args.read_tick_us));
    let threads = client_threads(args.client_threads, read_tick)?;
    let meters = Meters((0..threads.len()).map(|_| Arc::new(Meter::new())).collect());
    meters.set_step(MAX_STEPS); // deliveries before the first step go to the spare slot
    let (token, channel): (Arc<str>, Arc<str>) = (token.into(), args.channel.clone().into());
    let gate = Arc::new(Semaphore::new(args.connect_concurrency));
    let t0 = Instant::now();
    let mut readies = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let permit = gate.clone().acquire_owned().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let k = i % threads.len();
        let auth = (token.clone(), channel.clone());
        let m = meters.0[k].clone();
        threads[k]
            .0
            .spawn(subscriber(i, server, auth, args.source_ips, m, tx));
        readies.push(tokio::spawn(async move {
            let r = rx.await.unwrap_or_else(|_| Err(anyhow!("subscriber died")));
            drop(permit);
            r
        }));
        if Instant::now() > deadline {
            bail!("deadline reached while connecting ({i} connections)");
        }
    }
    let mut failed = 0;
    for r in readies {
        if let Err(e) = r.await? {
            failed += 1;
            if failed <= 3 {
                eprintln!("connection failed: {e:#}");
            }
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let connected = meters.connected();
    eprintln!("{connected} connected ({failed} failed) in {connect_secs:.1} s");
    if connected == 0 {
        bail!("no connection");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = pid.and_then(rss_kib);
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / connected as f64),
        _ => None,
    };

    println!(
        "\n| publications/s offered | published | deliveries/s | complete | p50 ms | p99 ms | server publish→write p50 / p99 ms | publish request p50 / p99 ms | nexus CPU s/s | harness CPU s/s | deliveries per nexus CPU-s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let seq = Arc::new(AtomicU64::new(0));
    let mut best: Option<(f64, f64, f64)> = None;
    for (s, &rate) in args.rates.iter().enumerate() {
        if Instant::now() + Duration::from_secs(args.step_secs + 2) > deadline {
            eprintln!("time budget reached: skipping rates from {rate}/s on");
            break;
        }
        let alive = meters.connected();
        let cpu0 = pid.and_then(cpu_secs);
        let own0 = cpu_secs(std::process::id());
        let hist0 = server_histogram(server).await;
        let w0 = Instant::now();
        meters.set_step(s);
        let (published, pub_failed, mut took) =
            publish_step(server, &api_key, &args, rate, seq.clone()).await?;
        // Let the tail arrive, then account it to this step.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let window = w0.elapsed().as_secs_f64();
        meters.set_step(MAX_STEPS);
        let cpu = match (cpu0, pid.and_then(cpu_secs)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let own = match (own0, cpu_secs(std::process::id())) {
            (Some(a), Some(b)) => format!("{:.2}", (b - a) / window),
            _ => "n/a".into(),
        };
        let (srv50, srv99) = match (hist0, server_histogram(server).await) {
            (Some(a), Some(b)) => (server_quantile(&a, &b, 0.5), server_quantile(&a, &b, 0.99)),
            _ => ("n/a".into(), "n/a".into()),
        };
        let delivered = meters.delivered(s);
        let expected = published * alive as u64;
        let complete = delivered as f64 / expected.max(1) as f64;
        // Over the whole window, tail included: a conservative rate.
        let rate_out = delivered as f64 / window;
        let p50 = meters.quantile_ms(s, 0.50).unwrap_or(f64::NAN);
        let p99 = meters.quantile_ms(s, 0.99).unwrap_or(f64::NAN);
        took.sort_unstable();
        let took_ms = |q: f64| {
            took.get(((took.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .map_or(f64::NAN, |&us| us as f64 / 1000.0)
        };
        let (req50, req99) = (took_ms(0.5), took_ms(0.99));
        let cpu_s = cpu.map_or("n/a".into(), |c| format!("{:.2}", c / window));
        let per_cpu = cpu.map_or("n/a".into(), |c| {
            format!("{:.0}", delivered as f64 / c.max(1e-9))
        });
        println!(
            "| {rate} | {published} ({pub_failed} failed) | {rate_out:.0} | {:.1}% | {p50:.1} | {p99:.1} | {srv50} / {srv99} | {req50:.1} / {req99:.1} | {cpu_s} | {own} | {per_cpu} |",
            complete * 100.0
        );
        if complete >= 0.99 && best.is_none_or(|(r, _, _)| rate_out > r) {
            best = Some((rate_out, p50, p99));
        }
        let lost = args.connections - meters.connected();
        if complete < 0.9 || p99 > args.max_p99_ms || lost * 100 > args.connections {
            eprintln!(
                "saturated at {rate} publications/s (complete {complete:.3}, p99 {p99:.1} ms, {lost} connections lost): stopping"
            );
            break;
        }
    }

    println!();
    println!(
        "connections: {connected} of {} in {connect_secs:.1} s over {} source address(es)",
        args.connections, args.source_ips
    );
    match (rss_before, rss_after, per_conn) {
        (Some(b), Some(a), Some(p)) => println!(
            "nexus RSS: {b} KiB before, {a} KiB after connecting → {:.1} KiB per idle connection",
            p
        ),
        _ => println!("nexus RSS: unknown (no --nexus-pid)"),
    }
    if let Some((r, p50, p99)) = best {
        println!("best complete step: {r:.0} deliveries/s, p50 {p50:.1} ms, p99 {p99:.1} ms");
    }
    let codes = meters.close_codes();
    println!(
        "connections closed during the run: {} {codes:?}",
        meters.closed()
    );
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
