// StyleGAN Studio frontend extension.
//  - Every SGS_ node shows its text report (model architecture and licence, inversion quality, saved files).
//  - Optimising nodes (inversion, CLIP edits, global directions, mapper training) show a live status line (step,
//    loss terms, ETA) fed by the pack's `stylegan_studio.progress` event, and a Stop button that interrupts only
//    the run they belong to. The live image itself comes through ComfyUI's own progress/preview messages.
//  - Image-making nodes get a frame scrubber over their output batch (which image of it the node shows).
// Which nodes optimise or make frames is declared once, in the pack's node registry (nodes/registry.py), and read
// from the pack's `/stylegan_studio/nodes` route. All these widgets are display-only: never serialised into
// prompts or saved workflows.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODE_PREFIX = "SGS_";
const NODES_ROUTE = "/stylegan_studio/nodes";
// Ids of the optimising and frame-making nodes, read once in `init` (before any node type is registered).
let registry = { optimising: [], frames: [] };

async function loadRegistry() {
  try {
    const response = await api.fetchApi(NODES_ROUTE);
    if (!response.ok) throw new Error(`${NODES_ROUTE}: HTTP ${response.status}`);
    const info = await response.json();
    registry = { optimising: info.optimising ?? [], frames: info.frames ?? [] };
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
const FRAME_WIDGET = "sgs_frame";


function displayOnly(widget) {
  widget.serialize = false;  // not in a saved workflow's widgets_values
  widget.options = { ...(widget.options ?? {}), serialize: false };  // not in the prompt
  return widget;
}

function resize(node) {
  requestAnimationFrame(() => {
    const [w, h] = node.computeSize();
    node.setSize([Math.max(node.size[0], w), Math.max(node.size[1], h)]);
    node.graph?.setDirtyCanvas(true, false);
  });
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

function addOptimiserWidgets(node) {
  // A plain text line drawn on the canvas: no DOM element to clean up.
  const status = node.addCustomWidget(displayOnly({
    name: STATUS_WIDGET, type: "sgs_status", value: "idle", options: {},
    draw(ctx, _node, width, y, height) {
      ctx.save();
      ctx.fillStyle = "#9ad";
      ctx.font = "12px monospace";
      ctx.textBaseline = "middle";
      const full = String(this.value);
      let text = full;
      while (text.length > 4 && ctx.measureText(`${text}…`).width > width - 20) text = text.slice(0, -1);
      ctx.fillText(text === full ? text : `${text}…`, 10, y + height / 2);
      ctx.restore();
    },
    computeSize(width) { return [width, 20]; },
  }));
  let running = null;  // { promptId, detail } of the run this node is in, from its progress events
  const stop = displayOnly(node.addWidget("button", STOP_WIDGET, "Stop", async () => {
    if (!running) return;
    stop.label = "Stopping…";
    // With a prompt id ComfyUI interrupts only if that prompt is the one running: queued prompts stay.
    await api.fetchApi("/interrupt", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt_id: running.promptId }) });
  }, { serialize: false }));
  stop.label = "Stop";

  const redraw = () => node.graph?.setDirtyCanvas(true, false);
  const onProgress = ({ detail }) => {
    if (detail?.node == null || String(detail.node) !== String(node.id)) return;  // another node's run
    running = detail.finished ? null : { promptId: detail.prompt_id, detail };
    status.value = statusText(detail);
    stop.label = running ? "Stop this run" : "Stop";
    redraw();
  };
  // The run can also end without a final progress event (stopped, failed): say so instead of a stale ETA.
  const onEnd = ({ type, detail }) => {
    if (!running || detail?.prompt_id !== running.promptId) return;
    status.value = statusText(running.detail, END_EVENTS[type]);
    running = null;
    stop.label = "Stop";
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

function showFrameScrubber(node, count) {
  let slider = node.widgets?.find((w) => w.name === FRAME_WIDGET);
  if (count < 2) {
    if (slider) slider.disabled = true;
    return;
  }
  if (!slider) {
    slider = displayOnly(node.addWidget("slider", FRAME_WIDGET, 0, (v) => {
      slider.value = Math.round(v);  // the slider is continuous; frames are not
      node.imageIndex = slider.value;
      node.graph?.setDirtyCanvas(true, false);
    }, { min: 0, max: count - 1, step: 1, precision: 0, serialize: false }));
    slider.label = "frame";
  }
  slider.disabled = false;
  slider.options.max = count - 1;
  slider.value = Math.min(Math.round(slider.value ?? 0), count - 1);
  // The frontend loads the new images asynchronously and then resets imageIndex (grid view); the chained
  // onDrawBackground (see beforeRegisterNodeDef) selects the slider's frame once they are there.
  node.sgsFrameImgs = null;
  resize(node);
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
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      if (Array.isArray(message?.text) && message.text.length) showReport(this, message.text);
      if (makesFrames && Array.isArray(message?.images)) showFrameScrubber(this, message.images.length);
      return result;
    };
    if (makesFrames) {
      const onDrawBackground = nodeType.prototype.onDrawBackground;
      nodeType.prototype.onDrawBackground = function () {
        const slider = this.widgets?.find((w) => w.name === FRAME_WIDGET);
        // Once per newly loaded image set (the user can still go back to the grid with Escape).
        if (slider && !slider.disabled && this.imgs?.length > 1 && this.imgs !== this.sgsFrameImgs) {
          this.sgsFrameImgs = this.imgs;
          this.imageIndex = Math.min(slider.value, this.imgs.length - 1);
        }
        return onDrawBackground?.apply(this, arguments);
      };
    }
    if (registry.optimising.includes(name)) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        addOptimiserWidgets(this);
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
