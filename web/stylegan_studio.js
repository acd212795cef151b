// StyleGAN Studio frontend extension.
//  - Every SGS_ node shows its text report (model architecture and licence, inversion quality, saved files).
//  - Optimising nodes (inversion, CLIP edits, global directions, mapper training) show the estimated time of their
//    preset before a run (the pack's `/stylegan_studio/estimate` route; hidden when the server has none), a live
//    status line (step, loss terms, ETA) fed by the pack's `stylegan_studio.progress` event, a Stop button that
//    interrupts only the run they belong to, and a "Finish now" button that ends the optimisation after its
//    current step and lets the graph complete with the result so far (`/stylegan_studio/finish`). The live image
//    itself comes through ComfyUI's own progress/preview messages.
//  - Image-making nodes get a frame scrubber over their output batch: "frame N" (1-based, like the frontend's own
//    "N/M" counter) is the frame the node shows. While a batch renders the node shows the server's live previews.
//  - Nodes do not grow over their neighbours after a run: the image preview fits in the space the node has and the
//    empty canvas below it; a node grows further only when its widgets themselves (a new report) do not fit.
//  - A seed of a newly added node starts as "fixed" (ComfyUI's default, "randomize", would change the seed on every
//    queue, so saved latents and weight deltas stop matching their generator); saved workflows keep their choice.
//  - The Templates browser lists this pack's example workflows by name, so the first one is
//    `01_first_image_no_download` (an image within seconds, nothing downloaded). The server lists a pack's templates
//    in its folder scan's order (the filesystem's: on ext4 a hash of the names) and frontends 1.27 and 1.58 show
//    that order unchanged; only this pack's own list is sorted, other packs' lists stay as the server sent them.
//  - Direction Edit has a live preview: after one queued run (the server keeps that run's generator, latent and
//    directions under a token it sends with the node's output), dragging a strength slider (or changing the index
//    or layer range) POSTs the values to the pack's `/stylegan_studio/live_preview` route (debounced, latest wins: at
//    most one request in flight, then the newest values) and shows the small render it returns on the node, without
//    queueing a prompt. Before the first run the node says "run once to enable live preview". The slider spans the
//    method's usual range after a run (`Directions.strength_range` in core: GANSpace ±3, SeFa ±10); the component's
//    name shows under the sliders.
// Which nodes optimise, make frames or have a live preview is declared once, in the pack's node registry (nodes/registry.py), and read
// from the pack's `/stylegan_studio/nodes` route. All these widgets are display-only: never serialised into
// prompts or saved workflows.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODE_PREFIX = "SGS_";
const NODES_ROUTE = "/stylegan_studio/nodes";
const ESTIMATE_ROUTE = "/stylegan_studio/estimate";
const FINISH_ROUTE = "/stylegan_studio/finish";
// Ids of the optimising and frame-making nodes, read once in `init` (before any node type is registered).
let registry = { optimising: [], frames: [], live: [] };

// This pack's folder under custom_nodes: the extension is served at /extensions/<folder>/stylegan_studio.js, and
// the server's /workflow_templates answer keys each pack's templates by the same folder name.
const PACK_FOLDER = decodeURIComponent(new URL(import.meta.url).pathname.split("/").at(-2) ?? "");

// The frontend reads the templates through `api.getWorkflowTemplates()` (frontends 1.27 to 1.58): this pack's list
// comes back sorted by name. Patched when this module loads, before the Templates browser can first be opened.
function sortOwnTemplates() {
  const read = api.getWorkflowTemplates;
  if (typeof read !== "function" || read.sgsSorted) return;
  const sorted = async function (...args) {
    const templates = await read.apply(this, args);
    const ours = templates?.[PACK_FOLDER];
    if (Array.isArray(ours)) templates[PACK_FOLDER] = [...ours].sort();
    return templates;
  };
  sorted.sgsSorted = true;
  api.getWorkflowTemplates = sorted;
}
sortOwnTemplates();

