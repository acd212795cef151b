"""Weight-Shift Edit (PRMU 2022, seed 003): CLIP-guided shifts of one convolution's weights, saved as small files,
stacked with strengths k. shift.py: the WeightShift record and applying shifts (a copy sharing the base's tensors)."""

from .shift import (MAX_K, ShiftLayer, WeightShift, applied_shifts, apply_weight_shifts, check_shift_fits,
                    conv_layers, find_layer, layer_of, make_shift, set_tensor, share_generator, shift_base,
                    shifted_tensors)
from .files import (SHIFT_FORMAT, SHIFT_SUFFIX, import_nada, import_navigan, import_shift, load_weight_shift,
                    save_weight_shift)
from .train import (DEFAULTS, LOSSES, LayerScanResult, LayerScanRow, WeightShiftConfig, WeightShiftResult,
                    contact_sheet, scan_layers, train_weight_shift)
from .render import render_k_sweep

__all__ = ["MAX_K", "ShiftLayer", "WeightShift", "applied_shifts", "apply_weight_shifts", "check_shift_fits",
           "conv_layers", "find_layer", "layer_of", "make_shift", "set_tensor", "share_generator", "shift_base",
           "shifted_tensors",
           "SHIFT_FORMAT", "SHIFT_SUFFIX", "import_nada", "import_navigan", "import_shift", "load_weight_shift",
           "save_weight_shift",
           "DEFAULTS", "LOSSES", "LayerScanResult", "LayerScanRow", "WeightShiftConfig", "WeightShiftResult",
           "contact_sheet", "scan_layers", "train_weight_shift", "render_k_sweep"]
