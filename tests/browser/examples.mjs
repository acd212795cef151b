// Opens ComfyUI's real frontend in chromium and checks what a new user sees first: the node search finds every
// node of the pack by "stylegan", and every example workflow loads with no node overlapping another (one
// screenshot per example). Used by tests/test_browser.py.
//
//   node examples.mjs <config.json>
//
// config: { url, chromium, timeoutMs, search: "stylegan", examples: [{ name, workflow, screenshot }] }
// Prints one JSON line: { ok, pageErrors, consoleErrors, extensionLoaded, packNodes, search: {query, names},
//                         examples: [{ name, nodes, overlaps, screenshot }], seconds }.
import { readFileSync } from "node:fs";
import { fitGraph, launchBrowser, nodeOverlaps, openApp } from "./graph_checks.mjs";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const started = Date.now();
const pageErrors = [];
const consoleErrors = [];

const browser = await launchBrowser(cfg);
const result = { ok: false, pageErrors, consoleErrors, examples: [] };
try {
  const { page, extensionLoaded } = await openApp(browser, cfg, { width: 1280, height: 800 }, pageErrors, consoleErrors);
  result.extensionLoaded = extensionLoaded;
  // Screenshots of a whole graph: full detail at any zoom, no minimap or canvas statistics over it.
  await page.evaluate(async () => {
    const settings = window.app.extensionManager?.setting;
    for (const [id, value] of [["LiteGraph.Canvas.MinFontSizeForLOD", 0], ["Comfy.Minimap.Visible", false],
      ["Comfy.Graph.CanvasInfo", false]]) {
      try {
        await settings?.set(id, value);
      } catch {
        // a frontend without this setting
      }
    }
  });
  result.packNodes = await page.evaluate(async () => {
    const info = await (await window.app.api.fetchApi("/object_info")).json();
    return Object.entries(info).filter(([id]) => id.startsWith("SGS_")).map(([, d]) => d.display_name);
  });

  // The node search box, as a user opens it: double-click on an empty canvas and type.
  if (cfg.search) {
    await page.evaluate(() => window.app.graph.clear());
    await page.waitForTimeout(300);
    const box = await page.locator("canvas#graph-canvas").boundingBox();
    await page.mouse.dblclick(box.x + box.width / 2, box.y + box.height / 2);
    // The search box focuses its input (its markup differs between frontend versions).
    await page.waitForFunction(() => document.activeElement?.tagName === "INPUT", null, { timeout: 20_000 });
    await page.keyboard.type(cfg.search, { delay: 30 });
    await page.waitForTimeout(1500);  // the box searches 100 ms after the last key; results render after
    const names = await page.evaluate(() => {
      // One entry per listed node: its display name (the option's first line; then category, badges, ...).
      const options = [...document.querySelectorAll("[role='option']")];
      return options.map((o) => {
        const first = o.querySelector(".option-display-name")?.firstElementChild ?? o;
        const text = first.textContent.replace(/\s+/g, " ").trim();
        return /^(.*?\(StyleGAN\))/.exec(text)?.[1] ?? text;
      });
    });
    result.search = { query: cfg.search, names };
    await page.keyboard.press("Escape");
    await page.waitForTimeout(300);
  }

  // Nodes added from the menu: their seeds start "fixed" (ComfyUI's default would randomise them on every queue).
  result.newNodeSeeds = await page.evaluate(() => {
    const LiteGraph = window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph;
    window.app.graph.clear();
    const seeds = {};
    for (const type of ["SGS_DemoGenerator", "SGS_SampleLatent", "SGS_InvertImage"]) {
      const node = LiteGraph.createNode(type);
      window.app.graph.add(node);
      seeds[type] = node.widgets.filter((w) => String(w.name).includes("control_after_generate")).map((w) => w.value);
    }
    window.app.graph.clear();
    return seeds;
  });

  for (const example of cfg.examples ?? []) {
    await page.evaluate(async ({ workflow, name }) => {
      await window.app.loadGraphData(workflow, true, true, name);
    }, { workflow: example.workflow, name: example.name });
    await page.waitForTimeout(1000);  // widgets settle (DOM widgets, the estimate line)
    const report = await page.evaluate(nodeOverlaps);
    await page.evaluate(fitGraph);
    await page.waitForTimeout(500);
    if (example.screenshot) await page.screenshot({ path: example.screenshot, type: "jpeg", quality: 80 });
    result.examples.push({ name: example.name, ...report, screenshot: example.screenshot });
  }
  result.ok = true;
} catch (e) {
  result.error = String(e?.stack ?? e);
} finally {
  result.seconds = (Date.now() - started) / 1000;
  await browser.close();
  console.log(JSON.stringify(result));
}
