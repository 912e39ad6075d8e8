//! The SFU's counters on the main `/metrics` endpoint, under the same `nexus_sfu_*` names as
//! `/metrics/sfu` (dashboards and alert rules rely on them).
//!
//! A Prometheus [`Collector`] is called synchronously at scrape time, but the counters live in
//! the shard tasks and are read by message ([`SfuHandle::stats`]). So a small task refreshes a
//! snapshot every [`REFRESH`] and the collector reads the latest one: values lag by at most
//! that long, far below any scrape interval. The task ends when the collector is dropped.

use nexus_sfu_net::{FORWARD_LATENCY_METRIC, SHARD_BUSY_METRIC, SfuHandle, SfuStats};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How often the snapshot is refreshed from the shards.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Exposes `nexus_sfu_*`: rooms, participants, tracks, packets and bytes in/out, forwarded
/// frames, dropped packets, NACKs, keyframe requests (sent and throttled), layer switches,
/// ingress loss, `nexus_sfu_shard_busy_seconds_total{shard}` (per-shard loop time) and the
/// `nexus_sfu_forward_latency_seconds` histogram (added forwarding latency).
pub struct SfuCollector {
    snapshot: Arc<Mutex<SfuStats>>,
    descs: Vec<Desc>,
}

impl SfuCollector {
    /// A collector over `sfu`; spawns the refresh task on the current tokio runtime.
    pub fn start(sfu: SfuHandle) -> Self {
        let collector = Self::new(Arc::new(Mutex::new(SfuStats::default())));
        tokio::spawn(refresh(sfu, Arc::downgrade(&collector.snapshot)));
        collector
    }

    #[allow(clippy::expect_used)]
    fn new(snapshot: Arc<Mutex<SfuStats>>) -> Self {
        let (busy, busy_help) = SHARD_BUSY_METRIC;
        let mut descs: Vec<Desc> = SfuStats::default()
            .rows()
            .iter()
            .map(|(name, _, _, help)| {
                Desc::new(
                    format!("nexus_sfu_{name}"),
                    (*help).into(),
                    Vec::new(),
                    Default::default(),
                )
                // The names are constants made of [a-z_]: a valid name cannot fail.
                .expect("valid metric name")
            })
            .collect();
        descs.push(
            Desc::new(
                format!("nexus_sfu_{busy}"),
                busy_help.into(),
                vec!["shard".into()],
                Default::default(),
            )
            .expect("valid metric name"),
        );
        let (latency, latency_help) = FORWARD_LATENCY_METRIC;
        descs.push(
            Desc::new(
                format!("nexus_sfu_{latency}"),
                latency_help.into(),
                Vec::new(),
                Default::default(),
            )
            .expect("valid metric name"),
        );
        SfuCollector { snapshot, descs }
    }

    /// The metric families of a snapshot.
    fn families(stats: &SfuStats) -> Vec<MetricFamily> {
        let mut out: Vec<MetricFamily> = stats
            .rows()
            .iter()
            .map(|&(name, kind, value, help)| {
                let mut m = proto::Metric::default();
                let kind = if kind == "counter" {
                    let mut c = proto::Counter::default();
                    c.set_value(value as f64);
                    m.set_counter(c);
                    MetricType::COUNTER
                } else {
                    let mut g = proto::Gauge::default();
                    g.set_value(value as f64);
                    m.set_gauge(g);
                    MetricType::GAUGE
                };
                family(&format!("nexus_sfu_{name}"), help, kind, vec![m])
            })
            .collect();
        let (busy, help) = SHARD_BUSY_METRIC;
        let shards: Vec<proto::Metric> = stats
            .shard_busy_seconds()
            .map(|(i, secs)| {
                let mut label = proto::LabelPair::default();
                label.set_name("shard".into());
                label.set_value(i.to_string());
                let mut c = proto::Counter::default();
                c.set_value(secs);
                let mut m = proto::Metric::default();
                m.set_label(vec![label]);
                m.set_counter(c);
                m
            })
            .collect();
        if !shards.is_empty() {
            out.push(family(
                &format!("nexus_sfu_{busy}"),
                help,
                MetricType::COUNTER,
                shards,
            ));
        }
        let (name, help) = FORWARD_LATENCY_METRIC;
        let mut h = proto::Histogram::default();
        let h_latency = &stats.forward_latency;
        h.set_sample_count(h_latency.count());
        h.set_sample_sum(h_latency.sum_ns as f64 / 1e9);
        h.set_bucket(
            h_latency
                .cumulative()
                .into_iter()
                .filter(|(le, _)| le.is_finite())
                .map(|(le, count)| {
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(le);
                    b.set_cumulative_count(count);
                    b
                })
                .collect(),
        );
        let mut m = proto::Metric::default();
        m.set_histogram(h);
        out.push(family(
            &format!("nexus_sfu_{name}"),
            help,
            MetricType::HISTOGRAM,
            vec![m],
        ));
        out
    }
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

/// Refreshes the snapshot until the collector is gone.
async fn refresh(sfu: SfuHandle, snapshot: Weak<Mutex<SfuStats>>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let stats = sfu.stats().await;
        let Some(snapshot) = snapshot.upgrade() else {
            return;
        };
        // The lock guards a copy, never held across an await; a poisoned lock still holds
        // a whole snapshot.
        *snapshot.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    }
}

