// Browser people for scripted end-to-end tests (driven by server/tests/webrtc.rs): one headless
// Chromium (fake camera and microphone) whose pages are people using the consultation and
// class page (web/room.html) the way a user would — sign in with e-mail and password, press
// Join, click Admit / Raise hand / Grant — while the Rust test drives the API and checks the
// store and the bus. One command per stdin line, one JSON answer per stdout line:
//
//   {"op": "open", "who": "doctor", "url": "http://…/consult/consult-…"}      → {}
//   {"op": "sign_in", "who": "doctor", "email": "…", "password": "…"}        → {} (then Join)
//   {"op": "wait_state", "who": "…", "what": "waiting"|"joined"|"hand_raised:<id>"|"left", "ms": 10000}
//                                                       → {"me", "status", "waiting", "left": reason}
//   {"op": "click", "who": "…", "selector": "#hand", "text": "Grant"?}        → {}
//   {"op": "wait_media", "who": ["doctor", "patient"], "from": {"doctor": ["<participant>"]}?,
//    "min_frames": 30, "audio": true, "ms": 30000}       → {"doctor": {framesDecoded, audioPackets, …}, …}
//   {"op": "close", "who": "…"}                        → {} (the page and its call are gone)
//   {"op": "quit"}                                       → {} and exit
//
// A failed command answers {"error": "…"} (the test fails with it); nothing is retried here.
// Environment: ORIGINS (comma-separated http origins treated as secure, so getUserMedia
// works without TLS), CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const profile = mkdtempSync(join(tmpdir(), "nexus-people-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    `--unsafely-treat-insecure-origin-as-secure=${process.env.ORIGINS || ""}`,
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
  ],
});
const pages = new Map();
const page = (who) => {
  const p = pages.get(who);
  if (!p) throw new Error(`nobody called ${who} has a page open`);
  return p;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, ms, fn) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(250);
  }
}

// What a person's page shows: the room state and, per remote participant, decoded frames.
const view = (who) => page(who).evaluate(async () => {
  const s = window.nexusRoom;
  const out = {
    me: s.me, status: document.getElementById("status").textContent,
    left: (s.events.find((e) => e.type === "leave") || {}).reason || null,
    waiting: [...s.waiting.keys()], people: [...s.people.values()],
    framesDecoded: 0, audioPackets: 0, videoFrom: {},
  };
  if (!s.pc) return out;
  // Map inbound tracks to their publisher (the SFU names each stream after it).
  const owner = {};
  for (const t of s.pc.getTransceivers()) {
    const v = document.querySelectorAll(".tile video");
    for (const el of v) {
      if (el.srcObject && t.receiver.track && el.srcObject.getTracks().includes(t.receiver.track)) {
        owner[t.receiver.track.id] = el.parentElement.id.replace(/^tile-/, "");
      }
    }
  }
  (await s.pc.getStats()).forEach((r) => {
    if (r.type !== "inbound-rtp") return;
    if (r.kind === "video") {
      out.framesDecoded += r.framesDecoded || 0;
      const from = owner[r.trackIdentifier] || "?";
      out.videoFrom[from] = (out.videoFrom[from] || 0) + (r.framesDecoded || 0);
    }
    if (r.kind === "audio") out.audioPackets += r.packetsReceived || 0;
  });
  return out;
});

const ops = {
  async open({ who, url }) {
    const p = await browser.newPage();
    p.on("console", (m) => { if (m.type() === "error") console.error(`[${who}]`, m.text()); });
    await p.goto(url);
    pages.set(who, p);
    return {};
  },
  async sign_in({ who, email, password }) {
    const p = page(who);
    await p.fill("#email", email);
    await p.fill("#password", password);
    await p.click("#login-form button[type=submit]");
    await p.locator("#join").waitFor({ state: "visible", timeout: 10000 });
    await p.click("#join");
    return {};
  },
  async wait_state({ who, what, ms }) {
    const [kind, arg] = what.split(":");
    const v = await until(`${who}: ${what}`, ms || 10000, async () => {
      const v = await view(who);
      const ok = {
        waiting: () => v.status.startsWith("in the waiting room"),
        joined: () => v.status.startsWith("in the ") || v.status.startsWith("media "),
        someone_waiting: () => v.waiting.length > 0,
        hand_raised: () => v.people.some((p) => p.id === arg && p.hand_raised),
        left: () => v.left !== null,
      }[kind];
      if (!ok) throw new Error(`unknown state ${what}`);
      return ok() && v;
    });
    return { me: v.me, status: v.status, waiting: v.waiting, left: v.left };
  },
  async click({ who, selector, text }) {
    const l = page(who).locator(selector, text ? { hasText: text } : {});
    await l.first().waitFor({ state: "visible", timeout: 10000 });
    await l.first().click();
    return {};
  },
  async close({ who }) {
    await page(who).close();
    pages.delete(who);
    return {};
  },
  async wait_media({ who, from, min_frames, audio, ms }) {
    const need = min_frames ?? 30;
    const good = (name, v) => {
      const senders = (from && from[name]) || null;
      const video = senders
        ? senders.every((id) => (v.videoFrom[id] || 0) > need)
        : v.framesDecoded > need;
      return video && (!audio || v.audioPackets > 0);
    };
    let last = {};
    try {
      await until(`decoded media on ${who.join(", ")}`, ms || 30000, async () => {
        last = Object.fromEntries(await Promise.all(who.map(async (w) => [w, await view(w)])));
        return who.every((w) => good(w, last[w]));
      });
    } catch (e) {
      throw new Error(`${e.message}; last figures ${JSON.stringify(last)}`);
    }
    return Object.fromEntries(who.map((w) => [w, {
      framesDecoded: last[w].framesDecoded, audioPackets: last[w].audioPackets,
      videoFrom: last[w].videoFrom,
    }]));
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    console.log(JSON.stringify({ error: `not JSON: ${line}` }));
    continue;
  }
  if (cmd.op === "quit") break;
  try {
    const f = ops[cmd.op];
    if (!f) throw new Error(`unknown op ${cmd.op}`);
    console.log(JSON.stringify(await f(cmd)));
  } catch (e) {
    console.log(JSON.stringify({ error: String((e && e.stack) || e) }));
  }
}
await browser.close();
rmSync(profile, { recursive: true, force: true });
console.log("{}");
