// Drives ComfyUI's real frontend in chromium: loads a UI-format workflow, queues it, watches the optimising node
// while it runs and reports what the page showed. Used by tests/test_browser.py.
//
//   node run_workflow.mjs <config.json>
//
// config: { url, chromium, workflow (UI JSON), widgets: {nodeId: {name: value}}, watchNode, outputNode,
//           frameNode, dragToFrame, clickFinish, screenshot, midScreenshot, timeoutMs }
// Prints one JSON line: { ok, pageErrors, consoleErrors, loaded, live: {...}, finish, final: {...}, frames,
//                         seconds }.
import { readFileSync } from "node:fs";
import { launchBrowser, nodeOverlaps, openApp, sliderPoints } from "./graph_checks.mjs";


const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const started = Date.now();
const pageErrors = [];
const consoleErrors = [];

const browser = await launchBrowser(cfg);
const result = { ok: false, pageErrors, consoleErrors };
try {
  const { page, extensionLoaded } = await openApp(browser, cfg, { width: 1600, height: 1000 }, pageErrors, consoleErrors);
  result.extensionLoaded = extensionLoaded;

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
  await page.waitForTimeout(1000);  // the estimate line asks the server
  await page.evaluate(`window.__sgsOverlaps = ${nodeOverlaps.toString()}`);
  result.loaded = await page.evaluate(({ watch, frameNode }) => {
    const widget = (id, name) => window.app.graph.getNodeById(id)?.widgets?.find((w) => w.name === name);
    const estimate = widget(watch, "sgs_estimate");
    const slider = widget(frameNode, "sgs_frame");
    return {
      overlaps: window.__sgsOverlaps().overlaps,
      estimate: estimate ? { value: estimate.value, hidden: Boolean(estimate.hidden) } : null,
      finishButton: Boolean(widget(watch, "sgs_finish")),
      frameSlider: slider ? { value: slider.value, max: slider.options?.max, disabled: Boolean(slider.disabled) } : null,
      frameNodeSize: [...(window.app.graph.getNodeById(frameNode)?.size ?? [])],
    };
  }, { watch: cfg.watchNode, frameNode: cfg.frameNode });
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
  if (cfg.clickFinish) {
    // "Finish now", as its button does it (the callback the canvas calls on a click).
    result.finish = await page.evaluate(async (watch) => {
      const node = window.app.graph.getNodeById(watch);
      const button = node.widgets.find((w) => w.name === "sgs_finish");
      await button.callback(button.value, window.app.canvas, node);
      const status = node.widgets.find((w) => w.name === "sgs_status").value;
      return { label: button.label, status };
    }, cfg.watchNode);
  }
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
      finishButton: Boolean(watched?.widgets?.find((w) => w.name === "sgs_finish")),
      frameImages: window.__sgs.executed[String(frameNode)]?.images ?? [],
    };
  }, { out: cfg.outputNode, watch: cfg.watchNode, frameNode: cfg.frameNode, workflow: cfg.workflow });
  await page.waitForTimeout(1500);  // the frames load; the frontend settles its previews
  result.afterRun = await page.evaluate((frameNode) => ({
    overlaps: window.__sgsOverlaps().overlaps,
    frameNodeSize: [...(window.app.graph.getNodeById(frameNode)?.size ?? [])],
  }), cfg.frameNode);

  // The frame scrubber: which frame the node shows, compared by pixels with every frame the node output.
  const shownFrame = () => page.evaluate(async (frameNode) => {
    const node = window.app.graph.getNodeById(frameNode);
    const slider = node.widgets.find((w) => w.name === "sgs_frame");
    const outputs = window.__sgs.executed[String(frameNode)]?.images ?? [];
    const size = 32;
    const pixels = (img) => {
      const c = document.createElement("canvas");
      c.width = size;
      c.height = size;
      const ctx = c.getContext("2d");
      ctx.drawImage(img, 0, 0, size, size);
      return ctx.getImageData(0, 0, size, size).data;
    };
    const load = (src) => new Promise((done) => {
      const img = new Image();
      img.onload = () => done(img);
      img.onerror = () => done(null);
      img.src = src;
    });
    const shown = node.imageIndex == null ? null : node.imgs?.[node.imageIndex];
    const state = { slider: slider.value, label: slider.label ?? slider.name, max: slider.options.max,
      disabled: Boolean(slider.disabled), imageIndex: node.imageIndex, imgs: node.imgs?.length ?? 0,
      shownLoaded: Boolean(shown?.complete && shown.naturalWidth > 0), differences: [] };
    if (!state.shownLoaded) return state;
    const a = pixels(shown);
    for (const item of outputs) {
      const q = new URLSearchParams({ filename: item.filename, subfolder: item.subfolder ?? "", type: item.type });
      const img = await load(window.app.api.apiURL(`/view?${q}`));
      if (!img) {
        state.differences.push(null);
        continue;
      }
      const b = pixels(img);
      let sum = 0;
      for (let i = 0; i < a.length; i += 4) sum += Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) + Math.abs(a[i + 2] - b[i + 2]);
      state.differences.push(sum / (size * size * 3));
    }
    return state;
  }, cfg.frameNode);
  if (cfg.frameNode != null) {
    result.frames = { afterRun: await shownFrame() };
    if (cfg.dragToFrame) {
      // Drag the slider with the mouse, from its left end (frame 1) to where frame `dragToFrame` lies.
      const slider = await page.evaluate(sliderPoints, { nodeId: cfg.frameNode, name: "sgs_frame",
                                                         at: [{ fraction: 0 }, { value: cfg.dragToFrame }] });
      const where = { from: [slider.points[0][0] + 2, slider.points[0][1]], to: slider.points[1] };
      await page.waitForTimeout(300);
      await page.mouse.move(...where.from);
      await page.mouse.down();
      for (let i = 1; i <= 10; i++) {
        await page.mouse.move(where.from[0] + (where.to[0] - where.from[0]) * i / 10, where.to[1]);
        await page.waitForTimeout(30);
      }
      await page.mouse.up();
      await page.waitForTimeout(500);
      result.frames.afterDrag = await shownFrame();
    }
  }
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
