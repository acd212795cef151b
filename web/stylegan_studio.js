// StyleGAN Studio: shows a node's text report (model architecture and licence, saved files) on the node.
// The report widget is display-only: it is never serialised into prompts or saved workflows.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODE_PREFIX = "SGS_";
const REPORT_WIDGET = "sgs_report";

function showReport(node, lines) {
  let widget = node.widgets?.find((w) => w.name === REPORT_WIDGET);
  if (!widget) {
    widget = ComfyWidgets.STRING(node, REPORT_WIDGET, ["STRING", { multiline: true }], app).widget;
    widget.serialize = false;
    widget.options = { ...(widget.options ?? {}), serialize: false };
    if (widget.inputEl) {
      widget.inputEl.readOnly = true;
      widget.inputEl.style.opacity = "0.8";
    }
  }
  widget.value = lines.join("\n");
  requestAnimationFrame(() => {
    const [w, h] = node.computeSize();
    node.setSize([Math.max(node.size[0], w), Math.max(node.size[1], h)]);
    node.graph?.setDirtyCanvas(true, false);
  });
}

app.registerExtension({
  name: "StyleGANStudio.Report",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith(NODE_PREFIX)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      if (Array.isArray(message?.text) && message.text.length) showReport(this, message.text);
      return result;
    };
  },
});
