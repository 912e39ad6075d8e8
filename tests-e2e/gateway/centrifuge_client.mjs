// Drives the npm `centrifuge` client (centrifuge-js) against the Nexus gateway.
// Run by realtime-gateway/tests/centrifuge_js.rs: events go to stdout as JSON lines, the Rust
// test answers on stdin with one-word steps (`presence`, `done`).
//
// usage: node centrifuge_client.mjs <ws-url> <token>
import { Centrifuge } from 'centrifuge';
import readline from 'node:readline';

const [url, token] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const step = async (name) => {
  for (;;) {
    const { value, done } = await lines.next();
    if (done) process.exit(3);
    if (value.trim() === name) return;
  }
};
const watchdog = setTimeout(() => { out({ event: 'timeout' }); process.exit(2); }, 60000);

const client = new Centrifuge(url, {
  token,
  websocket: globalThis.WebSocket,
  minReconnectDelay: 1500,
  maxReconnectDelay: 2000,
});
client.on('connected', (ctx) => out({ event: 'connected', client: ctx.client }));
client.on('connecting', (ctx) => out({ event: 'connecting', code: ctx.code, reason: ctx.reason }));
client.on('disconnected', (ctx) => out({ event: 'disconnected', code: ctx.code, reason: ctx.reason }));
client.on('error', (ctx) => out({ event: 'error', error: String(ctx.error && ctx.error.message) }));
// Server-side subscriptions (the token's channels) arrive as client-level events.
client.on('subscribed', (ctx) => out({ event: 'server_subscribed', channel: ctx.channel }));

const sub = client.newSubscription('incidents', { data: { bbox: [2.0, 48.0, 3.0, 49.0], zoom: 9 } });
sub.on('subscribed', (ctx) => out({
  event: 'subscribed',
  recoverable: ctx.recoverable,
  wasRecovering: ctx.wasRecovering,
  recovered: ctx.recovered,
  position: ctx.streamPosition || null,
}));
sub.on('publication', (ctx) => out({ event: 'publication', data: ctx.data, offset: ctx.offset }));
sub.on('error', (ctx) => out({ event: 'sub_error', error: String(ctx.error && ctx.error.message) }));
sub.subscribe();
client.connect();

await step('presence');
const presence = await client.presence('class:1');
out({ event: 'presence', clients: Object.keys(presence.clients).length });
const history = await client.history('incidents', { limit: 10 });
out({ event: 'history', count: history.publications.length, offset: history.offset, epoch: history.epoch });

await step('done');
clearTimeout(watchdog);
client.disconnect();
process.exit(0);
