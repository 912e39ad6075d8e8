// Healthcare under load: publishing slots and booking them (with a refused double booking on
// every iteration), and FHIR record writes and reads. Needs a provider token (roles beyond
// self-registration come from an admin or the CLI) and rate limits lifted:
//   NEXUS_RATE_LIMIT_PER_IP=0 NEXUS_RATE_LIMIT_PER_USER=0 nexus serve
//   k6 run -e BASE_URL=http://127.0.0.1:8080 \
//     -e PROVIDER_TOKEN="$(nexus token --sub bench-provider --role provider --ttl 7200)" \
//     loadtests/k6/healthcare.js
// By default each scenario runs closed-loop (a fixed number of VUs as fast as they can: the
// throughput). With -e RATE=500 each runs open-loop at a fixed arrival rate of RATE HTTP
// requests per second instead (the latency at that load): booking iterations make 3
// requests, records iterations 2.
import http from 'k6/http';
import { check, fail } from 'k6';
import exec from 'k6/execution';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const DURATION = __ENV.DURATION || '20s';
const PATIENTS = 16;
const SLOT_MS = 10 * 60 * 1000;

const RATE = Number(__ENV.RATE || 0);
// An open-loop scenario: `requests` HTTP requests per iteration, RATE requests per second.
const atRate = (exec, requests, startTime) => ({
  executor: 'constant-arrival-rate', exec, startTime, duration: DURATION,
  rate: Math.round(RATE / requests), timeUnit: '1s', preAllocatedVUs: 32, maxVUs: 256,
});

export const options = {
  scenarios: RATE > 0 ? {
    booking: atRate('booking', 3, '0s'),
    records: atRate('records', 2, DURATION),
  } : {
    booking: { executor: 'constant-vus', vus: 8, duration: DURATION, exec: 'booking' },
    records: { executor: 'constant-vus', vus: 16, duration: DURATION, exec: 'records', startTime: DURATION },
  },
  thresholds: {
    // The platform target: p95 < 200 ms, p99 < 500 ms.
    'http_req_duration{scenario:booking}': ['p(95)<200', 'p(99)<500'],
    'http_req_duration{scenario:records}': ['p(95)<200', 'p(99)<500'],
    'http_req_failed': ['rate<0.01'],
    'http_reqs{scenario:booking}': ['count>0'],
    'http_reqs{scenario:records}': ['count>0'],
    'http_req_failed{scenario:booking}': ['rate<0.01'],
    'http_req_failed{scenario:records}': ['rate<0.01'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
};

function params(token, extra) {
  return Object.assign(
    { headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` } },
    extra || {},
  );
}

export function setup() {
  const doc = __ENV.PROVIDER_TOKEN;
  if (!doc) fail('set PROVIDER_TOKEN (nexus token --sub ID --role provider)');
  let r = http.post(`${BASE}/api/v1/healthcare/providers`,
    JSON.stringify({ specialty: 'general_practice', languages: ['en'] }), params(doc));
  if (r.status === 409) fail('the provider token has a profile already: use a fresh --sub');
  check(r, { 'provider 201': (x) => x.status === 201 });
  const provider = r.json('id');
  // Slots far in the future, one time line per VU and iteration, so no two overlap.
  const epoch = Date.now() + 24 * 3600 * 1000;
  const patients = [];
  const run = Date.now();
  for (let i = 0; i < PATIENTS; i++) {
    const email = `hc-${run}-${i}@example.org`;
    const password = 'load test password';
    const reg = http.post(`${BASE}/api/v1/auth/register`,
      JSON.stringify({ email, password, name: `Patient ${i}` }), params(''));
    const id = reg.json('id');
    const l = http.post(`${BASE}/api/v1/auth/login`, JSON.stringify({ email, password }), params(''));
    const token = l.json('access_token');
    // One appointment each makes the provider a treating provider of every patient.
    const start = new Date(epoch - (i + 1) * SLOT_MS).toISOString();
    const end = new Date(epoch - i * SLOT_MS).toISOString();
    r = http.post(`${BASE}/api/v1/healthcare/providers/${provider}/slots`, JSON.stringify({ start, end }), params(doc));
    r = http.post(`${BASE}/api/v1/healthcare/appointments`,
      JSON.stringify({ slot_id: r.json('id'), reason: 'check-up' }), params(token));
    check(r, { 'setup booking 201': (x) => x.status === 201 });
    patients.push({ id, token });
  }
  return { doc, provider, patients, epoch };
}

export function booking(data) {
  // Unique across VUs and iterations, so no two slots overlap.
  const n = exec.scenario.iterationInTest;
  const start = new Date(data.epoch + n * SLOT_MS).toISOString();
  const end = new Date(data.epoch + (n + 1) * SLOT_MS).toISOString();
  const slot = http.post(`${BASE}/api/v1/healthcare/providers/${data.provider}/slots`,
    JSON.stringify({ start, end }), params(data.doc));
  check(slot, { 'slot 201': (x) => x.status === 201 });
  const body = JSON.stringify({ slot_id: slot.json('id'), reason: 'load test' });
  const p = data.patients[__ITER % data.patients.length];
  const q = data.patients[(__ITER + 1) % data.patients.length];
  const booked = http.post(`${BASE}/api/v1/healthcare/appointments`, body, params(p.token));
  check(booked, { 'booking 201': (x) => x.status === 201 });
  const again = http.post(`${BASE}/api/v1/healthcare/appointments`, body,
    params(q.token, { responseCallback: http.expectedStatuses(409) }));
  check(again, { 'double booking 409': (x) => x.status === 409 });
}

export function records(data) {
  const p = data.patients[__VU % data.patients.length];
  const url = `${BASE}/api/v1/healthcare/records/${p.id}`;
  // One Observation per VU, updated in place, so the record stays the same size.
  const obs = {
    resourceType: 'Observation', id: `hr-vu${__VU}`, status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
    subject: { reference: `Patient/${p.id}` },
    valueQuantity: { value: 60 + (__ITER % 40), unit: 'beats/minute' },
  };
  const w = http.post(url, JSON.stringify(obs), params(data.doc));
  check(w, { 'write 200/201': (x) => x.status === 200 || x.status === 201 });
  const r = http.get(url, params(data.doc));
  check(r, { 'read 200': (x) => x.status === 200 && x.json('resourceType') === 'Bundle' });
}
