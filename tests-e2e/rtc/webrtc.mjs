// Browser end-to-end test of the SFU (driven by server/tests/webrtc.rs, which starts `nexus`
// inside a private network namespace): one headless Chromium page publishes its fake camera
// and microphone over WHIP, two pages subscribe over WHEP, and each subscriber must decode
// video frames and receive audio. Then two pages join a consultation over /rtc and see each
// other. Prints one JSON line with the figures; exits 1 on failure.
//
// Environment: NEXUS_BASE (http://ADDR:PORT), ROOM, PUB_TOKEN, SUB_TOKEN, CONSULT_TOKEN_A,
// CONSULT_TOKEN_B (optional: skips the room-protocol part when unset), CLASS_ROOM,
// CLASS_TEACHER_TOKEN, CLASS_STUDENT_TOKEN (optional: the /class/{room} page — the student
// raises a hand, the teacher grants, each decodes the other), CHROMIUM.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.NEXUS_BASE;
const room = process.env.ROOM;
const need = Number(process.env.MIN_FRAMES || 30);
const profile = mkdtempSync(join(tmpdir(), "nexus-rtc-"));

const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    `--unsafely-treat-insecure-origin-as-secure=${base}`,
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
  ],
});

const result = { ok: false };
const deadline = (ms) => Date.now() + ms;
try {
  const open = async () => {
    const page = await browser.newPage();
    page.on("console", m => { if (m.type() === "error") console.error("[page]", m.text()); });
    await page.goto(`${base}/rtc/client`);
    return page;
  };
  const pub = await open();
  const t0 = Date.now();
  const session = await pub.evaluate(async ([room, token]) => {
    const s = await window.nexus.whipPublish(room, token);
    window.pub = s;
    return s.session;
  }, [room, process.env.PUB_TOKEN]);
  result.publisher = session;

  const subs = [await open(), await open()];
  for (const [i, page] of subs.entries()) {
    await page.evaluate(async ([room, token, publisher]) => {
      window.sub = await window.nexus.whepSubscribe(room, token, { publisher });
    }, [room, process.env.SUB_TOKEN, i === 1 ? session : null]);
  }

  const until = deadline(30000);
  let figures = [];
  for (;;) {
    figures = await Promise.all(subs.map(p => p.evaluate(() => window.nexus.stats(window.sub.pc))));
    if (figures.every(f => f.framesDecoded > need && f.audioPackets > 0) || Date.now() > until) break;
    await new Promise(r => setTimeout(r, 500));
  }
  result.firstFramesAfterMs = Date.now() - t0;
  // Let the jitter buffer settle, then read the latency figures.
  await new Promise(r => setTimeout(r, 2000));
  figures = await Promise.all(subs.map(p => p.evaluate(() => window.nexus.stats(window.sub.pc))));
  const pubStats = await pub.evaluate(() => window.nexus.stats(window.pub.pc));
  result.subscribers = figures;
  result.publisherStats = pubStats;
  const f = figures[0];
  // Glass-to-glass estimate: encode + send delay + network (RTT/2 twice, through the SFU) +
  // jitter buffer + decode. Capture and render are not visible in getStats.
  result.latencyEstimateMs = Math.round(
    (pubStats.encodeMs || 0) + (pubStats.packetSendDelayMs || 0) +
    (pubStats.rttMs || 0) / 2 + (f.rttMs || 0) / 2 + (f.jitterBufferMs || 0) + (f.decodeMs || 0));
  result.whepOk = figures.every(f => f.framesDecoded > need && f.audioPackets > 0);

  // WHIP session end: DELETE → 200.
  result.deleteStatus = await pub.evaluate(([token]) =>
    window.nexus.endSession(window.pub.location, token), [process.env.PUB_TOKEN]);

  // Room protocol: a consultation of two (doctor admits patient), both see each other.
  if (process.env.CONSULT_TOKEN_A) {
    const [a, b] = [await open(), await open()];
    await a.evaluate(async (t) => { window.room = await window.nexus.joinRoom(t); }, process.env.CONSULT_TOKEN_A);
    await b.evaluate(async (t) => { window.room = await window.nexus.joinRoom(t); }, process.env.CONSULT_TOKEN_B);
    const until2 = deadline(10000);
    let waiting;
    while (!(waiting = await a.evaluate(() => window.room.events.find(e => e.type === "participant_waiting")))) {
      if (Date.now() > until2) throw new Error("the doctor never saw the patient waiting");
      await new Promise(r => setTimeout(r, 200));
    }
    await a.evaluate((id) => window.room.send({ type: "admit", participant: id }), waiting.participant.id);
    const until3 = deadline(30000);
    let room;
    for (;;) {
      // The patient's peer connection exists once its `joined` (after the admit) arrives.
      room = await Promise.all([a, b].map(p => p.evaluate(() =>
        window.room.pc ? window.nexus.stats(window.room.pc) : { framesDecoded: 0, audioPackets: 0 })));
      if (room.every(f => f.framesDecoded > need && f.audioPackets > 0) || Date.now() > until3) break;
      await new Promise(r => setTimeout(r, 500));
    }
    result.consultation = room;
    result.roomOk = room.every(f => f.framesDecoded > need && f.audioPackets > 0);
  } else {
    result.roomOk = true;
  }
  // The class page (web/room.html): teacher and student join with #token=, the student
  // raises a hand, the teacher grants publish, and each decodes the other's video.
  if (process.env.CLASS_TEACHER_TOKEN) {
    const pageStats = p => p.evaluate(async () => {
      const out = { framesDecoded: 0, audioPackets: 0 };
      if (!window.nexusRoom.pc) return out;
      (await window.nexusRoom.pc.getStats()).forEach(r => {
        if (r.type === "inbound-rtp" && r.kind === "video") out.framesDecoded += r.framesDecoded || 0;
        if (r.type === "inbound-rtp" && r.kind === "audio") out.audioPackets += r.packetsReceived || 0;
      });
      return out;
    });
    const waitFor = async (what, ms, fn) => {
      const until = deadline(ms);
      for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > until) throw new Error(`class page: ${what}`);
        await new Promise(r => setTimeout(r, 300));
      }
    };
    const classPage = async (token) => {
      const page = await browser.newPage();
      page.on("console", m => { if (m.type() === "error") console.error("[class]", m.text()); });
      await page.goto(`${base}/class/${process.env.CLASS_ROOM}#token=${token}`);
      await page.click("#join");
      return page;
    };
    const teacher = await classPage(process.env.CLASS_TEACHER_TOKEN);
    await waitFor("teacher joined", 10000, () => teacher.evaluate(() => window.nexusRoom.me));
    const student = await classPage(process.env.CLASS_STUDENT_TOKEN);
    await waitFor("student sees the teacher", 30000, async () => (await pageStats(student)).framesDecoded > need);
    await waitFor("raise-hand button", 10000, () => student.isVisible("#hand"));
    await student.click("#hand");
    const grant = teacher.locator("#people button", { hasText: "Grant" });
    await grant.waitFor({ timeout: 10000 });
    await grant.click();
    await waitFor("teacher sees the student", 30000, async () => {
      const f = await pageStats(teacher);
      return f.framesDecoded > need && f.audioPackets > 0;
    });
    result.classPage = { teacher: await pageStats(teacher), student: await pageStats(student) };
    await student.click("#leave");
    result.classOk = true;
  } else {
    result.classOk = true;
  }
  result.ok = result.whepOk && result.roomOk && result.classOk && result.deleteStatus === 200;
} catch (e) {
  result.error = String(e && e.stack || e);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
