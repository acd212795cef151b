// Drives ComfyUI's real frontend in chromium: loads a UI-format workflow, queues it, watches the optimising node
// while it runs and reports what the page showed. Used by tests/test_browser.py.
//
//   node run_workflow.mjs <config.json>
//
// config: { url, chromium, workflow (UI JSON), widgets: {nodeId: {name: value}}, watchNode, outputNode,
//           screenshot, midScreenshot, timeoutMs }
// Prints one JSON line: { ok, pageErrors, consoleErrors, live: {...}, final: {...}, seconds }.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const started = Date.now();
const pageErrors = [];
const consoleErrors = [];

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const result = { ok: false, pageErrors, consoleErrors };
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  page.on("pageerror", (e) => pageErrors.push(String(e?.stack ?? e)));
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(m.text());
  });
  await page.goto(cfg.url, { waitUntil: "load", timeout: cfg.timeoutMs });
  await page.waitForFunction(() => window.app?.graph && window.app?.extensionManager !== undefined, null,
    { timeout: cfg.timeoutMs });
  result.extensionLoaded = await page.evaluate(() =>
    (window.app.extensions ?? []).some((e) => e.name?.startsWith("StyleGANStudio")));

  await page.evaluate(async ({ workflow, widgets }) => {
    await window.app.loadGraphData(workflow);
    for (const [id, values] of Object.entries(widgets ?? {})) {
      const node = window.app.graph.getNodeById(Number(id));
      for (const [name, value] of Object.entries(values)) {
        const w = node.widgets.find((x) => x.name === name);
        if (!w) throw new Error(`node ${id} has no widget ${name}`);
        w.value = value;
      }
    }
  }, { workflow: cfg.workflow, widgets: cfg.widgets });
  // Nothing display-only may leak into the prompt the frontend builds.
  result.promptWidgets = await page.evaluate(async (watch) => {
    const p = await window.app.graphToPrompt();
    return Object.keys(p.output[String(watch)]?.inputs ?? {});
  }, cfg.watchNode);

  // Record what the server reports over the frontend's own websocket connection.
  result.hasApi = await page.evaluate(() => {
    const api = window.app.api ?? window.comfyAPI?.api?.api;
    window.__sgs = { executed: {}, done: false, error: null };
    api.addEventListener("executed", (e) => {
      window.__sgs.executed[String(e.detail.display_node ?? e.detail.node)] = e.detail.output;
    });
    api.addEventListener("execution_success", () => { window.__sgs.done = true; });
    api.addEventListener("execution_error", (e) => { window.__sgs.error = e.detail.exception_message; });
    return Boolean(api);
  });
  await page.evaluate(() => window.app.queuePrompt(0, 1));

  // While it runs: the watched node must show a live image and (our widget) its step text.
  const live = await page.waitForFunction(({ watch, needStatus }) => {
    const node = window.app.graph.getNodeById(watch);
    const imgs = node?.imgs?.length ?? 0;
    const preview = window.app.nodePreviewImages?.[String(watch)]?.length ?? 0;
    const status = node?.widgets?.find((w) => w.name === "sgs_status")?.value ?? "";
    const step = /step (\d+)/.exec(String(status));
    if ((imgs || preview) && (!needStatus || (step && Number(step[1]) >= 3))) return { imgs, preview, status };
    return false;
  }, { watch: cfg.watchNode, needStatus: cfg.requireStatus ?? true }, { timeout: cfg.timeoutMs, polling: 100 });
  result.live = await live.jsonValue();
  if (cfg.midScreenshot) {
    await page.evaluate((watch) => {
      const node = window.app.graph.getNodeById(watch);
      const canvas = window.app.canvas;
      canvas.ds.scale = 1.1;  // readable widgets (below ~0.6 the canvas draws nodes without text)
      canvas.centerOnNode?.(node);
      canvas.setDirty(true, true);
    }, cfg.watchNode);
    await page.waitForTimeout(300);
    await page.screenshot({ path: cfg.midScreenshot });
  }

  // Completion: the queue empties and the output node has its images.
  await page.waitForFunction(() => window.__sgs.done || window.__sgs.error, null,
    { timeout: cfg.timeoutMs, polling: 250 });
  result.final = await page.evaluate(({ out, watch, frameNode, workflow }) => {
    const saved = window.app.graph.serialize();
    const count = (graph, id) => graph.nodes.find((n) => n.id === id)?.widgets_values?.length;
    const frames = window.app.graph.getNodeById(frameNode)?.widgets?.find((w) => w.name === "sgs_frame");
    const watched = window.app.graph.getNodeById(watch);
    return {
      error: window.__sgs.error,
      images: window.__sgs.executed[String(out)]?.images?.length ?? 0,
      // display-only widgets must not add values to a saved workflow
      savedWidgets: [watch, frameNode].map((id) => [count(workflow, id), count(saved, id)]),
      frameScrubberMax: frames?.options?.max ?? null,
      status: watched?.widgets?.find((w) => w.name === "sgs_status")?.value ?? null,
      stopButton: Boolean(watched?.widgets?.find((w) => w.name === "sgs_stop")),
    };
  }, { out: cfg.outputNode, watch: cfg.watchNode, frameNode: cfg.frameNode, workflow: cfg.workflow });
  if (cfg.screenshot) {
    await page.evaluate((out) => {
      const canvas = window.app.canvas;
      canvas.ds.scale = 0.9;
      canvas.centerOnNode?.(window.app.graph.getNodeById(out));
      canvas.setDirty(true, true);
    }, cfg.outputNode);
    await page.waitForTimeout(500);
    await page.screenshot({ path: cfg.screenshot });
  }
  result.ok = true;
} catch (e) {
  result.error = String(e?.stack ?? e);
} finally {
  result.seconds = (Date.now() - started) / 1000;
  await browser.close();
  console.log(JSON.stringify(result));
}
