// Alert issue → WebSocket receipt: an `alert_authority` posts CAP alerts (JSON form) while
// CLIENTS WebSocket clients, subscribed server-side to the gateway's `alerts` channel by their
// realtime token, time each alert from just before its POST to its arrival.
//   NEXUS_RATE_LIMIT_PER_IP=0 NEXUS_RATE_LIMIT_PER_USER=0 nexus serve
//   k6 run -e BASE_URL=http://127.0.0.1:8080 \
//     -e AUTHORITY_TOKEN="$(nexus token --sub bench-authority --role alert_authority)" loadtests/k6/alerts.js
// Options (-e): DURATION (20s), CLIENTS (200), RATE (5 alerts/s).
import http from 'k6/http';
import { check } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { WebSocket } from 'k6/experimental/websockets';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const WS = BASE.replace('http', 'ws') + '/connection/websocket';
const DURATION = __ENV.DURATION || '20s';
const CLIENTS = parseInt(__ENV.CLIENTS || '200');
const RATE = parseInt(__ENV.RATE || '5');
const json = { 'Content-Type': 'application/json' };

const delivery = new Trend('alert_delivery_ms', true);
const received = new Counter('alert_receipts');

export const options = {
  scenarios: {
    subscribers: { executor: 'per-vu-iterations', vus: CLIENTS, iterations: 1, maxDuration: '3m', exec: 'subscriber' },
    issuer: {
      executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION,
      preAllocatedVUs: 4, maxVUs: 20, exec: 'issue', startTime: '5s',
    },
  },
  thresholds: {
    // Platform target: events end to end < 1 s (here: CAP parse, validation, targeting,
    // store with deliveries and outbox, gateway fan-out to every client).
    alert_delivery_ms: ['p(99)<1000'],
    alert_receipts: ['count>0'],
    'http_req_duration{scenario:issuer}': ['p(95)<200', 'p(99)<500'],
    'http_req_failed{scenario:issuer}': ['rate<0.01'],
    'http_reqs{scenario:issuer}': ['count>0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
};

export function setup() {
  if (!__ENV.AUTHORITY_TOKEN) throw new Error('set AUTHORITY_TOKEN (nexus token --sub X --role alert_authority)');
  const email = `alerts-${Date.now()}@example.org`;
  const password = 'load test password';
  http.post(`${BASE}/api/v1/auth/register`, JSON.stringify({ email, password, name: 'Alert load' }), { headers: json });
  const login = http.post(`${BASE}/api/v1/auth/login`, JSON.stringify({ email, password }), { headers: json });
  // Every user's realtime token subscribes them to `alerts` server-side.
  const rt = http.post(`${BASE}/api/v1/realtime/token`, null, { headers: { Authorization: `Bearer ${login.json('access_token')}` } });
  return { token: rt.json('token') };
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
      const pub = msg.push && msg.push.channel === 'alerts' && msg.push.pub;
      const m = pub && pub.data && /^load test (\d+)$/.exec(pub.data.headline || '');
      if (m) {
        delivery.add(now - parseInt(m[1]));
        received.add(1);
      }
    }
  };
  setTimeout(() => ws.close(), (parseInt(DURATION) + 10) * 1000);
}

// CAP date-time: no fractional seconds, UTC written -00:00.
const capTime = (ms) => new Date(ms).toISOString().replace(/\.\d+Z$/, '-00:00');

export function issue() {
  const now = Date.now();
  const alert = {
    identifier: `load-${__VU}-${__ITER}-${now}`,
    sender: 'load@nexus.example',
    sent: capTime(now),
    status: 'Actual',
    msg_type: 'Alert',
    scope: 'Public',
    info: [{
      category: ['Met'],
      event: 'Flood',
      urgency: 'Immediate',
      severity: 'Severe',
      certainty: 'Observed',
      headline: `load test ${now}`,
      expires: capTime(now + 3600 * 1000),
      area: [{ area_desc: 'Load test area', circle: ['-1.29,36.82 10'] }],
    }],
  };
  const r = http.post(`${BASE}/api/v1/alerts`, JSON.stringify(alert),
    { headers: { ...json, Authorization: `Bearer ${__ENV.AUTHORITY_TOKEN}` } });
  check(r, { 'alert 201': (x) => x.status === 201 });
}