impl Collector for SfuCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Self::families(&stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_sfu_net::ShardStats;
    use prometheus::{Encoder, Registry, TextEncoder};

    fn render(stats: &SfuStats) -> String {
        let registry = Registry::new();
        let collector = SfuCollector::new(Arc::new(Mutex::new(stats.clone())));
        registry.register(Box::new(collector)).unwrap();
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn exports_the_same_series_as_metrics_sfu() {
        let shard = ShardStats {
            rooms: 2,
            participants: 5,
            tracks: 3,
            packets_in: 1000,
            nacks: 7,
            layer_switches: 4,
            dropped_packets: 9,
            keyframe_requests: 11,
            ..ShardStats::default()
        };
        let stats = SfuStats {
            total: shard,
            shards: vec![(shard, 1_500_000_000), (ShardStats::default(), 0)],
            forward_latency: {
                let mut h = nexus_sfu_net::LatencyHistogram::default();
                h.record(std::time::Duration::from_micros(120));
                h
            },
        };
        let text = render(&stats);
        for line in [
            "nexus_sfu_rooms 2",
            "nexus_sfu_participants 5",
            "nexus_sfu_tracks 3",
            "nexus_sfu_packets_in_total 1000",
            "nexus_sfu_nacks_total 7",
            "nexus_sfu_layer_switches_total 4",
            "nexus_sfu_dropped_packets_total 9",
            "nexus_sfu_keyframe_requests_total 11",
            "nexus_sfu_shard_busy_seconds_total{shard=\"0\"} 1.5",
            "nexus_sfu_shard_busy_seconds_total{shard=\"1\"} 0",
            "# TYPE nexus_sfu_rooms gauge",
            "# TYPE nexus_sfu_bytes_out_total counter",
            "# TYPE nexus_sfu_forward_latency_seconds histogram",
            "nexus_sfu_forward_latency_seconds_bucket{le=\"0.0001\"} 0",
            "nexus_sfu_forward_latency_seconds_bucket{le=\"0.00015\"} 1",
            "nexus_sfu_forward_latency_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        // Every series of /metrics/sfu is on /metrics too.
        for line in stats.prometheus().lines() {
            if let Some(name) = line.strip_prefix("# TYPE ") {
                assert!(text.contains(&format!("# TYPE {name}")), "missing {name}");
            }
        }
    }

    #[tokio::test]
    async fn the_snapshot_follows_the_running_sfu() {
        let mut config = nexus_sfu_net::SfuConfig::new("127.0.0.1:0".parse().unwrap());
        config.shards = 2;
        let sfu = SfuHandle::start(config).await.unwrap();
        let collector = SfuCollector::start(sfu.clone());
        let registry = Registry::new();
        registry.register(Box::new(collector)).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let families = registry.gather();
        let busy = families
            .iter()
            .find(|f| f.name() == "nexus_sfu_shard_busy_seconds_total")
            .expect("per-shard loop time");
        assert_eq!(busy.get_metric().len(), 2);
        assert!(families.iter().any(|f| f.name() == "nexus_sfu_rooms"));
        sfu.shutdown().await;
    }
}
