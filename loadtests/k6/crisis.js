// Crisis incidents under load: responders report incidents (store + outbox + geo index) while
// map clients read the incidents in a bounding box (geo index → GeoJSON).
//   NEXUS_RATE_LIMIT_PER_IP=0 NEXUS_RATE_LIMIT_PER_USER=0 nexus serve
//   k6 run -e BASE_URL=http://127.0.0.1:8080 loadtests/k6/crisis.js
// Options (-e): DURATION (20s), WRITE_RATE (100 reports/s), READ_RATE (300 bbox reads/s).
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const DURATION = __ENV.DURATION || '20s';
const WRITE_RATE = parseInt(__ENV.WRITE_RATE || '100');
const READ_RATE = parseInt(__ENV.READ_RATE || '300');
const json = { 'Content-Type': 'application/json' };
// Incidents land in a 10° × 10° region (East Africa); reads ask for a 1° × 1° box in it.
const REGION = { minLon: 30, minLat: -5, size: 10 };

export const options = {
  scenarios: {
    incident_write: {
      executor: 'constant-arrival-rate', rate: WRITE_RATE, timeUnit: '1s', duration: DURATION,
      preAllocatedVUs: 20, maxVUs: 100, exec: 'report',
    },
    incident_bbox: {
      executor: 'constant-arrival-rate', rate: READ_RATE, timeUnit: '1s', duration: DURATION,
      preAllocatedVUs: 20, maxVUs: 100, exec: 'bbox',
    },
  },
  thresholds: {
    // Platform target: API p95 < 200 ms, p99 < 500 ms.
    'http_req_duration{scenario:incident_write}': ['p(95)<200', 'p(99)<500'],
    'http_req_duration{scenario:incident_bbox}': ['p(95)<200', 'p(99)<500'],
    'http_req_failed{scenario:incident_write}': ['rate<0.01'],
    'http_req_failed{scenario:incident_bbox}': ['rate<0.01'],
    'http_reqs{scenario:incident_write}': ['count>0'],
    'http_reqs{scenario:incident_bbox}': ['count>0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
};

export function setup() {
  const email = `crisis-${Date.now()}@example.org`;
  const password = 'load test password';
  const reg = http.post(`${BASE}/api/v1/auth/register`,
    JSON.stringify({ email, password, name: 'Crisis load', role: 'responder' }), { headers: json });
  check(reg, { registered: (r) => r.status === 201 });
  const login = http.post(`${BASE}/api/v1/auth/login`, JSON.stringify({ email, password }), { headers: json });
  return { auth: { ...json, Authorization: `Bearer ${login.json('access_token')}` } };
}

export function report(data) {
  const body = {
    type: ['flood', 'fire', 'injury', 'collapse'][__ITER % 4],
    severity: 1 + (__ITER % 5),
    lat: REGION.minLat + Math.random() * REGION.size,
    lon: REGION.minLon + Math.random() * REGION.size,
    title: 'Load test incident',
  };
  const r = http.post(`${BASE}/api/v1/crisis/incidents`, JSON.stringify(body), { headers: data.auth });
  check(r, { 'report 201': (x) => x.status === 201 });
}

export function bbox(data) {
  const lon = REGION.minLon + Math.random() * (REGION.size - 1);
  const lat = REGION.minLat + Math.random() * (REGION.size - 1);
  const r = http.get(`${BASE}/api/v1/crisis/incidents?bbox=${lon},${lat},${lon + 1},${lat + 1}&limit=200`,
    { headers: data.auth });
  check(r, { 'bbox 200': (x) => x.status === 200 && x.body.includes('FeatureCollection') });
}