async function loadRegistry() {
  try {
    const response = await api.fetchApi(NODES_ROUTE);
    if (!response.ok) throw new Error(`${NODES_ROUTE}: HTTP ${response.status}`);
    const info = await response.json();
    registry = { optimising: info.optimising ?? [], frames: info.frames ?? [], live: info.live ?? [] };
  } catch (error) {
    // Without the lists the nodes still work; only the status line, Stop button and frame scrubber are missing.
    console.warn("StyleGAN Studio: could not read the node registry", error);
  }
}
const PROGRESS_EVENT = "stylegan_studio.progress";
// ComfyUI's end-of-prompt events; each carries the prompt id.
const END_EVENTS = { execution_success: "done", execution_interrupted: "stopped", execution_error: "failed" };
const REPORT_WIDGET = "sgs_report";
const STATUS_WIDGET = "sgs_status";
const STOP_WIDGET = "sgs_stop";
const FINISH_WIDGET = "sgs_finish";
const ESTIMATE_WIDGET = "sgs_estimate";
const FRAME_WIDGET = "sgs_frame";
// The frontend's own image-preview widget (drawn from node.imgs / node.imageIndex): never a reason to grow a node.
const PREVIEW_WIDGET_PREFIX = "$$";
const NEW_NODE_IMAGE_ROOM = 256;  // px of image under the widgets of a newly added image-showing node


function displayOnly(widget) {
  widget.serialize = false;  // not in a saved workflow's widgets_values
  widget.options = { ...(widget.options ?? {}), serialize: false };  // not in the prompt
  return widget;
}

// Grow the node only as far as its widgets need, leaving out the image preview (it fits in whatever space is left):
// a node never grows over its neighbours because it now shows an image.
function resize(node) {
  requestAnimationFrame(() => {
    const widgets = node.widgets;
    if (widgets) node.widgets = widgets.filter((w) => !String(w.name ?? "").startsWith(PREVIEW_WIDGET_PREFIX));
    let w, h;
    try {
      [w, h] = node.computeSize();
    } finally {
      if (widgets) node.widgets = widgets;
    }
    if (w > node.size[0] || h > node.size[1]) node.setSize([Math.max(node.size[0], w), Math.max(node.size[1], h)]);
    node.graph?.setDirtyCanvas(true, false);
  });
}

// A canvas-drawn line of text: no DOM element to clean up.
function textLine(name, value, colour) {
  return displayOnly({
    name, type: name, value, options: {},
    draw(ctx, _node, width, y, height) {
      if (!this.value) return;
      ctx.save();
      ctx.fillStyle = colour;
      ctx.font = "12px monospace";
      ctx.textBaseline = "middle";
      const full = String(this.value);
      let text = full;
      while (text.length > 4 && ctx.measureText(`${text}…`).width > width - 20) text = text.slice(0, -1);
      ctx.fillText(text === full ? text : `${text}…`, 10, y + height / 2);
      ctx.restore();
    },
    computeSize(width) { return [width, 20]; },
  });
}

async function postJson(route, body) {
  const response = await api.fetchApi(route, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body) });
  let data = null;
  try {
    data = await response.json();
  } catch {
    // not JSON (e.g. a plain 404 page)
  }
  return { ok: response.ok && data?.ok !== false, status: response.status, data };
}

function showReport(node, lines) {
  let widget = node.widgets?.find((w) => w.name === REPORT_WIDGET);
  if (!widget) {
    widget = displayOnly(ComfyWidgets.STRING(node, REPORT_WIDGET, ["STRING", { multiline: true }], app).widget);
    if (widget.inputEl) {
      widget.inputEl.readOnly = true;
      widget.inputEl.style.opacity = "0.8";
    }
  }
  widget.value = lines.join("\n");
  resize(node);
}

