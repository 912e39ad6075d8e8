//! Prometheus metrics: HTTP request counts and latency by route and status, process metrics and
//! the gauges other subsystems update.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The metrics registry and the instruments the edge updates.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `nexus_http_requests_total{method,route,status}`.
    pub requests: IntCounterVec,
    /// `nexus_http_request_duration_seconds{method,route,status}`.
    pub latency: HistogramVec,
    /// `nexus_http_in_flight_requests`.
    pub in_flight: IntGauge,
    /// `nexus_http_rate_limited_total{scope}`.
    pub rate_limited: IntCounterVec,
    /// `nexus_outbox_pending_events`.
    pub outbox_pending: IntGauge,
}

impl Metrics {
    /// Registers every instrument. Registration only fails on duplicate names, which this
    /// function controls.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "nexus_http_requests_total",
                "HTTP requests by method, route and status",
            ),
            &["method", "route", "status"],
        )
        .expect("valid counter");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "nexus_http_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method", "route", "status"],
        )
        .expect("valid histogram");
        let in_flight = IntGauge::new(
            "nexus_http_in_flight_requests",
            "HTTP requests being served",
        )
        .expect("valid gauge");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "nexus_http_rate_limited_total",
                "Requests refused by a rate limit",
            ),
            &["scope"],
        )
        .expect("valid counter");
        let outbox_pending = IntGauge::new(
            "nexus_outbox_pending_events",
            "Events written but not yet published",
        )
        .expect("valid gauge");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(in_flight.clone()),
            Box::new(rate_limited.clone()),
            Box::new(outbox_pending.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(pc));
        }
        Metrics {
            registry,
            requests,
            latency,
            in_flight,
            rate_limited,
            outbox_pending,
        }
    }

    /// Registers a collector of another subsystem.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(collector) {
            tracing::warn!(error = %e, "metrics collector not registered");
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
