// Opens ComfyUI's real frontend in chromium and checks what a new user sees first: the Templates browser lists the
// pack's templates with a no-download example first, and that template, opened and queued unchanged with no model
// files, shows its image (timed); the node search finds every node of the pack by "stylegan"; every example
// workflow loads with no node overlapping another (one screenshot per example), shows the missing-model dialog
// where it declares files, and the examples that run offline run and still have no overlapping nodes afterwards.
// Used by tests/test_browser.py.
//
//   node examples.mjs <config.json>
//
// config: { url, chromium, timeoutMs, search: "stylegan", templates: { category, names },
//           examples: [{ name, workflow, screenshot, run }] }
// Prints one JSON line: { ok, pageErrors, consoleErrors, extensionLoaded, frontendVersion,
//                         templates: { listed, opened, seconds, images, error }, packNodes, search: {query, names},
//                         examples: [{ name, nodes, overlaps, missingModelsDialog, run: { error, images, overlaps },
//                                      screenshot }], seconds }.
import { readFileSync } from "node:fs";
import { fitGraph, launchBrowser, nodeOverlaps, openApp, outputImages, watchRuns } from "./graph_checks.mjs";

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
  result.frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  await page.evaluate(watchRuns);

  // The Templates browser as a new user opens it (Workflow > Browse Templates), first thing on a fresh server: the
  // pack's category, its templates in the order shown, and the first one opened and queued unchanged, timed from
  // the click on its card until its image is on the canvas.
  if (cfg.templates) {
    const t = { listed: [] };
    result.templates = t;
    try {
      await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
      await page.getByText(cfg.templates.category, { exact: true }).first().click({ timeout: 30_000 });
      await page.waitForTimeout(1500);  // the category's cards render
      t.listed = await page.evaluate((names) => {
        const dialog = document.querySelector("[role='dialog']");
        return [...(dialog?.querySelectorAll("*") ?? [])]
          .filter((e) => e.children.length === 0 && names.includes(e.textContent.trim()))
          .map((e) => e.textContent.trim());
      }, cfg.templates.names);
      t.opened = t.listed[0];
      const clicked = Date.now();
      await page.getByText(t.opened, { exact: true }).first().click();
      // The template is on the canvas (the app opened with ComfyUI's default graph, which has none of our nodes).
      await page.waitForFunction(() => window.app.graph.nodes.some((n) => n.type?.startsWith("SGS_"))
        && !document.querySelector("[role='dialog']"), null, { timeout: 30_000 });
      const run = await page.evaluate(() => window.__sgsRuns.start());
      await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.QueuePrompt"));
      await page.waitForFunction((run) => window.__sgsRuns.finished(run), run,
        { timeout: cfg.timeoutMs, polling: 100 });
      // The image is on the canvas: an output node shows a loaded picture.
      await page.waitForFunction(outputImages, null, { timeout: 30_000, polling: 100 }).catch(() => {});
      t.seconds = (Date.now() - clicked) / 1000;
      t.error = await page.evaluate((run) => window.__sgsRuns.error(run), run);
      t.images = await page.evaluate(outputImages);
    } catch (e) {
      t.error = String(e?.stack ?? e);
    }
    await page.keyboard.press("Escape");
  }

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
    await page.waitForTimeout(1000);  // widgets settle (DOM widgets, the estimate line); the dialogs open
    const report = await page.evaluate(nodeOverlaps);
    // ComfyUI's missing-model dialog (frontend 1.27: "Missing Models", one "folder / file" line per missing file).
    report.missingModelsDialog = await page.evaluate(() => [...document.querySelectorAll("[role='dialog']")]
      .map((d) => d.innerText).find((text) => /missing models/i.test(text)) ?? null);
    let run = null;
    if (example.run) {
      // Queued unchanged; what the graph shows once its outputs are in: nothing grew over a neighbour.
      await page.keyboard.press("Escape");
      const ticket = await page.evaluate(() => window.__sgsRuns.start());
      await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.QueuePrompt"));
      await page.waitForFunction((t) => window.__sgsRuns.finished(t), ticket,
        { timeout: cfg.timeoutMs, polling: 250 });
      // The frontend attaches an output's pictures to its node when it draws the node: the whole graph in view
      // first (a wide example's output nodes are off screen at the zoom it opens with).
      await page.evaluate(fitGraph);
      await page.waitForFunction(outputImages, null, { timeout: 30_000, polling: 100 }).catch(() => {});
      await page.waitForTimeout(1500);  // the frontend settles its previews (and our nodes their sizes)
      run = { error: await page.evaluate((t) => window.__sgsRuns.error(t), ticket),
        images: await page.evaluate(outputImages), overlaps: (await page.evaluate(nodeOverlaps)).overlaps };
    }
    await page.evaluate(fitGraph);
    await page.waitForTimeout(500);
    if (example.screenshot) await page.screenshot({ path: example.screenshot, type: "jpeg", quality: 80 });
    await page.keyboard.press("Escape");  // the next example opens its own dialog
    await page.waitForTimeout(300);
    result.examples.push({ name: example.name, ...report, run, screenshot: example.screenshot });
  }
  result.ok = true;
} catch (e) {
  result.error = String(e?.stack ?? e);
} finally {
  result.seconds = (Date.now() - started) / 1000;
  await browser.close();
  console.log(JSON.stringify(result));
}