function formatSeconds(s) {
  if (s == null || !Number.isFinite(s)) return "?";
  if (s < 60) return `${s.toFixed(0)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function formatLoss(v) {
  // Loss terms span orders of magnitude (noise regularisers ~1e-5, VGG sums ~1e3): exponent outside [0.01, 100).
  const a = Math.abs(v);
  return a >= 100 || (a < 0.01 && v !== 0) ? v.toExponential(2) : v.toFixed(4);
}

// "step 120/1000 · ETA 2 min 3 s · mse 0.0123, lpips 0.3010"; `end` replaces the ETA once the prompt is over.
function statusText(detail, end = null) {
  const losses = Object.entries(detail.losses ?? {}).map(([k, v]) => `${k} ${formatLoss(v)}`).join(", ");
  const when = end ?? (detail.finished ? "done" : `ETA ${formatSeconds(detail.eta)}`);
  return `step ${detail.step}/${detail.total} · ${when}${losses ? ` · ${losses}` : ""}`;
}

function widgetValue(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

// The resolution the node will run at, when the frontend can know it: a `resolution` widget on the node feeding its
// `generator` input (Demo Generator). Otherwise the server estimates without one.
function upstreamResolution(node) {
  const slot = node.inputs?.findIndex((i) => i.name === "generator") ?? -1;
  if (slot < 0 || !node.graph) return "";
  let source = null;
  try {
    source = node.getInputNode?.(slot);
  } catch {
    return "";  // the node is being removed
  }
  const value = source ? widgetValue(source, "resolution") : undefined;
  return Number.isFinite(Number(value)) && value !== "" && value != null ? String(value) : "";
}

// The estimate line: `text` of GET /stylegan_studio/estimate for the node's preset and method. Hidden when the
// server has no such route or cannot estimate.
function refreshEstimate(node) {
  // Debounced: loading a workflow changes widgets and links many times in a row.
  clearTimeout(node.sgsEstimateTimer);
  node.sgsEstimateTimer = setTimeout(() => fetchEstimate(node), 150);
}

async function fetchEstimate(node) {
  const line = node.widgets?.find((w) => w.name === ESTIMATE_WIDGET);
  if (!line || !node.graph) return;  // removed meanwhile (a workflow loaded, the graph cleared)
  const query = new URLSearchParams({
    node: node.comfyClass ?? node.type, preset: String(widgetValue(node, "preset") ?? ""),
    method: String(widgetValue(node, "method") ?? ""), resolution: upstreamResolution(node),
  });
  const ticket = (line.sgsTicket = (line.sgsTicket ?? 0) + 1);  // a slower earlier answer must not win
  let text = "";
  try {
    const response = await api.fetchApi(`${ESTIMATE_ROUTE}?${query}`);
    if (response.ok) text = String((await response.json())?.text ?? "");
  } catch {
    text = "";
  }
  if (ticket !== line.sgsTicket) return;
  line.value = text;
  line.hidden = !text;  // hiding never grows the node
  node.graph?.setDirtyCanvas(true, false);
}

function addOptimiserWidgets(node) {
  const estimate = node.addCustomWidget(textLine(ESTIMATE_WIDGET, "", "#bb9"));
  estimate.hidden = true;  // until the server answers
  const status = node.addCustomWidget(textLine(STATUS_WIDGET, "idle", "#9ad"));
  let running = null;  // { promptId, detail } of the run this node is in, from its progress events
  const stop = displayOnly(node.addWidget("button", STOP_WIDGET, "Stop", async () => {
    if (!running) return;
    stop.label = "Stopping…";
    // With a prompt id ComfyUI interrupts only if that prompt is the one running: queued prompts stay.
    await api.fetchApi("/interrupt", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt_id: running.promptId }) });
  }, { serialize: false }));
  stop.label = "Stop";
  const finish = displayOnly(node.addWidget("button", FINISH_WIDGET, "Finish now", async () => {
    if (!running) return;
    finish.label = "Finishing…";
    let answer;
    try {
      answer = await postJson(FINISH_ROUTE, { node_id: String(running.detail.node) });
    } catch (error) {
      answer = { ok: false, status: String(error?.message ?? error) };
    }
    if (!answer.ok) {
      finish.label = "Finish now";
      // 404 / 405: a server whose pack has no such route (an older version).
      const why = answer.data?.error ?? ([404, 405].includes(answer.status) ? "this server has no Finish now"
        : `HTTP ${answer.status}`);
      status.value = `Finish now did not work (${why}); Stop still stops the run`;
    } else {
      finish.label = "Finishing after this step…";
    }
    redraw();
  }, { serialize: false }));
  finish.label = "Finish now";

  const redraw = () => node.graph?.setDirtyCanvas(true, false);
  const onProgress = ({ detail }) => {
    if (detail?.node == null || String(detail.node) !== String(node.id)) return;  // another node's run
    const wasRunning = running;
    running = detail.finished ? null : { promptId: detail.prompt_id, detail };
    status.value = statusText(detail);
    stop.label = running ? "Stop this run" : "Stop";
    if (!running || !wasRunning) finish.label = "Finish now";
    redraw();
  };
  // The run can also end without a final progress event (stopped, failed): say so instead of a stale ETA.
  const onEnd = ({ type, detail }) => {
    if (!running || detail?.prompt_id !== running.promptId) return;
    status.value = statusText(running.detail, END_EVENTS[type]);
    running = null;
    stop.label = "Stop";
    finish.label = "Finish now";
    refreshEstimate(node);  // the server measured this run's steps
    redraw();
  };
  // Listening only while the node is in a graph: onAdded / onRemoved (also run for every node when a workflow
  // is loaded or the graph cleared) attach and detach these listeners.
  let listening = false;
  node.sgsListen = (on) => {
    if (on === listening) return;
    listening = on;
    const method = on ? "addEventListener" : "removeEventListener";
    api[method](PROGRESS_EVENT, onProgress);
    for (const type of Object.keys(END_EVENTS)) api[method](type, onEnd);
  };
  if (node.graph) node.sgsListen(true);  // already added (onAdded came first)
}

// Frame nodes: the slider is there from the start (so a run adds nothing and the node keeps its size), disabled
// until a batch of two or more frames has arrived.
function addFrameScrubber(node) {
  const slider = displayOnly(node.addWidget("slider", FRAME_WIDGET, 1, (v) => {
    const frames = node.sgsFrames;
    const count = frames?.length ?? 1;
    slider.value = Math.min(Math.max(Math.round(v), 1), count);  // the slider is continuous; frames are not
    if (frames) {
      node.imgs = frames;
      node.imageIndex = slider.value - 1;
    }
    node.graph?.setDirtyCanvas(true, false);
  }, { min: 1, max: 1, step: 1, precision: 0, serialize: false }));
  slider.label = "frame";
  slider.disabled = true;
  return slider;
}

function frameUrl(image) {
  const params = new URLSearchParams({ filename: image.filename, subfolder: image.subfolder ?? "",
    type: image.type ?? "output" });
  return api.apiURL(`/view?${params}`);
}

// The node's output batch, loaded by the extension itself: the frontend shows a node's last live preview in place
// of its outputs once a run is over (the last frame, whatever the slider says), so the scrubber keeps its own
// frames and puts them back on the node (see the chained onDrawBackground).
function showFrames(node, images) {
  const slider = node.widgets?.find((w) => w.name === FRAME_WIDGET);
  const ticket = (node.sgsFramesTicket = (node.sgsFramesTicket ?? 0) + 1);
  node.sgsFrames = null;
  if (!images.length) return;
  Promise.all(images.map((image) => new Promise((done) => {
    const img = new Image();
    img.onload = () => done(img);
    img.onerror = () => done(null);
    img.src = frameUrl(image);
  }))).then((loaded) => {
    if (ticket !== node.sgsFramesTicket) return;  // a newer run's frames are on their way
    const frames = loaded.filter(Boolean);
    if (!frames.length) return;
    node.sgsFrames = frames;
    if (slider) {
      slider.options.max = frames.length;
      slider.disabled = frames.length < 2;
      slider.value = Math.min(Math.max(Math.round(slider.value ?? 1), 1), frames.length);
    }
    node.imgs = frames;
    node.imageIndex = (slider?.value ?? 1) - 1;
    node.graph?.setDirtyCanvas(true, false);
  });
}

// The frontend gives its image preview at least 220 px and grows the node to make room, over its neighbours. On the
// pack's nodes the preview takes the space the node has, plus the free space below it (down to the next node
// under it, if any), at most those 220 px: a node grows only into empty canvas.
const PREVIEW_MIN_HEIGHT = 220;
const NODE_GAP = 10;

function roomBelow(node) {
  const title = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  const [x0, y0] = node.pos;
  const bottom = y0 + node.size[1];
  let room = Infinity;
  for (const other of node.graph?.nodes ?? []) {
    if (other === node) continue;
    const ox = other.pos[0];
    const top = other.pos[1] - title;
    const overlapsX = ox < x0 + node.size[0] && ox + other.size[0] > x0;
    if (overlapsX && top >= bottom - 1) room = Math.min(room, top - bottom - NODE_GAP);
  }
  return Math.max(0, room);
}

function fitPreviewInside(node) {
  for (const widget of node.widgets ?? []) {
    if (widget.sgsFitsInside || !String(widget.name ?? "").startsWith(PREVIEW_WIDGET_PREFIX)) continue;
    const original = widget.computeLayoutSize?.bind(widget);
    widget.computeLayoutSize = (...args) => {
      const size = original?.(...args) ?? { minHeight: PREVIEW_MIN_HEIGHT, minWidth: 1 };
      const inside = widget.y ? Math.max(0, node.size[1] - widget.y) : 0;  // y: from the last layout
      return { ...size, minHeight: Math.min(size.minHeight ?? PREVIEW_MIN_HEIGHT, inside + roomBelow(node)) };
    };
    widget.sgsFitsInside = true;
    node.setDirtyCanvas?.(true, true);
  }
}

// Frame nodes: the frames the scrubber walks stay on the node (see showFrames); the frontend's own counter and
// arrow keys move the slider with them.
function keepFrames(node) {
  const frames = node.sgsFrames;
  const slider = node.widgets?.find((w) => w.name === FRAME_WIDGET);
  if (!frames || !slider) return;
  if (node.imgs !== frames) {
    // The frontend replaced them (with its last live preview): the slider's frame goes back.
    node.imgs = frames;
    node.imageIndex = slider.value - 1;
    node.graph?.setDirtyCanvas(true, false);
  } else if (node.imageIndex != null && node.imageIndex + 1 !== slider.value) {
    slider.value = node.imageIndex + 1;
  }
}

// --- Direction Edit's live preview ------------------------------------------------------------------------------
const LIVE_ROUTE = "/stylegan_studio/live_preview";
const LIVE_WIDGET = "sgs_live";
const LIVE_NAMES_WIDGET = "sgs_component";
// The widgets whose values a preview sends: the node's run names them (`inputs` of its `sgs_live` output).
const LIVE_DEFAULT_INPUTS = ["strength"];
const LIVE_DEBOUNCE_MS = 30;
const LIVE_DEFAULT_RANGE = 10;
const LIVE_NOT_YET = "run once to enable live preview";

function liveInputs(node) {
  return Array.isArray(node.sgsLive?.inputs) ? node.sgsLive.inputs : LIVE_DEFAULT_INPUTS;
}

function liveValues(node) {
  const values = {};
  for (const name of liveInputs(node)) {
    const value = Number(widgetValue(node, name) ?? 0);
    values[name] = Number.isFinite(value) ? value : 0;
  }
  return values;
}

function showComponentNames(node) {
  const line = node.widgets?.find((w) => w.name === LIVE_NAMES_WIDGET);
  const live = node.sgsLive;
  if (!line || !live) return;
  const name = (names, i) => (Array.isArray(names) && i >= 0 && i < names.length ? names[i] : "(no such index)");
  const index = Number(widgetValue(node, "index") ?? 0);
  let text = `component ${index}: ${name(live.names, index)}`;
  if (Number(widgetValue(node, "strength_2") ?? 0) !== 0) {
    const index2 = Number(widgetValue(node, "index_2") ?? 0);
    text += ` · second ${index2}: ${name(live.names_2, index2)}`;
  }
  line.value = text;
}

// The strength sliders span the method's usual range (a typed value beyond it widens the slider to fit).
function setSliderRange(node, name, range) {
  const widget = node.widgets?.find((w) => w.name === name);
  if (!widget || !(range > 0)) return;
  const reach = Math.max(range, Math.abs(Number(widget.value) || 0));
  widget.options = { ...(widget.options ?? {}), min: -reach, max: reach };
}

async function requestLivePreview(node) {
  const line = node.widgets?.find((w) => w.name === LIVE_WIDGET);
  const live = node.sgsLive;
  if (!line || !node.graph) return;
  if (!live?.token) {
    line.value = LIVE_NOT_YET;
    return;
  }
  if (node.sgsLiveBusy) {
    node.sgsLiveAgain = true;  // latest wins: the newest values go when this request is answered
    return;
  }
  node.sgsLiveBusy = true;
  node.sgsLiveAgain = false;
  const sent = performance.now();
  let answer;
  try {
    answer = await postJson(LIVE_ROUTE, { token: live.token, node_id: String(node.id), px: live.preview_px ?? 256,
      ...liveValues(node) });
  } catch (error) {
    answer = { ok: false, status: String(error?.message ?? error) };
  }
  const data = answer.data;
  if (answer.ok && data?.image) {
    const img = new Image();
    img.onload = () => {
      node.sgsLiveImage = img;
      node.imgs = [img];
      node.imageIndex = 0;
      node.graph?.setDirtyCanvas(true, false);
    };
    img.src = data.image;
    const round = Math.round(performance.now() - sent);
    node.sgsLiveTimes = [...(node.sgsLiveTimes ?? []), { ms: data.ms, roundTripMs: round, px: data.px }].slice(-50);
    line.value = `live preview ${data.px} px in ${Math.round(data.ms)} ms (queue for ${data.resolution} px)`;
  } else if (!answer.ok) {
    const why = data?.error ?? ([404, 405].includes(answer.status) ? "this server has no live preview"
      : `HTTP ${answer.status}`);
    line.value = /run the node once/.test(why) ? LIVE_NOT_YET : `live preview failed: ${why}`;
    if (/run the node once/.test(why)) node.sgsLive = { ...live, token: "" };
  }
  node.sgsLiveBusy = false;
  node.graph?.setDirtyCanvas(true, false);
  if (node.sgsLiveAgain) requestLivePreview(node);
}

function scheduleLivePreview(node) {
  showComponentNames(node);
  clearTimeout(node.sgsLiveTimer);
  node.sgsLiveTimer = setTimeout(() => requestLivePreview(node), LIVE_DEBOUNCE_MS);
}

function addLiveWidgets(node) {
  node.addCustomWidget(textLine(LIVE_WIDGET, LIVE_NOT_YET, "#9c9"));
  node.addCustomWidget(textLine(LIVE_NAMES_WIDGET, "", "#bb9"));
  for (const widget of node.widgets ?? []) {
    if (widget.sgsLive || String(widget.name ?? "").startsWith("sgs_")) continue;
    const callback = widget.callback;
    widget.callback = function () {
      const result = callback?.apply(this, arguments);
      if (liveInputs(node).includes(widget.name)) scheduleLivePreview(node);
      return result;
    };
    widget.sgsLive = true;
  }
  // Until a run tells the method's range: the widest usual one (SeFa's ±10 in core.directions.STRENGTH_RANGES).
  setSliderRange(node, "strength", LIVE_DEFAULT_RANGE);
  setSliderRange(node, "strength_2", LIVE_DEFAULT_RANGE);
}

function liveExecuted(node, message) {
  const live = Array.isArray(message?.sgs_live) ? message.sgs_live[0] : null;
  if (!live) return;
  node.sgsLive = live;
  node.sgsLiveImage = null;  // the run's own images are shown now
  setSliderRange(node, "strength", Number(live.range));
  setSliderRange(node, "strength_2", Number(live.range_2));
  const line = node.widgets?.find((w) => w.name === LIVE_WIDGET);
  if (line) line.value = live.token ? "live preview ready: drag the strength" : LIVE_NOT_YET;
  showComponentNames(node);
  node.graph?.setDirtyCanvas(true, false);
}

// New nodes of the pack: their seeds start "fixed" (a loaded workflow then sets its saved choice).
function fixSeeds(node) {
  for (const widget of node.widgets ?? []) {
    for (const control of widget.linkedWidgets ?? []) {
      if (control?.type === "combo" && control.options?.values?.includes?.("fixed")) control.value = "fixed";
    }
  }
}

app.registerExtension({
  name: "StyleGANStudio.Report",
  async init() {
    await loadRegistry();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith(NODE_PREFIX)) return;
    const name = nodeData.name;
    const makesFrames = registry.frames.includes(name);
    const livePreview = registry.live.includes(name);
    const optimises = registry.optimising.includes(name);

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      fixSeeds(this);
      if (makesFrames) addFrameScrubber(this);
      if (livePreview) addLiveWidgets(this);
      if (optimises) {
        addOptimiserWidgets(this);
        refreshEstimate(this);
      }
      // A node added from the menu gets room for the image it will show (a loaded workflow sets its own size).
      if (makesFrames || optimises || livePreview) this.setSize([this.size[0], this.size[1] + NEW_NODE_IMAGE_ROOM]);
      return result;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      if (Array.isArray(message?.text) && message.text.length) showReport(this, message.text);
      if (makesFrames && Array.isArray(message?.images)) showFrames(this, message.images);
      if (livePreview) liveExecuted(this, message);
      return result;
    };

    if (makesFrames) {
      // A new run: the node shows the server's live previews (ComfyUI's own) until its frames arrive.
      const onExecutionStart = nodeType.prototype.onExecutionStart;
      nodeType.prototype.onExecutionStart = function () {
        this.sgsFramesTicket = (this.sgsFramesTicket ?? 0) + 1;
        this.sgsFrames = null;
        return onExecutionStart?.apply(this, arguments);
      };
    }
    const onDrawBackground = nodeType.prototype.onDrawBackground;
    nodeType.prototype.onDrawBackground = function () {
      const result = onDrawBackground?.apply(this, arguments);
      fitPreviewInside(this);
      if (makesFrames) keepFrames(this);
      // The newest live preview stays on the node (the frontend would put the last run's output back).
      if (livePreview && this.sgsLiveImage && this.imgs?.[0] !== this.sgsLiveImage) {
        this.imgs = [this.sgsLiveImage];
        this.imageIndex = 0;
      }
      return result;
    };

    if (optimises) {
      const onWidgetChanged = nodeType.prototype.onWidgetChanged;
      nodeType.prototype.onWidgetChanged = function (widgetName) {
        const result = onWidgetChanged?.apply(this, arguments);
        if (widgetName === "preset" || widgetName === "method") refreshEstimate(this);
        return result;
      };
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        const result = onConfigure?.apply(this, arguments);
        refreshEstimate(this);  // the loaded workflow's preset and method
        return result;
      };
      const onConnectionsChange = nodeType.prototype.onConnectionsChange;
      nodeType.prototype.onConnectionsChange = function () {
        const result = onConnectionsChange?.apply(this, arguments);
        refreshEstimate(this);  // another generator, another resolution
        return result;
      };
      const onAdded = nodeType.prototype.onAdded;
      nodeType.prototype.onAdded = function () {
        this.sgsListen?.(true);
        return onAdded?.apply(this, arguments);
      };
      const onRemoved = nodeType.prototype.onRemoved;
      nodeType.prototype.onRemoved = function () {
        this.sgsListen?.(false);
        return onRemoved?.apply(this, arguments);
      };
    }
  },
});
