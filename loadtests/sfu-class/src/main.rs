//! Load test of the Nexus SFU (issue 4): a `class` room with one publisher sending simulcast
//! H264 (three layers, OpenH264) and Opus audio, and N WHEP subscribers, all str0m peers in this
//! process, against a `nexus serve` it starts (or one given by URL).
//!
//! Per stage (N = 50, 200, 1000 by default, added incrementally) it reports, over a measured
//! window after a warm-up:
//! - forwarded datagrams/s (the SFU's `packets_out` counter) and what the subscribers received;
//! - CPU of the nexus process (`/proc/PID/stat`), as cores used, and per-CPU machine busy time
//!   (`/proc/stat`), and the load generator's own CPU;
//! - forwarded packets/s per nexus core and subscribers per core;
//! - added forwarding latency p50/p99 inside the SFU (the `nexus_sfu_forward_latency_seconds`
//!   histogram of `/metrics/sfu`: a publisher's datagram received → each datagram forwarded
//!   from it handed to the kernel).
//!
//! Then, with the publisher stopped, the raw UDP send ceiling of this machine measured by the
//! same tool: one thread sending datagrams of the SFU's average egress size to 64 loopback
//! sockets (drained by another thread that waits in epoll, as the subscribers' loop does, so
//! that the sender pays the same wake-ups as the SFU), with `sendto` and with `sendmmsg` (32 per
//! call), in datagrams per CPU-second of the sending thread. The egress ratio is the SFU's
//! forwarded packets per nexus CPU-second over that ceiling.
//!
//! Subscribers beyond the first `--full-subscribers` are *sinks*: they complete ICE and DTLS
//! with str0m and keep answering STUN and RTCP, but count SRTP media datagrams without
//! decrypting them, so that the load generator (on the same small machine) costs far less than
//! the SFU it measures. The full subscribers decrypt and reassemble every frame and must see
//! H264 and Opus flowing.
//!
//! Bounded: a stage stops adding subscribers after `--connect-secs` (default 60 s; a saturated
//! SFU answers slowly) and measures those connected; the whole run gives up after `--max-secs`
//! (default 300 s); binds only 127.0.0.1.
//!
//! ```text
//! cargo run --release -- --nexus-bin ../target/release/nexus
//! cargo run --release -- --url http://127.0.0.1:8080 --nexus-pid P \
//!     --publisher-token T --subscriber-token T [--room R]
//! ```
//! Options: `--subscribers 50,200,1000 --stage-secs 10 --warmup-secs 4 --shards 1
//! --full-subscribers 2 --ceiling-secs 3 --connect-secs 60 --max-secs 300 --json`,
//! `--ceiling-only BYTES` (only the raw UDP ceiling).

mod media;
mod peers;
mod proc;
mod udp;

use anyhow::{Context, Result, bail};
use media::Clip;
use peers::{Loop, Shared};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

