//! Driver settings.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How the SFU binds and behaves.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The first shard's UDP address; shard *k* binds port + *k*; port 0 binds free ports.
    pub udp_addr: SocketAddr,
    /// Number of shards (at least 1).
    pub shards: usize,
    /// Address announced in ICE host candidates instead of the bound IP (1:1 NAT). Required
    /// when binding an unspecified address (`0.0.0.0`).
    pub public_ip: Option<IpAddr>,
    /// How long an empty room stays open.
    pub room_close_grace: Duration,
    /// How long a room-protocol participant may take to reconnect its signaling.
    pub reconnect_grace: Duration,
    /// A shard whose loop was busy at least this share of the last 2 s refuses new
    /// subscribers (WHEP → 503 with `Retry-After`); above 1 never refuses
    /// (`nexus_sfu_core::load`).
    pub max_busy: f64,
}

impl SfuConfig {
    /// One shard per core at `udp_addr`, default timers.
    pub fn new(udp_addr: SocketAddr) -> Self {
        SfuConfig {
            udp_addr,
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            public_ip: None,
            room_close_grace: Duration::from_secs(30),
            reconnect_grace: Duration::from_secs(30),
            max_busy: 0.8,
        }
    }
}
