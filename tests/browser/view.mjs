// Drives `arduino view`'s page in headless Chromium (Debian's /usr/bin/chromium, through
// playwright-core; no browser is downloaded). Started by tests/view.rs and scripts/screenshot.sh.
//
//   node view.mjs check URL NODE,NODE,...   steps, each printed as it is seen:
//       drawn    every named node is drawn
//       counted  (after the caller sent "1" to buzzer) the sidebar shows it, buzzer counted it
//       down     (after the caller stopped iopin) iopin is drawn down
//   node view.mjs measure URL SECONDS        one JSON line: frame times and event lag
//   node view.mjs shot URL FILE MILLISECONDS a screenshot after that long
//
// Every wait has a deadline; a step that does not come prints `fail: ...` and exits 1.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const PATIENCE = 15000;
const [mode, url, ...rest] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "arduino-view-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 560 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

function say(line) {
  process.stdout.write(line + "\n");
}

async function done(code) {
  await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(code);
}

async function step(name, wait) {
  try {
    await wait();
    say(name);
  } catch (error) {
    say(`fail: ${name}: ${String(error.message ?? error).split("\n")[0]}`);
    await done(1);
  }
}

try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.on("pageerror", (error) => say(`page error: ${error.message}`));
  await page.goto(url);

  if (mode === "check") {
    const names = rest[0].split(",");
    await step("drawn", async () => {
      for (const name of names) {
        await page.locator(`g.node[data-node="${name}"] text.name`).waitFor({ timeout: PATIENCE });
      }
    });
    await step("counted", async () => {
      await page.locator(`#rows li[data-node="buzzer"][data-event="message"]`).first().waitFor({ timeout: PATIENCE });
      await page.waitForFunction(
        () => Number(document.querySelector(`g.node[data-node="buzzer"] [data-count="messages"]`)?.textContent) >= 1,
        null, { timeout: PATIENCE });
    });
    await step("down", async () => {
      await page.locator(`g.node[data-node="iopin"][data-state="down"]`).waitFor({ timeout: PATIENCE });
    });
  } else if (mode === "measure") {
    const seconds = Number(rest[0] ?? 5);
    await page.waitForFunction(() => window.arduinoView?.stats.handled > 1000, null, { timeout: PATIENCE });
    await page.evaluate(() => { const s = window.arduinoView.stats; s.frames.length = 0; s.lagMs.length = 0; s.handled0 = s.handled; s.t0 = performance.now(); });
    await page.waitForTimeout(seconds * 1000);
    const result = await page.evaluate(() => {
      const s = window.arduinoView.stats;
      const frames = [...s.frames].sort((a, b) => a - b);
      const at = (q) => frames[Math.min(frames.length - 1, Math.floor(q * frames.length))];
      const lags = [...s.lagMs].sort((a, b) => a - b);
      const seconds = (performance.now() - s.t0) / 1000;
      return {
        seconds: +seconds.toFixed(1),
        events_per_second: Math.round((s.handled - s.handled0) / seconds),
        fps: +(frames.length / seconds).toFixed(1),
        frame_ms_p50: +at(0.5).toFixed(1),
        frame_ms_p95: +at(0.95).toFixed(1),
        frame_ms_max: +frames[frames.length - 1].toFixed(1),
        lag_ms_median: lags.length ? lags[Math.floor(lags.length / 2)] : null,
        lag_ms_max: lags.length ? lags[lags.length - 1] : null,
        sidebar_rows: document.querySelectorAll("#rows li").length,
        missed: Number(document.getElementById("missed").textContent),
      };
    });
    say(JSON.stringify(result));
  } else if (mode === "shot") {
    const [file, wait] = rest;
    await page.waitForFunction(() => window.arduinoView?.nodes.size > 0, null, { timeout: PATIENCE });
    await page.waitForTimeout(Number(wait ?? 3000));
    await page.screenshot({ path: file });
    say(`wrote ${file}`);
  } else {
    say(`fail: unknown mode ${mode}`);
    await done(2);
  }
  await done(0);
} catch (error) {
  say(`fail: ${String(error.message ?? error).split("\n")[0]}`);
  await done(1);
}