struct Args {
    url: Option<String>,
    nexus_bin: Option<String>,
    nexus_pid: Option<u32>,
    publisher_token: Option<String>,
    subscriber_token: Option<String>,
    room: String,
    subscribers: Vec<usize>,
    stage_secs: u64,
    warmup_secs: u64,
    shards: usize,
    full_subscribers: usize,
    ceiling_secs: u64,
    max_secs: u64,
    json: bool,
    ceiling_only: Option<usize>,
    connect_secs: u64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        url: None,
        nexus_bin: None,
        nexus_pid: None,
        publisher_token: None,
        subscriber_token: None,
        room: "class-bench".into(),
        subscribers: vec![50, 200, 1000],
        stage_secs: 10,
        warmup_secs: 4,
        shards: 1,
        full_subscribers: 2,
        ceiling_secs: 3,
        max_secs: 300,
        json: false,
        ceiling_only: None,
        connect_secs: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--json" {
            a.json = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = Some(value.trim_end_matches('/').to_string()),
            "--nexus-bin" => a.nexus_bin = Some(value),
            "--nexus-pid" => a.nexus_pid = Some(value.parse()?),
            "--publisher-token" => a.publisher_token = Some(value),
            "--subscriber-token" => a.subscriber_token = Some(value),
            "--room" => a.room = value,
            "--subscribers" => {
                a.subscribers = value
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?;
            }
            "--stage-secs" => a.stage_secs = value.parse()?,
            "--warmup-secs" => a.warmup_secs = value.parse()?,
            "--shards" => a.shards = value.parse()?,
            "--full-subscribers" => a.full_subscribers = value.parse()?,
            "--ceiling-secs" => a.ceiling_secs = value.parse()?,
            "--max-secs" => a.max_secs = value.parse()?,
            "--ceiling-only" => a.ceiling_only = Some(value.parse()?),
            "--connect-secs" => a.connect_secs = value.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    a.subscribers.sort_unstable();
    if a.url.is_none() && a.nexus_bin.is_none() && a.ceiling_only.is_none() {
        bail!("give --nexus-bin PATH (starts nexus) or --url URL with tokens");
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client (one request per connection): WHIP/WHEP and /metrics/sfu.

struct Response {
    status: u16,
    body: String,
}

fn http(
    server: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<Response> {
    let mut stream = TcpStream::connect(server).with_context(|| format!("connect {server}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {server}\r\n{auth}{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok(Response { status, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The SFU's counters and latency histogram from `/metrics/sfu`.
#[derive(Default, Clone)]
struct SfuMetrics {
    packets_out: f64,
    bytes_out: f64,
    packets_in: f64,
    frames_forwarded: f64,
    /// (upper bound in seconds, cumulative count)
    latency: Vec<(f64, f64)>,
}

fn sfu_metrics(server: SocketAddr) -> Result<SfuMetrics> {
    let r = http(server, "GET", "/metrics/sfu", None, "")?;
    if r.status != 200 {
        bail!("/metrics/sfu answered {}", r.status);
    }
    let mut m = SfuMetrics::default();
    for line in r.body.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        match name {
            "nexus_sfu_packets_out_total" => m.packets_out = v,
            "nexus_sfu_bytes_out_total" => m.bytes_out = v,
            "nexus_sfu_packets_in_total" => m.packets_in = v,
            "nexus_sfu_frames_forwarded_total" => m.frames_forwarded = v,
            _ => {
                if let Some(le) = name
                    .strip_prefix("nexus_sfu_forward_latency_seconds_bucket{le=\"")
                    .and_then(|s| s.strip_suffix("\"}"))
                {
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse()?
                    };
                    m.latency.push((le, v));
                }
            }
        }
    }
    Ok(m)
}

/// Quantile `q` of the histogram difference `after - before`, interpolated inside a bucket.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, c)| {
            let b = before
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |(_, c)| *c);
            (le, c - b)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, cum) in &counts {
        if cum >= target {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let span = cum - prev.1;
            let frac = if span > 0.0 {
                (target - prev.1) / span
            } else {
                1.0
            };
            return Some(prev.0 + frac * (le - prev.0));
        }
        prev = (le, cum);
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Starting nexus

/// A `nexus serve` started by the harness; killed on drop.
struct Nexus {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Nexus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_nexus(
    bin: &str,
    room: &str,
    shards: usize,
) -> Result<(Nexus, SocketAddr, String, String)> {
    let dir = std::env::temp_dir().join(format!("sfu-class-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let secret = format!(
        "sfu-bench-{:x}-secret-secret-secret-secret",
        std::process::id()
    );
    let env = |cmd: &mut std::process::Command| {
        cmd.env("NEXUS_DATA_DIR", &dir)
            .env("NEXUS_JWT_SECRET", &secret)
            .env("NEXUS_HTTP_ADDR", "127.0.0.1:0")
            .env("NEXUS_SFU_UDP_ADDR", "127.0.0.1:0")
            .env("NEXUS_SFU_SHARDS", shards.to_string())
            .env("NEXUS_RATE_LIMIT_PER_IP", "0")
            .env("NEXUS_RATE_LIMIT_PER_USER", "0")
            .env("NEXUS_LOG", "warn,nexus=info")
            .env("NEXUS_LOG_FORMAT", "json")
            .env_remove("NEXUS_REDIS_URL")
            .env_remove("NEXUS_DATABASE_URL")
            .env_remove("NEXUS_KAFKA_BROKERS");
    };
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    env(&mut cmd);
    let mut child = cmd.spawn().with_context(|| format!("spawn {bin}"))?;
    let stderr = child.stderr.take().context("stderr")?;
    let nexus = Nexus {
        child,
        dir: dir.clone(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        // Keep draining its log so that it never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && line.contains("\"listening\"") && line.contains("\"scheme\":\"http\"") {
                sent = tx.send(line).is_ok();
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .context("nexus did not log its HTTP address within 60 s")?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    let addr = v["addr"]
        .as_str()
        .context("no addr in the listening line")?
        .parse::<SocketAddr>()?;
    let token = |sub: &str, grants: &str| -> Result<String> {
        let mut c = std::process::Command::new(bin);
        c.args([
            "token",
            "--sub",
            sub,
            "--room",
            room,
            "--room-kind",
            "class",
            "--grants",
            grants,
            "--ttl",
            "7200",
        ])
        .stderr(std::process::Stdio::null());
        env(&mut c);
        let out = c.output()?;
        if !out.status.success() {
            bail!("nexus token failed");
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    };
    let publisher = token("bench-teacher", "publish")?;
    let subscriber = token("bench-student", "subscribe")?;
    Ok((nexus, addr, publisher, subscriber))
}

fn parse_url(url: &str) -> Result<SocketAddr> {
    let hostport = url
        .strip_prefix("http://")
        .context("only http:// URLs")?
        .split('/')
        .next()
        .unwrap_or_default();
    hostport.parse().context("URL host must be IP:port")
}

// ---------------------------------------------------------------------------------------------

struct Stage {
    subscribers: usize,
    /// Subscribers whose ICE and DTLS completed (fewer than asked when the SFU saturated).
    connected: usize,
    /// WHEP offers refused with 503 (saturated) up to this stage.
    refused: usize,
    /// Subscribers with a session that received no media datagram in the window.
    starved: usize,
    fwd_pps: f64,
    rx_pps: f64,
    egress_mbps: f64,
    avg_packet: f64,
    nexus_cores: f64,
    loadgen_cores: f64,
    machine: Vec<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    full_video_fps: f64,
    full_audio_fps: f64,
}

impl Stage {
    fn pps_per_core(&self) -> f64 {
        self.fwd_pps / self.nexus_cores.max(1e-9)
    }
    fn subs_per_core(&self) -> f64 {
        self.connected as f64 / self.nexus_cores.max(1e-9)
    }
}

fn fmt_us(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0}"))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if let Some(size) = args.ceiling_only {
        let c = udp::ceiling(size, Duration::from_secs(args.ceiling_secs))?;
        println!(
            "{size}-byte datagrams, datagrams per CPU-second of one thread: sendto {:.0}, sendmmsg(32) {:.0}, GSO x2 {:.0}, GSO x4 {:.0}",
            c.sendto_per_cpu_sec, c.sendmmsg_per_cpu_sec, c.gso2_per_cpu_sec, c.gso4_per_cpu_sec
        );
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let nofile = proc::raise_nofile()?;
    let need = args.subscribers.last().copied().unwrap_or(0) + 200;
    if (nofile as usize) < need {
        bail!("open-files limit {nofile} is below the {need} sockets needed");
    }

    let (_nexus, server, nexus_pid, publisher_token, subscriber_token) = match &args.nexus_bin {
        Some(bin) => {
            let (nexus, addr, p, s) = start_nexus(bin, &args.room, args.shards)?;
            let pid = nexus.child.id();
            (Some(nexus), addr, pid, p, s)
        }
        None => {
            let url = args.url.as_deref().context("--url")?;
            (
                None,
                parse_url(url)?,
                args.nexus_pid.context("--nexus-pid with --url")?,
                args.publisher_token.clone().context("--publisher-token")?,
                args.subscriber_token
                    .clone()
                    .context("--subscriber-token")?,
            )
        }
    };
    eprintln!("sfu-class: nexus at {server} (pid {nexus_pid}); encoding the media clip");

    str0m::crypto::from_feature_flags().install_process_default();
    let t = Instant::now();
    let clip = Arc::new(Clip::encode()?);
    eprintln!(
        "sfu-class: clip encoded in {:.1} s: H264 {} (keyframe {} / {} / {} bytes), Opus {} bytes/packet",
        t.elapsed().as_secs_f64(),
        (0..3)
            .map(|l| format!(
                "{}: {} kbit/s",
                media::LAYERS[l].rid,
                clip.layer_bps(l) / 1000
            ))
            .collect::<Vec<_>>()
            .join(", "),
        clip.keyframe_bytes(0),
        clip.keyframe_bytes(1),
        clip.keyframe_bytes(2),
        clip.audio_bytes(),
    );

    let shared = Arc::new(Shared::default());
    let handle = Loop::spawn(Arc::clone(&clip), Arc::clone(&shared))?;

    // The publisher.
    let room = &args.room;
    let (rtc, socket, offer, pending) = peers::publisher_offer()?;
    let r = http(
        server,
        "POST",
        &format!("/whip/{room}"),
        Some(&publisher_token),
        &offer,
    )?;
    if r.status != 201 {
        bail!("WHIP answered {}: {}", r.status, r.body);
    }
    handle.add(peers::accept(
        rtc,
        socket,
        pending,
        &r.body,
        peers::Role::Publisher,
    )?)?;
    wait_for(deadline, "the publisher to connect", || {
        shared.publisher_connected.load(Relaxed)
    })?;

    let mut stages = Vec::new();
    let mut added = 0usize;
    // WHEP offers a saturated SFU refused (503): they count toward N, as people turned away.
    let mut refused = 0usize;
    for &target in &args.subscribers {
        let t = Instant::now();
        // A saturated SFU answers slowly: past the budget, the stage measures what it has.
        let budget = t + Duration::from_secs(args.connect_secs);
        while added + refused < target && Instant::now() < budget {
            let role = if added < args.full_subscribers {
                peers::Role::Full
            } else {
                peers::Role::Sink
            };
            let (rtc, socket, offer, pending) = peers::subscriber_offer()?;
            let r = match http(
                server,
                "POST",
                &format!("/whep/{room}"),
                Some(&subscriber_token),
                &offer,
            ) {
                Ok(r) => r,
                // A saturated SFU may not answer within the HTTP timeout: the stage measures
                // the subscribers it has (the first one must connect).
                Err(e) if added > 0 => {
                    eprintln!(
                        "sfu-class: WHEP failed after {added} sessions ({e}); measuring those"
                    );
                    break;
                }
                Err(e) => return Err(e),
            };
            if r.status == 503 {
                refused += 1;
                if refused == 1 || refused.is_multiple_of(100) {
                    eprintln!(
                        "sfu-class: WHEP refused (503) after {added} sessions: {refused} refused so far"
                    );
                }
                // Not a tight loop against a saturated server.
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            if r.status != 201 {
                bail!("WHEP answered {}: {}", r.status, r.body);
            }
            handle.add(peers::accept(rtc, socket, pending, &r.body, role)?)?;
            added += 1;
            if added.is_multiple_of(100) {
                eprintln!(
                    "sfu-class: {added} WHEP sessions after {:.1} s",
                    t.elapsed().as_secs_f64()
                );
            }
            if Instant::now() > deadline {
                bail!("out of time while connecting subscribers");
            }
        }
        while shared.subscribers_connected.load(Relaxed) < added && Instant::now() < budget {
            std::thread::sleep(Duration::from_millis(20));
        }
        let connected = shared.subscribers_connected.load(Relaxed);
        eprintln!(
            "sfu-class: {connected} of {target} subscribers connected in {:.1} s; warming up {} s",
            t.elapsed().as_secs_f64(),
            args.warmup_secs
        );
        std::thread::sleep(Duration::from_secs(args.warmup_secs));
        if Instant::now() + Duration::from_secs(args.stage_secs) > deadline {
            bail!("out of time before the {target}-subscriber stage");
        }
        let mut stage = measure(&args, server, nexus_pid, &shared, target)?;
        stage.connected = shared.subscribers_connected.load(Relaxed);
        stage.refused = refused;
        stages.push(stage);
        let s = stages.last().context("stage")?;
        eprintln!(
            "sfu-class: N={target}: {} admitted, {} refused, {} admitted got no media; {:.0} pkt/s out, nexus {:.2} cores → {:.0} pkt/s per core, p50 {} µs, p99 {} µs",
            s.connected,
            s.refused,
            s.starved,
            s.fwd_pps,
            s.nexus_cores,
            s.pps_per_core(),
            fmt_us(s.p50_us),
            fmt_us(s.p99_us)
        );
    }

    // The ceiling, with the SFU idle (publisher stopped).
    shared.publishing_stopped.store(true, Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    let size = stages
        .last()
        .map_or(1200, |s| s.avg_packet.round() as usize)
        .clamp(64, 1500);
    let ceiling = udp::ceiling(size, Duration::from_secs(args.ceiling_secs))?;
    handle.stop();

    report(&args, &stages, &ceiling, size, &clip);
    Ok(())
}

fn wait_for(deadline: Instant, what: &str, done: impl Fn() -> bool) -> Result<()> {
    let give_up = (Instant::now() + Duration::from_secs(60)).min(deadline);
    while !done() {
        if Instant::now() > give_up {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn measure(
    args: &Args,
    server: SocketAddr,
    nexus_pid: u32,
    shared: &Shared,
    subscribers: usize,
) -> Result<Stage> {
    let m0 = sfu_metrics(server)?;
    let c0 = proc::cpu_secs(nexus_pid).context("nexus CPU time")?;
    let l0 = proc::cpu_secs(std::process::id()).context("own CPU time")?;
    let p0 = proc::machine_cpu();
    let (rx0, v0, a0) = shared.snapshot();
    let per0 = shared.per_subscriber();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(args.stage_secs));
    let secs = t0.elapsed().as_secs_f64();
    let m1 = sfu_metrics(server)?;
    let c1 = proc::cpu_secs(nexus_pid).context("nexus CPU time")?;
    let l1 = proc::cpu_secs(std::process::id()).context("own CPU time")?;
    let p1 = proc::machine_cpu();
    let (rx1, v1, a1) = shared.snapshot();
    let per1 = shared.per_subscriber();
    let starved = per1
        .iter()
        .enumerate()
        .filter(|(i, n)| per0.get(*i).copied().unwrap_or(0) == **n)
        .count();
    let packets = m1.packets_out - m0.packets_out;
    let full = args.full_subscribers.min(subscribers).max(1) as f64;
    Ok(Stage {
        subscribers,
        connected: shared.subscribers_connected.load(Relaxed),
        refused: 0,
        starved,
        fwd_pps: packets / secs,
        rx_pps: (rx1 - rx0) as f64 / secs,
        egress_mbps: (m1.bytes_out - m0.bytes_out) * 8.0 / secs / 1e6,
        avg_packet: (m1.bytes_out - m0.bytes_out) / packets.max(1.0),
        nexus_cores: (c1 - c0) / secs,
        loadgen_cores: (l1 - l0) / secs,
        machine: proc::busy_fractions(&p0, &p1),
        p50_us: quantile(&m0.latency, &m1.latency, 0.50).map(|s| s * 1e6),
        p99_us: quantile(&m0.latency, &m1.latency, 0.99).map(|s| s * 1e6),
        full_video_fps: (v1 - v0) as f64 / secs / full,
        full_audio_fps: (a1 - a0) as f64 / secs / full,
    })
}

fn report(args: &Args, stages: &[Stage], ceiling: &udp::Ceiling, size: usize, clip: &Clip) {
    let best = stages
        .iter()
        .map(Stage::pps_per_core)
        .fold(0.0f64, f64::max);
    if args.json {
        for s in stages {
            println!(
                "{}",
                serde_json::json!({
                    "subscribers": s.subscribers,
                    "connected": s.connected,
                    "refused": s.refused,
                    "connected_without_media": s.starved,
                    "forwarded_pps": s.fwd_pps.round(),
                    "received_pps": s.rx_pps.round(),
                    "egress_mbps": (s.egress_mbps * 10.0).round() / 10.0,
                    "nexus_cores": (s.nexus_cores * 100.0).round() / 100.0,
                    "pps_per_core": s.pps_per_core().round(),
                    "subscribers_per_core": s.subs_per_core().round(),
                    "p50_us": s.p50_us.map(f64::round),
                    "p99_us": s.p99_us.map(f64::round),
                    "loadgen_cores": (s.loadgen_cores * 100.0).round() / 100.0,
                    "machine_busy": s.machine.iter().map(|b| (b * 100.0).round()).collect::<Vec<_>>(),
                    "full_video_fps": (s.full_video_fps * 10.0).round() / 10.0,
                    "full_audio_fps": (s.full_audio_fps * 10.0).round() / 10.0,
                })
            );
        }
        println!(
            "{}",
            serde_json::json!({
                "ceiling_packet_bytes": size,
                "ceiling_sendto_pps_per_core": ceiling.sendto_per_cpu_sec.round(),
                "ceiling_sendmmsg_pps_per_core": ceiling.sendmmsg_per_cpu_sec.round(),
                "ceiling_gso2_pps_per_core": ceiling.gso2_per_cpu_sec.round(),
                "ceiling_gso4_pps_per_core": ceiling.gso4_per_cpu_sec.round(),
                "egress_ratio": best / ceiling.sendmmsg_per_cpu_sec.max(1.0),
            })
        );
        return;
    }
    println!(
        "Media: H264 simulcast {} kbit/s (q/h/f), keyframe every {} s or on request; Opus {} kbit/s.",
        (0..3)
            .map(|l| (clip.layer_bps(l) / 1000).to_string())
            .collect::<Vec<_>>()
            .join("/"),
        media::CLIP_FRAMES as u32 / media::FPS,
        clip.audio_bytes() * 8 * 50 / 1000
    );
    println!();
    println!(
        "| subscribers: asked (connected / refused / connected without media) | forwarded pkt/s | received pkt/s | egress Mbit/s | nexus CPU (cores) | pkt/s per core | subscribers per core | latency p50 (µs) | latency p99 (µs) | load generator CPU | machine CPU busy | full subscriber fps (video/audio) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for s in stages {
        println!(
            "| {} ({} / {} / {}) | {:.0} | {:.0} | {:.1} | {:.2} | {:.0} | {:.0} | {} | {} | {:.2} | {} | {:.0}/{:.0} |",
            s.subscribers,
            s.connected,
            s.refused,
            s.starved,
            s.fwd_pps,
            s.rx_pps,
            s.egress_mbps,
            s.nexus_cores,
            s.pps_per_core(),
            s.subs_per_core(),
            fmt_us(s.p50_us),
            fmt_us(s.p99_us),
            s.loadgen_cores,
            s.machine
                .iter()
                .map(|b| format!("{:.0}%", b * 100.0))
                .collect::<Vec<_>>()
                .join(" "),
            s.full_video_fps,
            s.full_audio_fps,
        );
    }
    println!();
    println!(
        "Raw UDP send ceiling ({size}-byte datagrams, one thread, loopback): sendto {:.0} pkt/s per CPU-second, sendmmsg {:.0}, GSO runs of 2 {:.0}, of 4 {:.0}. Egress ratio (best stage's pkt/s per nexus core ÷ sendmmsg ceiling): {:.0}% (÷ sendto ceiling: {:.0}%).",
        ceiling.sendto_per_cpu_sec,
        ceiling.sendmmsg_per_cpu_sec,
        ceiling.gso2_per_cpu_sec,
        ceiling.gso4_per_cpu_sec,
        100.0 * best / ceiling.sendmmsg_per_cpu_sec.max(1.0),
        100.0 * best / ceiling.sendto_per_cpu_sec.max(1.0),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let before = vec![(0.001, 0.0), (0.002, 0.0), (f64::INFINITY, 0.0)];
        let after = vec![(0.001, 50.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        assert!((quantile(&before, &after, 0.5).unwrap() - 0.001).abs() < 1e-9);
        assert!((quantile(&before, &after, 0.75).unwrap() - 0.0015).abs() < 1e-9);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
