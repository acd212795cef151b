// Shared by the browser scripts: launching chromium and opening the app (run in Node), and functions run inside
// the page (page.evaluate serialises those: each must be self-contained).
import { chromium } from "playwright-core";

// Every pair of nodes whose boxes (title bar included) overlap by more than a pixel, read from app.graph.
export function nodeOverlaps() {
  const title = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  const boxes = window.app.graph.nodes.map((n) => {
    const collapsed = Boolean(n.flags?.collapsed);
    const w = collapsed ? (n._collapsed_width ?? n.size[0]) : n.size[0];
    const h = collapsed ? 0 : n.size[1];
    return { id: n.id, type: n.type, title: n.title, x: n.pos[0], y: n.pos[1] - title, w, h: h + title };
  });
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i];
      const b = boxes[j];
      const dx = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
      const dy = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
      if (dx > 1 && dy > 1) overlaps.push(`${a.title} (#${a.id}) and ${b.title} (#${b.id}) by ${Math.round(dx)}x${Math.round(dy)} px`);
    }
  }
  return { nodes: boxes, overlaps };
}

// Screen points along a slider widget of node `nodeId` (the node centred at scale 1 first): one per entry of
// `at`, each {value: v} or {fraction: f} of the slider's range (null: its current value). With the slider's range,
// type and value, for a mouse drag from one point to another.
export function sliderPoints({ nodeId, name, at }) {
  const node = window.app.graph.getNodeById(nodeId);
  const canvas = window.app.canvas;
  canvas.ds.scale = 1;
  canvas.centerOnNode?.(node);
  canvas.setDirty(true, true);
  canvas.draw(true, true);
  const slider = node.widgets.find((w) => w.name === name);
  const height = window.LiteGraph?.NODE_WIDGET_HEIGHT ?? 20;
  const y = node.pos[1] + (slider.y ?? slider.last_y ?? 0) + height / 2;
  const margin = 15;
  const width = node.size[0] - 2 * margin;
  const { min, max } = slider.options;
  const rect = canvas.canvas.getBoundingClientRect();
  const points = at.map((p) => {
    const v = p == null ? slider.value : p.value ?? min + p.fraction * (max - min);
    const [cx, cy] = canvas.ds.convertOffsetToCanvas([node.pos[0] + margin + width * (v - min) / Math.max(max - min, 1e-9), y]);
    return [rect.left + cx, rect.top + cy];
  });
  return { points, min, max, type: slider.type, value: slider.value };
}

// Show the whole graph (nodes and groups) on the canvas.
export function fitGraph() {
  const title = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  const canvas = window.app.canvas;
  const rects = window.app.graph.nodes.map((n) => [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title]);
  for (const g of window.app.graph.groups ?? window.app.graph._groups ?? []) {
    const r = g._bounding ?? g.boundingRect;
    if (r) rects.push([r[0], r[1], r[2], r[3]]);
  }
  if (!rects.length) return;
  const x0 = Math.min(...rects.map((r) => r[0]));
  const y0 = Math.min(...rects.map((r) => r[1]));
  const x1 = Math.max(...rects.map((r) => r[0] + r[2]));
  const y1 = Math.max(...rects.map((r) => r[1] + r[3]));
  const el = canvas.canvas;
  const width = el.clientWidth || el.width;
  const height = el.clientHeight || el.height;
  const margin = 40;
  const scale = Math.min((width - 2 * margin) / (x1 - x0), (height - 2 * margin) / (y1 - y0), 1.2);
  canvas.ds.scale = scale;
  canvas.ds.offset[0] = (width / scale - (x1 - x0)) / 2 - x0;
  canvas.ds.offset[1] = (height / scale - (y1 - y0)) / 2 - y0;
  canvas.setDirty(true, true);
}

// Runs of queued prompts, seen through the frontend's own websocket connection: `__sgsRuns.start()` gives a ticket
// before queueing, `finished(ticket)` says whether a prompt ended since, `error(ticket)` its error (null: success).
export function watchRuns() {
  const events = [];
  const api = window.app.api;
  api.addEventListener("execution_success", () => events.push(null));
  api.addEventListener("execution_error", (e) => events.push(String(e.detail?.exception_message ?? "error")));
  api.addEventListener("execution_interrupted", () => events.push("interrupted"));
  window.__sgsRuns = {
    start: () => events.length,
    finished: (ticket) => events.length > ticket,
    error: (ticket) => events[ticket] ?? null,
  };
}

// How many pictures the graph's output nodes show, loaded (0 until an image is on the canvas).
export function outputImages() {
  const outputs = new Set(["SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG"]);
  let shown = 0;
  for (const node of window.app.graph.nodes) {
    if (outputs.has(node.type)) shown += (node.imgs ?? []).filter((img) => img?.complete && img.naturalWidth > 0).length;
  }
  return shown;
}

// The browser, launched headless from the configured chromium.
export function launchBrowser(cfg) {
  return chromium.launch({
    executablePath: cfg.chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
}

// A page with ComfyUI's app loaded (page errors and console errors collected into the given arrays); returns
// the page and whether the pack's web extension registered.
export async function openApp(browser, cfg, viewport, pageErrors, consoleErrors) {
  const page = await browser.newPage({ viewport });
  page.on("pageerror", (e) => pageErrors.push(String(e?.stack ?? e)));
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(m.text());
  });
  await page.goto(cfg.url, { waitUntil: "load", timeout: cfg.timeoutMs });
  await page.waitForFunction(() => window.app?.graph && window.app?.extensionManager !== undefined, null,
    { timeout: cfg.timeoutMs });
  const extensionLoaded = await page.evaluate(() =>
    (window.app.extensions ?? []).some((e) => e.name?.startsWith("StyleGANStudio")));
  return { page, extensionLoaded };
}
