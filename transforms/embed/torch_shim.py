"""Make the PyPI torchvision wheel importable on a CPU-only torch.

The torchvision 0.28.0 wheel on PyPI is built against CUDA torch: on the CPU torch this
project pins (constraints.txt) its compiled extension `_C` does not load, so the operators
it would define (`torchvision::nms`, `roi_align`, ...) do not exist. torchvision then still
registers fake (meta) kernels for `nms` and `qnms` unconditionally while it is imported, and
that import fails with "operator torchvision::nms does not exist". open_clip and timm import
torchvision, so they fail the same way.

`ensure_torchvision()` defines those operators' schemas (no kernels) under the `torchvision`
namespace before torchvision is imported, so its registrations find them. Nothing the embed
stage uses needs them: transforms, models and open_clip/timm run on plain torch ops. The
operators that need the missing kernels still fail cleanly: `torchvision.ops.nms` and the
other ops check for the extension first and raise torchvision's RuntimeError ("Couldn't load
custom C++ ops ..."), and calling `torch.ops.torchvision.nms` directly raises torch's
NotImplementedError (no kernel for the CPU backend). Where the extension does load (a CUDA
torch, a matching CPU build) this is a no-op.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

# The schemas of the operators torchvision's C++ extension defines (csrc/ops/*.cpp).
SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, "
    "float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
    "SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
    "SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, "
    "float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, "
    "SymInt channels, SymInt height, SymInt width) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
    "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, "
    "Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, "
    "SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, "
    "bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "_cuda_version() -> int",
)

_lock = threading.Lock()
_state: dict = {"done": False, "library": None, "shimmed": False}


def _extension_loads() -> bool:
    """Whether torchvision's own `_C` extension loads here (what its import tries first)."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision: nothing to mend (its import fails on its own terms)
    for folder in spec.submodule_search_locations:
        for path in sorted(glob.glob(os.path.join(folder, "_C.*"))):
            try:
                torch.ops.load_library(path)
                return True
            except (OSError, RuntimeError):
                continue
    return False


def ensure_torchvision() -> bool:
    """Define torchvision's operator schemas where its extension cannot provide them.

    Call before anything imports torchvision (open_clip, timm). Idempotent and thread-safe;
    True when the schemas were defined (now or by an earlier call), False when nothing was
    needed (torchvision already imported, or its extension loads).
    """
    with _lock:
        if _state["done"]:
            return _state["shimmed"]
        _state["done"] = True
        if "torchvision" in sys.modules or _extension_loads():
            return False
        import torch

        # DEF library objects undo their definitions when collected: keep it for the process.
        library = torch.library.Library("torchvision", "DEF")
        for schema in SCHEMAS:
            library.define(schema)
        _state["library"], _state["shimmed"] = library, True
        log.debug("torchvision's C++ ops are unavailable on this torch; schemas defined")
        return True


def shimmed() -> bool:
    """Whether this process runs torchvision without its compiled operators."""
    return bool(_state["shimmed"])
