// End-to-end event latency: an incident reported over HTTP → stored with its
// `incident.reported` CloudEvent in the outbox → relay → event bus (in-process, or Kafka when
// the server runs with NEXUS_KAFKA_BROKERS) → the real-time core's consumer → gateway
// `incidents` channel → CLIENTS WebSocket clients. The report's `type` carries the time just
// before its POST, so every client times every event.
//   NEXUS_RATE_LIMIT_PER_IP=0 NEXUS_RATE_LIMIT_PER_USER=0 [NEXUS_KAFKA_BROKERS=…] nexus serve
//   k6 run -e BASE_URL=http://127.0.0.1:8080 loadtests/k6/events.js
// Options (-e): DURATION (20s), CLIENTS (100), RATE (20 reports/s), BUS (label of the bus in
// the metric tags, e.g. `inprocess` or `kafka`).
import http from 'k6/http';
import { check } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { WebSocket } from 'k6/experimental/websockets';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const WS = BASE.replace('http', 'ws') + '/connection/websocket';
const DURATION = __ENV.DURATION || '20s';
const CLIENTS = parseInt(__ENV.CLIENTS || '100');
const RATE = parseInt(__ENV.RATE || '20');
const json = { 'Content-Type': 'application/json' };

const delivery = new Trend('event_delivery_ms', true);
const received = new Counter('event_receipts');

export const options = {
  scenarios: {
    subscribers: { executor: 'per-vu-iterations', vus: CLIENTS, iterations: 1, maxDuration: '3m', exec: 'subscriber' },
    reporter: {
      executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION,
      preAllocatedVUs: 4, maxVUs: 20, exec: 'report', startTime: '5s',
    },
  },
  thresholds: {
    // Platform target: events end to end < 1 s.
    event_delivery_ms: ['p(99)<1000'],
    event_receipts: ['count>0'],
    'http_req_duration{scenario:reporter}': ['p(95)<200', 'p(99)<500'],
    'http_req_failed{scenario:reporter}': ['rate<0.01'],
    'http_reqs{scenario:reporter}': ['count>0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
};

export function setup() {
  const email = `events-${Date.now()}@example.org`;
  const password = 'load test password';
  http.post(`${BASE}/api/v1/auth/register`,
    JSON.stringify({ email, password, name: 'Events load', role: 'responder' }), { headers: json });
  const login = http.post(`${BASE}/api/v1/auth/login`, JSON.stringify({ email, password }), { headers: json });
  const access = login.json('access_token');
  // A responder's realtime token subscribes them to `incidents` server-side.
  const rt = http.post(`${BASE}/api/v1/realtime/token`, null, { headers: { Authorization: `Bearer ${access}` } });
  return { token: rt.json('token'), auth: { ...json, Authorization: `Bearer ${access}` } };
}

export function subscriber(data) {
  const ws = new WebSocket(WS);
  ws.onopen = () => ws.send(JSON.stringify({ id: 1, connect: { token: data.token, name: 'k6' } }));
  ws.onmessage = (e) => {
    const now = Date.now();
    for (const line of String(e.data).split('\n')) {
      if (!line) continue;
      if (line === '{}') { ws.send('{}'); continue; } // ping → pong
      const msg = JSON.parse(line);
      const pub = msg.push && msg.push.channel === 'incidents' && msg.push.pub;
      const m = pub && pub.data && pub.data.event === 'incident.reported' && /^e2e-(\d+)$/.exec(pub.data.type || '');
      if (m) {
        delivery.add(now - parseInt(m[1]));
        received.add(1);
      }
    }
  };
  setTimeout(() => ws.close(), (parseInt(DURATION) + 10) * 1000);
}

export function report(data) {
  const body = { type: `e2e-${Date.now()}`, severity: 3, lat: -1.29 + Math.random() * 0.1, lon: 36.82 + Math.random() * 0.1 };
  const r = http.post(`${BASE}/api/v1/crisis/incidents`, JSON.stringify(body), { headers: data.auth });
  check(r, { 'report 201': (x) => x.status === 201 });
}
