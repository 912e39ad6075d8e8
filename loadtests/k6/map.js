// The crisis map under load: server-side clustering of the incidents in a view at a zoom
// level (`GET /api/v1/crisis/map`), over a map seeded with SEED incidents.
//   NEXUS_RATE_LIMIT_PER_IP=0 NEXUS_RATE_LIMIT_PER_USER=0 nexus serve
//   k6 run -e BASE_URL=http://127.0.0.1:8080 loadtests/k6/map.js
// Options (-e): DURATION (20s), RATE (300 map reads/s), SEED (5000 incidents reported first).
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const DURATION = __ENV.DURATION || '20s';
const RATE = parseInt(__ENV.RATE || '300');
const SEED = parseInt(__ENV.SEED || '5000');
const json = { 'Content-Type': 'application/json' };
const REGION = { minLon: 30, minLat: -5, size: 10 };

export const options = {
  setupTimeout: '120s',
  scenarios: {
    map: {
      executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION,
      preAllocatedVUs: 20, maxVUs: 100, exec: 'map',
    },
  },
  thresholds: {
    // Platform target: API p95 < 200 ms, p99 < 500 ms.
    'http_req_duration{scenario:map}': ['p(95)<200', 'p(99)<500'],
    'http_req_failed{scenario:map}': ['rate<0.01'],
    'http_reqs{scenario:map}': ['count>0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
};

export function setup() {
  const email = `map-${Date.now()}@example.org`;
  const password = 'load test password';
  http.post(`${BASE}/api/v1/auth/register`,
    JSON.stringify({ email, password, name: 'Map load', role: 'responder' }), { headers: json });
  const login = http.post(`${BASE}/api/v1/auth/login`, JSON.stringify({ email, password }), { headers: json });
  const auth = { ...json, Authorization: `Bearer ${login.json('access_token')}` };
  // Seed in batches of 50 parallel reports; a city-sized hot spot makes dense clusters.
  for (let done = 0; done < SEED; done += 50) {
    const batch = [];
    for (let i = 0; i < Math.min(50, SEED - done); i++) {
      const hot = (done + i) % 3 === 0;
      const body = {
        type: ['flood', 'fire', 'injury'][(done + i) % 3],
        severity: 1 + ((done + i) % 5),
        lat: hot ? -1.3 + Math.random() * 0.2 : REGION.minLat + Math.random() * REGION.size,
        lon: hot ? 36.7 + Math.random() * 0.2 : REGION.minLon + Math.random() * REGION.size,
      };
      batch.push(['POST', `${BASE}/api/v1/crisis/incidents`, JSON.stringify(body), { headers: auth, tags: { name: 'seed' } }]);
    }
    http.batch(batch);
  }
  return { auth };
}

export function map(data) {
  // A view from the whole region at zoom 5 down to a street block at zoom 14.
  const zoom = 5 + (__ITER % 10);
  const span = REGION.size / Math.pow(2, zoom - 5);
  const lon = REGION.minLon + Math.random() * (REGION.size - span);
  const lat = REGION.minLat + Math.random() * (REGION.size - span);
  const r = http.get(`${BASE}/api/v1/crisis/map?bbox=${lon},${lat},${lon + span},${lat + span}&zoom=${zoom}`,
    { headers: data.auth });
  check(r, { 'map 200': (x) => x.status === 200 && x.body.includes('FeatureCollection') });
}
