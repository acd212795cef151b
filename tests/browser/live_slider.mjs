// Direction Edit's live slider in ComfyUI's real frontend: loads a workflow, queues it once, then drags the node's
// strength slider with the mouse and reports what the node showed (one pixel signature per preview), the time of
// each preview (server render and round trip) and the server's queue and history before and after the drag (no
// prompt may be queued by dragging). Used by tests/test_browser.py.
//
//   node live_slider.mjs <config.json>
//
// config: { url, chromium, workflow (UI JSON), editNode, timeoutMs, screenshot, steps, stepPauseMs }
// Prints one JSON line: { ok, pageErrors, consoleErrors, extensionLoaded, beforeRun, ready, before, after, drag,
//                         previews, times, promptInputs, seconds }.
import { readFileSync } from "node:fs";
import { launchBrowser, openApp, sliderPoints, watchRuns } from "./graph_checks.mjs";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const started = Date.now();
const pageErrors = [];
const consoleErrors = [];
const browser = await launchBrowser(cfg);
const result = { ok: false, pageErrors, consoleErrors };

// The server's queue and history, as the frontend's own API reads them.
const serverState = (page) => page.evaluate(async () => {
  const api = window.app.api;
  const queue = await (await api.fetchApi("/queue")).json();
  const history = await (await api.fetchApi("/history?max_items=10000")).json();
  return { running: queue.queue_running.length, pending: queue.queue_pending.length,
    history: Object.keys(history).length };
});

// A small signature of the image the node shows now (16x16 RGB), or null when none is loaded.
const shown = (page, id) => page.evaluate((id) => {
  const node = window.app.graph.getNodeById(id);
  const img = node?.imgs?.[node.imageIndex ?? 0];
  if (!img?.complete || !img.naturalWidth) return null;
  const c = document.createElement("canvas");
  c.width = 16;
  c.height = 16;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0, 16, 16);
  const data = ctx.getImageData(0, 0, 16, 16).data;
  const out = [];
  for (let i = 0; i < data.length; i += 4) out.push(data[i], data[i + 1], data[i + 2]);
  return { pixels: out, width: img.naturalWidth, live: img === node.sgsLiveImage };
}, id);

try {
  const { page, extensionLoaded } = await openApp(browser, cfg, { width: 1600, height: 1000 }, pageErrors,
    consoleErrors);
  result.extensionLoaded = extensionLoaded;
  await page.evaluate(async (workflow) => { await window.app.loadGraphData(workflow); }, cfg.workflow);
  await page.evaluate(`(${watchRuns.toString()})()`);
  await page.waitForTimeout(500);
  const line = (id, name) => page.evaluate(({ id, name }) =>
    window.app.graph.getNodeById(id)?.widgets?.find((w) => w.name === name)?.value ?? null, { id, name });
  result.beforeRun = await line(cfg.editNode, "sgs_live");
  result.promptInputs = await page.evaluate(async (id) => {
    const p = await window.app.graphToPrompt();
    return Object.keys(p.output[String(id)]?.inputs ?? {});
  }, cfg.editNode);

  // One queued run: the server keeps the node's inputs for previews.
  const ticket = await page.evaluate(() => window.__sgsRuns.start());
  await page.evaluate(() => window.app.queuePrompt(0, 1));
  await page.waitForFunction((t) => window.__sgsRuns.finished(t), ticket, { timeout: cfg.timeoutMs, polling: 250 });
  result.runError = await page.evaluate((t) => window.__sgsRuns.error(t), ticket);
  await page.waitForFunction((id) => /ready/.test(window.app.graph.getNodeById(id)?.widgets?.find(
    (w) => w.name === "sgs_live")?.value ?? ""), cfg.editNode, { timeout: 30_000, polling: 100 });
  result.ready = await line(cfg.editNode, "sgs_live");
  result.component = await line(cfg.editNode, "sgs_component");
  await page.waitForTimeout(1500);  // the run's own image loads on the node
  const first = await shown(page, cfg.editNode);
  result.before = await serverState(page);

  // Drag the strength slider with the mouse from its middle (0) to near its right end.
  const slider = await page.evaluate(sliderPoints, { nodeId: cfg.editNode, name: "strength",
                                                    at: [null, { fraction: 0.95 }] });
  const where = { from: slider.points[0], to: slider.points[1], min: slider.min, max: slider.max,
                  type: slider.type, start: slider.value };
  result.drag = { ...where };
  const signatures = [];
  const keep = (s) => {
    if (s && (!signatures.length || signatures.at(-1).pixels.join() !== s.pixels.join())) signatures.push(s);
  };
  keep(first);
  await page.mouse.move(...where.from);
  await page.mouse.down();
  const steps = cfg.steps ?? 12;
  for (let i = 1; i <= steps; i++) {
    await page.mouse.move(where.from[0] + (where.to[0] - where.from[0]) * i / steps, where.to[1]);
    await page.waitForTimeout(cfg.stepPauseMs ?? 150);
    keep(await shown(page, cfg.editNode));
  }
  await page.mouse.up();
  // The newest values' preview arrives (latest wins), then nothing is left in flight.
  await page.waitForFunction((id) => {
    const node = window.app.graph.getNodeById(id);
    return !node.sgsLiveBusy && node.sgsLiveImage?.complete;
  }, cfg.editNode, { timeout: 60_000, polling: 100 });
  await page.waitForTimeout(300);
  keep(await shown(page, cfg.editNode));
  result.drag.end = await page.evaluate((id) =>
    window.app.graph.getNodeById(id).widgets.find((w) => w.name === "strength").value, cfg.editNode);
  result.times = await page.evaluate((id) => window.app.graph.getNodeById(id).sgsLiveTimes ?? [], cfg.editNode);
  result.liveLine = await line(cfg.editNode, "sgs_live");
  const diff = (a, b) => a.pixels.reduce((sum, v, i) => sum + Math.abs(v - b.pixels[i]), 0) / a.pixels.length;
  result.previews = signatures.map((s, i) => ({ width: s.width, live: s.live,
    diffFromFirst: i ? diff(s, signatures[0]) : 0 }));
  await page.waitForTimeout(1000);  // a prompt queued by mistake would show up by now
  result.after = await serverState(page);
  if (cfg.screenshot) await page.screenshot({ path: cfg.screenshot });
  result.ok = true;
} catch (e) {
  result.error = String(e?.stack ?? e);
} finally {
  result.seconds = (Date.now() - started) / 1000;
  await browser.close();
  console.log(JSON.stringify(result));
}
