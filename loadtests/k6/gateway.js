// Realtime gateway under load: many WebSocket clients (Centrifugo JSON protocol) hold a
// server-side subscription to `incidents`; a publisher posts through the server API; each
// receiver records publish → receive latency.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e API_KEY=nxk_… loadtests/k6/gateway.js
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { WebSocket } from 'k6/experimental/websockets';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const WS = BASE.replace('http', 'ws') + '/connection/websocket';
const DURATION = __ENV.DURATION || '20s';
const CLIENTS = parseInt(__ENV.CLIENTS || '200');
const json = { headers: { 'Content-Type': 'application/json' } };

const delivery = new Trend('gateway_delivery_ms', true);
const received = new Counter('gateway_publications_received');

export const options = {
  scenarios: {
    subscribers: { executor: 'per-vu-iterations', vus: CLIENTS, iterations: 1, maxDuration: '2m', exec: 'subscriber' },
    publisher: { executor: 'constant-arrival-rate', rate: 20, timeUnit: '1s', duration: DURATION, preAllocatedVUs: 4, exec: 'publish', startTime: '5s' },
  },
  thresholds: {
    // Platform target: events end to end < 1 s.
    gateway_delivery_ms: ['p(99)<1000'],
    'http_req_duration{scenario:publisher}': ['p(95)<200', 'p(99)<500'],
    'http_reqs{scenario:publisher}': ['count>0'],
    'http_req_failed{scenario:publisher}': ['rate<0.01'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
};

export function setup() {
  const email = `gw-${Date.now()}@example.org`;
  const password = 'load test password';
  http.post(`${BASE}/api/v1/auth/register`, JSON.stringify({ email, password, name: 'Gateway load', role: 'responder' }), json);
  const login = http.post(`${BASE}/api/v1/auth/login`, JSON.stringify({ email, password }), json);
  const access = login.json('access_token');
  const rt = http.post(`${BASE}/api/v1/realtime/token`, null, { headers: { Authorization: `Bearer ${access}` } });
  return { token: rt.json('token') };
}

export function subscriber(data) {
  const ws = new WebSocket(WS);
  ws.onopen = () => ws.send(JSON.stringify({ id: 1, connect: { token: data.token, name: 'k6' } }));
  ws.onmessage = (e) => {
    for (const line of String(e.data).split('\n')) {
      if (!line) continue;
      const msg = JSON.parse(line);
      if (Object.keys(msg).length === 0) { ws.send('{}'); continue; } // ping → pong
      const pub = msg.push && msg.push.pub;
      if (pub && pub.data && pub.data.sent_at) {
        delivery.add(Date.now() - pub.data.sent_at);
        received.add(1);
      }
    }
  };
  // Stay connected for the publisher's run, then leave.
  setTimeout(() => ws.close(), (parseInt(DURATION) + 8) * 1000);
}

export function publish() {
  const body = { channel: 'incidents', data: { type: 'load', sent_at: Date.now(), location: { lat: 51.5, lon: -0.12 } } };
  const r = http.post(`${BASE}/api/publish`, JSON.stringify(body), { headers: { 'Content-Type': 'application/json', 'X-API-Key': __ENV.API_KEY } });
  check(r, { 'publish 200': (x) => x.status === 200 });
  sleep(0);
}
