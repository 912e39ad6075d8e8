// Accounts under load: logins (argon2id-bound by design) and profile reads (token check + one
// indexed read). Run against a server with rate limits lifted:
//   NEXUS_RATE_LIMIT_PER_IP=0 NEXUS_RATE_LIMIT_PER_USER=0 nexus serve
//   k6 run -e BASE_URL=http://127.0.0.1:8080 loadtests/k6/auth.js
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const USERS = 20;
const DURATION = __ENV.DURATION || '20s';
const json = { headers: { 'Content-Type': 'application/json' } };

export const options = {
  scenarios: {
    login: { executor: 'constant-vus', vus: 8, duration: DURATION, exec: 'login' },
    profile: { executor: 'constant-vus', vus: 32, duration: DURATION, exec: 'profile', startTime: DURATION },
  },
  thresholds: {
    // The platform target: p95 < 200 ms, p99 < 500 ms.
    'http_req_duration{scenario:profile}': ['p(95)<200', 'p(99)<500'],
    'http_req_duration{scenario:login}': ['p(99)<500'],
    'http_req_failed': ['rate<0.01'],
    // Declared so that per-scenario counts and rates appear in the summary export.
    'http_reqs{scenario:login}': ['count>0'],
    'http_reqs{scenario:profile}': ['count>0'],
    'http_req_failed{scenario:login}': ['rate<0.01'],
    'http_req_failed{scenario:profile}': ['rate<0.01'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
};

export function setup() {
  const run = Date.now();
  const users = [];
  for (let i = 0; i < USERS; i++) {
    const email = `load-${run}-${i}@example.org`;
    const password = 'load test password';
    const r = http.post(`${BASE}/api/v1/auth/register`, JSON.stringify({ email, password, name: `Load ${i}` }), json);
    check(r, { registered: (x) => x.status === 201 });
    const l = http.post(`${BASE}/api/v1/auth/login`, JSON.stringify({ email, password }), json);
    users.push({ email, password, token: l.json('access_token') });
  }
  return { users };
}

export function login(data) {
  const u = data.users[__VU % data.users.length];
  const r = http.post(`${BASE}/api/v1/auth/login`, JSON.stringify({ email: u.email, password: u.password }), json);
  check(r, { 'login 200': (x) => x.status === 200 });
}

export function profile(data) {
  const u = data.users[__VU % data.users.length];
  const r = http.get(`${BASE}/api/v1/auth/profile`, { headers: { Authorization: `Bearer ${u.token}` } });
  check(r, { 'profile 200': (x) => x.status === 200 });
}
