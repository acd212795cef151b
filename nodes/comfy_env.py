"""Everything that touches ComfyUI: model folders, devices, progress/preview/interrupt, output folders, memory
hooks and the pack's small web routes.

Every ComfyUI import of the pack lives here. Outside ComfyUI (tests, the headless demo) the same functions
fall back to plain behaviour: folders models/stylegan, input and output under STYLEGAN_STUDIO_HOME (default:
the current directory; each can be moved with STYLEGAN_STUDIO_MODELS / _INPUT / _OUTPUT), the best available
torch device, and progress reported to the log.

File names and symlinks: one rule, ComfyUI's own, inside and outside ComfyUI. A file chosen by name (a
checkpoint, a latent or weight delta in input/output, a latent mapper, CLIP weights, an fs3 file) is checked
LEXICALLY (`check_name`): a relative path without `..`, joined to each folder as written, never resolved.
Symlinks placed inside the folders are followed, both when listing (linked folders are walked; a link back up
the tree is walked once) and when loading, as ComfyUI's folder_paths does (`os.walk(followlinks=True)`,
`os.path.isfile`): a models folder may link to a big model drive, and what is listed always loads. Whatever the
pack writes for a file goes next to the name as written (the link, in the model folder), never next to the
link's target, and only next to files that are in the model folders (`cache_file`); a write under
output/<prefix> must stay in the output folder as written (`next_output_path`, ComfyUI's check).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from ..core.files import safetensors_format
from ..core.log import logger
from ..core.latents import weights_digest  # noqa: F401  (re-exported: the caches and tests call comfy_env.weights_digest)

MODEL_FOLDER = "stylegan"
MODEL_EXTENSIONS = {".pkl", ".pt", ".pth", ".safetensors"}
PERCEPTUAL_FOLDER = "perceptual"
LANDMARKS_FOLDER = "landmarks"
ARCFACE_FOLDER = "arcface"
MAPPER_FOLDER = "latent_mappers"
SHIFT_FOLDER = "weight_shifts"
FACE_PARSING_FOLDER = "face_parsing"  # the folder other ComfyUI face-parsing packs use too
ENCODER_FOLDER = "encoders"
DIRECTIONS_FOLDER = "stylegan_directions"  # latent directions (ours, InterFaceGAN, SeFa factor.pt, GANSpace, dfl)
CLIP_FOLDERS = ("text_encoders", "clip")   # ComfyUI's own folders for CLIP files (models/clip is the legacy name)


@dataclass(frozen=True)
class ModelFolder:
    names: tuple[str, ...]                 # ComfyUI folder names, searched in order (the first receives files)
    extensions: frozenset[str]             # file types ComfyUI lists there
    register: bool = True                  # the pack adds it to ComfyUI (False: ComfyUI's own folder)


# Every model folder the pack reads, in one table: key -> folder. A new kind of weights adds one line here.
MODEL_FOLDERS = {
    MODEL_FOLDER: ModelFolder((MODEL_FOLDER,), frozenset(MODEL_EXTENSIONS)),       # StyleGAN checkpoints
    PERCEPTUAL_FOLDER: ModelFolder((PERCEPTUAL_FOLDER,), frozenset(MODEL_EXTENSIONS)),  # VGG16/AlexNet/LPIPS
    LANDMARKS_FOLDER: ModelFolder((LANDMARKS_FOLDER,), frozenset({".pth", ".tar"})),   # face_alignment FAN/SFD
    ARCFACE_FOLDER: ModelFolder((ARCFACE_FOLDER,), frozenset({".pth", ".safetensors"})),  # ArcFace IR-SE50
    MAPPER_FOLDER: ModelFolder((MAPPER_FOLDER,), frozenset({".safetensors", ".pt", ".pth"})),  # latent mappers
    SHIFT_FOLDER: ModelFolder((SHIFT_FOLDER,), frozenset({".safetensors", ".pt", ".pth"})),  # weight shifts (+ NaviGAN/NADA)
    FACE_PARSING_FOLDER: ModelFolder((FACE_PARSING_FOLDER,), frozenset({".pth", ".pt", ".safetensors", ".bin"})),
    ENCODER_FOLDER: ModelFolder((ENCODER_FOLDER,), frozenset({".pt", ".pth"})),  # pSp / e4e / ReStyle encoders
    DIRECTIONS_FOLDER: ModelFolder((DIRECTIONS_FOLDER,), frozenset({".safetensors", ".npy", ".npz", ".pt", ".pth"})),
    "clip": ModelFolder(CLIP_FOLDERS, frozenset(), register=False),                # open_clip weights
}
DEVICE_CHOICES = ["auto", "cpu", "cuda", "mps"]

try:  # inside ComfyUI
    import comfy.model_management as _mm
    import comfy.utils as _comfy_utils
    import folder_paths as _folder_paths

    IN_COMFYUI = True
except ImportError:  # tests, scripts and the headless demo
    _mm = _comfy_utils = _folder_paths = None
    IN_COMFYUI = False


def _fallback_dir(kind: str, default: str) -> Path:
    """Folder used outside ComfyUI: $STYLEGAN_STUDIO_<KIND>, else $STYLEGAN_STUDIO_HOME/<default>."""
    override = os.environ.get(f"STYLEGAN_STUDIO_{kind}")
    return Path(override) if override else Path(os.environ.get("STYLEGAN_STUDIO_HOME", os.getcwd())) / default


def register_model_folders() -> None:
    """Add the pack's folders of `MODEL_FOLDERS` (models/stylegan, models/perceptual, ...) to ComfyUI's model
    folders, keeping any paths the user's extra_model_paths.yaml gave them."""
    if not IN_COMFYUI:
        return
    for folder in MODEL_FOLDERS.values():
        if not folder.register:
            continue
        for name in folder.names:
            default = os.path.join(_folder_paths.models_dir, name)
            if name in _folder_paths.folder_names_and_paths:
                paths, exts = _folder_paths.folder_names_and_paths[name]
                if default not in paths:
                    paths.append(default)
                _folder_paths.folder_names_and_paths[name] = (paths, set(exts) | set(folder.extensions))
            else:
                _folder_paths.folder_names_and_paths[name] = ([default], set(folder.extensions))


def folder_dirs(key: str) -> list[Path]:
    """The folders of `MODEL_FOLDERS[key]`: ComfyUI's paths for it (with extra_model_paths.yaml), or outside ComfyUI
    models/<name> next to the StyleGAN folder ($STYLEGAN_STUDIO_MODELS, else $STYLEGAN_STUDIO_HOME/models/stylegan)."""
    folder = MODEL_FOLDERS[key]
    if IN_COMFYUI:
        dirs: list[Path] = []
        for name in folder.names:
            try:
                dirs += [Path(p) for p in _folder_paths.get_folder_paths(name)]
            except KeyError:  # a ComfyUI without this folder name
                continue
        return list(dict.fromkeys(dirs))
    stylegan = _fallback_dir("MODELS", f"models/{MODEL_FOLDER}")
    return [stylegan if name == MODEL_FOLDER else stylegan.parent / name for name in folder.names]


def model_dirs() -> list[Path]:
    """Folders searched for StyleGAN checkpoints (the first one receives downloads and conversions)."""
    return folder_dirs(MODEL_FOLDER)


def list_models() -> list[str]:
    """Checkpoint names (paths relative to a model folder), sorted."""
    if IN_COMFYUI:
        return sorted(_folder_paths.get_filename_list(MODEL_FOLDER))
    return list_files(model_dirs(), tuple(MODEL_EXTENSIONS))


def model_path(name: str) -> Path:
    """Full path of a checkpoint chosen from `list_models()` (the name as written; a symlink is not resolved)."""
    check_name(name, "checkpoint", f"models/{MODEL_FOLDER}")
    if IN_COMFYUI:
        path = _folder_paths.get_full_path(MODEL_FOLDER, name)
        if path:
            return Path(path)
    found = find_in_folders(model_dirs(), name)
    if found is not None:
        return found
    raise FileNotFoundError(f"checkpoint {name!r} not found in {', '.join(map(str, model_dirs()))}; put StyleGAN "
                            f"checkpoints (.pkl, .pt, .safetensors) in models/{MODEL_FOLDER}")


# ------------------------------------------------------------------------------------------------
# Names inside folders (the rule of the module docstring)

_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_DEPTH = 32   # folder levels walked below a folder: enough for any real layout, bounded for linked trees


def check_name(name: str, what: str, where: str) -> str:
    """`name` if it is a relative path inside a folder, checked as written: ValueError naming `what` and `where`
    for an empty or absolute name (`/x`, `\\x`, `C:x`) or one with a `..` component. A symlink inside the folder
    is fine; a name that climbs out of it is not."""
    text = str(name)
    parts = re.split(r"[\\/]", text)
    if not text.strip() or "\0" in text or text.startswith(("/", "\\")) or _DRIVE.match(text) or ".." in parts:
        raise ValueError(f"{what} {name!r} must be a file name inside {where}: choose one from the list (a path "
                         f"relative to the folder, without '..' and not absolute)")
    return text


def find_in_folders(dirs: list[Path], name: str) -> Optional[Path]:
    """`folder / name` for the first folder where it is a file (a symlink is followed to check that, and returned
    as written), else None. Check `name` with `check_name` first."""
    for folder in dirs:
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def walk_files(folder: Path) -> list[str]:
    """Files under `folder` as '/'-separated relative names, following symlinked files and folders as ComfyUI's
    listing does (`.git` skipped; a broken link is not a file). A linked folder that leads back to one of its own
    parents is not walked again, and the walk stops `_MAX_DEPTH` levels down."""
    names: list[str] = []

    def visit(directory: str, rel: str, branch: frozenset) -> None:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir():  # follows a link
                    if entry.name == ".git" or len(branch) > _MAX_DEPTH:
                        continue
                    real = os.path.realpath(entry.path)
                    if real not in branch:
                        visit(entry.path, f"{rel}{entry.name}/", branch | {real})
                elif entry.is_file():
                    names.append(rel + entry.name)
            except OSError:
                continue

    if Path(folder).is_dir():
        visit(str(folder), "", frozenset({os.path.realpath(folder)}))
    return names


def _inside(path: Union[str, os.PathLike], folder: Union[str, os.PathLike]) -> bool:
    """Whether `path` lies inside `folder`, compared as written (absolute, `..` folded, links not resolved)."""
    p, f = os.path.abspath(path), os.path.abspath(folder)
    try:
        return p != f and os.path.commonpath([p, f]) == f
    except ValueError:  # another drive on Windows
        return False


# ------------------------------------------------------------------------------------------------
# Caches computed from a generator

_checkpoint_digests: dict[tuple, Optional[str]] = {}   # (path, mtime, size) -> weights_digest of its generator


def checkpoint_digest(path: Path) -> Optional[str]:
    """`weights_digest` of the generator (G_ema) in checkpoint `path`, read once per file version with the pack's
    safe loader (then released); None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    if key not in _checkpoint_digests:
        from ..core.loaders import load_generator

        try:
            digest: Optional[str] = weights_digest(load_generator(path, device="cpu"))
        except Exception as e:  # noqa: BLE001 - an unreadable file owns no cache: the output folder is used
            logger.info("cannot tell which generator %s holds (%s: %s); caching in the output folder", path,
                        type(e).__name__, e)
            digest = None
        while len(_checkpoint_digests) >= 32:
            _checkpoint_digests.pop(next(iter(_checkpoint_digests)))
        _checkpoint_digests[key] = digest
    return _checkpoint_digests[key]


def checkpoint_of(G) -> Optional[Path]:
    """The checkpoint `G.info.source` names when it is an existing file inside the model folders (as written),
    else None. The source comes from a file's metadata for the pack's .safetensors and can name ANY path."""
    source = getattr(getattr(G, "info", None), "source", "") or ""
    if not source or "\0" in source:
        return None
    path = Path(source)
    if not any(_inside(path, d) for d in model_dirs()):
        return None
    return Path(os.path.abspath(path)) if path.is_file() else None


def cache_file(G, suffix: str, kind: str, key: str = "") -> Path:
    """Where a cache computed from generator `G` (the II2S prior, global directions, ...) is read and written.

    Next to G's checkpoint, as `<checkpoint name><suffix>[-<key>]`, only when all of these hold:
      - the checkpoint `G.info.source` names is an existing file inside a model folder, checked as written
        (`checkpoint_of`): a link placed in the model folder counts, and the cache goes next to the link. The
        source is recorded in the pack's .safetensors files and a crafted file can set it to any existing file,
        so nothing is ever written next to a file outside the model folders;
      - that folder is writable;
      - G is the checkpoint's own generator: the same weights as the generator the file holds (`weights_digest`
        against `checkpoint_digest`, G_ema for NVIDIA pickles). A tuned copy (Apply Weight Delta, PTI), or any
        generator whose weights differ from its checkpoint's, never reads or overwrites the checkpoint's cache.
    Otherwise in the output folder: `<output>/<kind>/<fingerprint>-<weights digest>[<suffix>][-<key>]`, one file
    per set of weights. The folder is not created here; `key` (e.g. a hash of settings) tells caches of one
    generator apart.
    """
    from ..core.latents import generator_ref

    tail = f"{suffix}-{key}" if key else suffix
    ckpt = checkpoint_of(G)
    digest = weights_digest(G)
    if ckpt is not None and os.access(ckpt.parent, os.W_OK) and checkpoint_digest(ckpt) == digest:
        return ckpt.with_name(ckpt.name + tail)
    return output_dir() / kind / f"{generator_ref(G).fingerprint}-{digest[:12]}{tail}"


def output_dir() -> Path:
    return Path(_folder_paths.get_output_directory()) if IN_COMFYUI else _fallback_dir("OUTPUT", "output")


def input_dir() -> Path:
    return Path(_folder_paths.get_input_directory()) if IN_COMFYUI else _fallback_dir("INPUT", "input")


def torch_device(choice: str = "auto") -> torch.device:
    """The device for a generator: 'auto' follows ComfyUI (respecting --cpu), else the named device."""
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {choice!r}")
    if choice == "auto":
        if IN_COMFYUI:
            return _mm.get_torch_device()
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was chosen but no CUDA GPU is available; choose 'auto' or 'cpu'")
    if choice == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' was chosen but Apple MPS is not available; choose 'auto' or 'cpu'")
    return torch.device(choice)


def intermediate_device() -> torch.device:
    """Where IMAGE and MASK tensors live between nodes."""
    return _mm.intermediate_device() if IN_COMFYUI else torch.device("cpu")


def free_memory() -> None:
    """Return the memory an optimisation left in PyTorch's caching allocator (ComfyUI's soft_empty_cache)."""
    if IN_COMFYUI:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


_HOOK_NAME = "stylegan_studio"
_UNLOAD_ALL = 1e29   # unload_all_models asks free_memory for 1e30 bytes: "everything"


def install_memory_hooks(release: Callable[[Optional[torch.device]], int]) -> bool:
    """Make ComfyUI's memory management free the pack's cached models too; True when installed (in ComfyUI).

    Why wrapping: our generators, CLIP, perceptual and ArcFace networks are plain torch modules held in the pack's
    caches (`nodes.caches`), not ComfyUI ModelPatchers, so ComfyUI neither counts nor unloads them. Registering
    them as `LoadedModel`s would tie the pack to ComfyUI's internal patcher API (weight offloading, lowvram
    patching, its changing constructor); every path that frees memory, however, goes through two public functions
    of `comfy.model_management`, which we wrap once:

    - `unload_all_models()`: the UI's "Free model and node cache" (`POST /free` with `unload_models`, handled by
      the prompt worker), an out-of-memory error, and --disable-smart-memory after every prompt. We release every
      cached model (`release(None)`) and empty PyTorch's cache.
    - `free_memory(memory_required, device, ...)`: ComfyUI making room before it loads a model (it also backs
      `unload_all_models`, with 1e30 bytes). ComfyUI first unloads its own models; if the device still has less
      free memory than required, we release our models on that device, so a StyleGAN graph next to a diffusion
      model gives its memory back when the diffusion model needs it, and keeps it otherwise.

    Idempotent: the wrappers are installed once and carry a table of hooks by name, so importing the pack again
    replaces our hook instead of stacking wrappers. A failing hook is logged, never raised: ComfyUI's own
    unloading always completes. Both functions are looked up as module attributes by ComfyUI itself
    (`unload_all_models` calls the module's `free_memory`, `main.py` calls `comfy.model_management.*`), so
    replacing the attributes reaches every caller.
    """
    if not IN_COMFYUI:
        return False

    released_all = [False]  # set when free_memory(1e30) released everything inside an unload_all_models call

    def after_free_memory(memory_required, device, *args, **kwargs) -> None:
        if memory_required >= _UNLOAD_ALL:
            released = release(None)
            released_all[0] = True
        elif _mm.get_free_memory(device) < memory_required:
            released = release(torch.device(device))
        else:
            return
        if released:
            _mm.soft_empty_cache()

    def after_unload_all(*args, **kwargs) -> None:
        if released_all[0]:  # ComfyUI's unload_all_models went through free_memory: done once already
            released_all[0] = False
            return
        release(None)
        _mm.soft_empty_cache()

    for name, hook in (("free_memory", after_free_memory), ("unload_all_models", after_unload_all)):
        _wrapped(name).sgs_hooks[_HOOK_NAME] = hook
    return True


def _wrapped(name: str):
    """comfy.model_management.<name>, wrapped (once) so that hooks run after it with the same arguments."""
    current = getattr(_mm, name)
    if hasattr(current, "sgs_hooks"):
        return current
    original = current

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        for hook_name, hook in list(wrapper.sgs_hooks.items()):
            try:
                hook(*args, **kwargs)
            except Exception:  # noqa: BLE001 - never break ComfyUI's memory management
                logger.exception("%s hook of %s failed", hook_name, name)
        return result

    # Hooks by name; attribute names of our own, so another pack's wrapper is never mistaken for ours.
    wrapper.sgs_hooks = {}
    wrapper.sgs_original = original
    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__doc__ = original.__doc__
    setattr(_mm, name, wrapper)
    return wrapper


def add_json_routes(routes: dict[str, Callable[[], object]]) -> bool:
    """Serve `GET <path>` -> JSON of `routes[path]()` from ComfyUI's server; True when the server exists.

    Must run while ComfyUI imports custom nodes (before it builds its web app), as every pack's routes do."""
    server = _prompt_server() if IN_COMFYUI else None
    table = getattr(server, "routes", None)
    if table is None:
        return False
    from aiohttp import web

    present = {getattr(r, "path", None) for r in table}
    for path, produce in routes.items():
        if path in present:  # the pack imported twice
            continue

        async def handler(request, produce=produce):
            return web.json_response(produce())

        table.get(path)(handler)
    return True


_executor = None


def _route_executor():
    """The pack's own worker thread for threaded routes: one at a time, so waiting requests queue here instead of
    taking the event loop's shared executor's threads."""
    global _executor
    if _executor is None:
        from concurrent.futures import ThreadPoolExecutor

        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stylegan_studio_route")
    return _executor


def add_routes(get: Optional[dict[str, Callable[[dict], object]]] = None,
               post: Optional[dict[str, Callable[[dict], object]]] = None, *, threaded: bool = False) -> bool:
    """Serve `GET <path>?a=b` -> JSON of `get[path](query dict)` and `POST <path>` with a JSON object body -> JSON
    of `post[path](body dict)` from ComfyUI's server; True when the server exists. A handler's ValueError answers
    400 with {"error": message}. The handlers are plain functions, so tests call them without a server.
    `threaded`: the handlers run in a worker thread (for ones that compute, e.g. a live preview's render), so the
    server's event loop keeps answering meanwhile.

    Must run while ComfyUI imports custom nodes (before it builds its web app), as every pack's routes do."""
    server = _prompt_server() if IN_COMFYUI else None
    table = getattr(server, "routes", None)
    if table is None:
        return False
    from aiohttp import web

    present = {(getattr(r, "method", None), getattr(r, "path", None)) for r in table}

    async def answer(produce, data):
        try:
            if threaded:
                import asyncio

                return web.json_response(await asyncio.get_running_loop().run_in_executor(
                    _route_executor(), produce, data))
            return web.json_response(produce(data))
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        except torch.cuda.OutOfMemoryError:
            return web.json_response({"error": "out of memory while computing this answer (a queued run may hold the "
                                               "memory); try again when the run has finished"}, status=503)

    for path, produce in (get or {}).items():
        if ("GET", path) in present:  # the pack imported twice
            continue

        async def get_handler(request, produce=produce):
            return await answer(produce, dict(request.rel_url.query))

        table.get(path)(get_handler)
    for path, produce in (post or {}).items():
        if ("POST", path) in present:
            continue

        async def post_handler(request, produce=produce):
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return web.json_response({"error": "expected a JSON object body"}, status=400)
            return await answer(produce, body)

        table.post(path)(post_handler)
    return True


def user_dir() -> Path:
    """ComfyUI's user folder (--user-directory); outside ComfyUI $STYLEGAN_STUDIO_USER, else
    $STYLEGAN_STUDIO_HOME/user."""
    if IN_COMFYUI:
        getter = getattr(_folder_paths, "get_user_directory", None)
        if getter is not None:
            return Path(getter())
    return _fallback_dir("USER", "user")


def step_costs_path() -> Path:
    """Where the measured seconds per step are kept: <user>/stylegan_studio/step_costs.json."""
    return user_dir() / "stylegan_studio" / "step_costs.json"


class StandInInterrupt(Exception):
    """Outside ComfyUI: the interrupt tests raise where ComfyUI would raise its InterruptProcessingException."""


def interrupt_types() -> tuple[type, ...]:
    """The exception types of a user's Stop: ComfyUI's InterruptProcessingException (and the stand-in)."""
    found = getattr(_mm, "InterruptProcessingException", None) if IN_COMFYUI else None
    return (StandInInterrupt,) + ((found,) if isinstance(found, type) else ())


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed cancel."""
    if IN_COMFYUI:
        _mm.throw_exception_if_processing_interrupted()


PROGRESS_EVENT = "stylegan_studio.progress"   # custom websocket event: step, loss terms, ETA of an optimisation


def _prompt_server():
    """ComfyUI's running PromptServer, or None (no server: tests, scripts, a ComfyUI imported as a library)."""
    try:
        from server import PromptServer

        return PromptServer.instance
    except (ImportError, AttributeError):
        return None


def _executing_ids() -> tuple[Optional[str], Optional[str]]:
    """(prompt id, node id) of the node ComfyUI is running now, or (None, None)."""
    if not IN_COMFYUI:
        return None, None
    try:  # ComfyUI >= 0.3.4x keeps them in a context variable set around each node's execution
        from comfy_execution.utils import get_executing_context

        ctx = get_executing_context()
        if ctx is not None:
            return ctx.prompt_id, ctx.node_id
    except ImportError:  # older ComfyUI: the server remembers the last prompt and node it announced
        pass
    server = _prompt_server()
    if server is None:
        return None, None
    node = getattr(server, "last_node_id", None)
    return getattr(server, "last_prompt_id", None), None if node is None else str(node)


def send_event(event: str, data: dict) -> None:
    """Send a custom websocket event to the browser that queued the running prompt; outside ComfyUI, only log.

    Tests replace this function to record the events."""
    server = _prompt_server() if IN_COMFYUI else None
    client_id = getattr(server, "client_id", None)
    if client_id is None:
        # No server, or a prompt queued without a client id: ComfyUI's own per-node messages are not sent then
        # either, and sending to None would broadcast one user's run to every open browser.
        logger.debug("%s %s", event, data)
        return
    server.send_sync(event, data, client_id)


class Progress:
    """Progress bar (with optional preview image) that is also an interrupt point.

    `update(done, preview=None, losses=None)`; `preview` is a PIL image shown on the node through ComfyUI's own
    progress/preview messages. When `losses` are given (optimising nodes), a `stylegan_studio.progress` event
    (see `status`) also carries the step, the loss terms, the elapsed time and an ETA to the node's status line,
    at most `max_rate` times a second; the last step always goes out, and `finish()` sends the last status of a
    run that ended early (PTI's early stop). `clock` is injectable for tests.
    """

    def __init__(self, total: int, node_id: Optional[str] = None, preview_max_px: int = 512,
                 max_rate: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.total = max(1, int(total))
        self.preview_max_px = preview_max_px
        self._bar = _comfy_utils.ProgressBar(self.total, node_id=node_id) if IN_COMFYUI else None
        self._clock = clock
        self._start = clock()
        self._first: Optional[tuple[int, float]] = None   # (step, time) of the first update: the ETA's origin
        self._min_interval = 1.0 / max_rate if max_rate > 0 else 0.0
        self._last_sent: Optional[float] = None
        self._latest: Optional[dict] = None               # the newest status, sent or held back
        self.prompt_id, self.node_id = _executing_ids()
        if node_id is not None:
            self.node_id = str(node_id)

    def update(self, done: int, preview=None, losses: Optional[dict] = None) -> None:
        throw_if_interrupted()
        if self._bar is not None:
            self._bar.update_absolute(done, self.total,
                                      None if preview is None else ("JPEG", preview, self.preview_max_px))
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug("progress %d/%d %s", done, self.total, losses or "")
        if losses is not None:
            self._report(int(done), losses)

    def status(self, done: int, losses: dict) -> dict:
        """The event payload: `node` and `prompt_id` (strings, or None outside ComfyUI), `step` and `total`,
        `losses` {name: float}, `elapsed` and `eta` in seconds (`eta` None until it can be estimated) and `finished`
        (True on the run's last message)."""
        now = self._clock()
        if self._first is None:
            self._first = (done, now)
        step0, t0 = self._first
        # The rate since the first step, so set-up time (loading networks, computing a prior) does not inflate
        # the ETA; on the first step the set-up is all there is to go on.
        if done > step0:
            per_step = (now - t0) / (done - step0)
        else:
            per_step = (now - self._start) / done if done > 0 else None
        final = done >= self.total
        eta = 0.0 if final else None if per_step is None else per_step * (self.total - done)
        return {"node": self.node_id, "prompt_id": self.prompt_id, "step": done, "total": self.total,
                "losses": {str(k): float(v) for k, v in losses.items()}, "elapsed": round(now - self._start, 3),
                "eta": None if eta is None else round(eta, 3), "finished": final}

    def _report(self, done: int, losses: dict) -> None:
        self._latest = payload = self.status(done, losses)
        now = self._clock()
        if (not payload["finished"] and self._last_sent is not None
                and now - self._last_sent < self._min_interval):
            return  # held back by the throttle; `finish` sends it if it turns out to be the last one
        self._last_sent = now
        send_event(PROGRESS_EVENT, payload)

    def finish(self) -> None:
        """Close the live status of a run that ended before `total` (PTI's early stop) or whose last message
        the throttle held back: send the newest status again, marked done. Nothing if the last step went out."""
        if self._latest is not None and not self._latest["finished"]:
            self._latest = {**self._latest, "finished": True, "eta": 0.0,
                            "elapsed": round(self._clock() - self._start, 3)}
            send_event(PROGRESS_EVENT, self._latest)

    def note(self, message: str) -> None:
        """Send the run's last status again, closed, with `note` (e.g. where a stopped run saved its result)."""
        base = self._latest or self.status(0, {})
        self._latest = {**base, "finished": True, "eta": 0.0, "note": str(message),
                        "elapsed": round(self._clock() - self._start, 3)}
        send_event(PROGRESS_EVENT, self._latest)

    def callback(self) -> Callable[[int, int], None]:
        """A `callback(done, total)` for core functions."""
        return lambda done, total: self.update(done)


LATENT_EXTENSION = ".safetensors"


def next_output_path(filename_prefix: str, extension: str) -> Path:
    """A new file path in the output folder: '<prefix>_00001_<ext>', ComfyUI's naming and counter (one more than
    the highest number with that prefix), refused (ValueError) when the prefix leads out of the output folder
    as written; a linked subfolder of the output folder is followed, as ComfyUI does."""
    root = output_dir()
    if IN_COMFYUI:
        folder, name, counter, _subfolder, _ = _folder_paths.get_save_image_path(filename_prefix, str(root))
    else:
        normal = os.path.normpath(filename_prefix) if filename_prefix else ""
        folder = os.path.join(str(root), os.path.dirname(normal))
        name = os.path.basename(normal)
        if not _inside(os.path.join(folder, name or "_"), root):
            raise ValueError(f"filename_prefix {filename_prefix!r} points outside the output folder {root}; use a "
                             f"name or a subfolder inside it (e.g. 'latents/portrait')")
        counter = 1 + max((_counter_of(n, name) for n in _names_in(folder)), default=0)
    path = Path(folder) / f"{name}_{counter:05}_{extension}"
    while path.exists() or path.is_symlink():  # never overwrite (a file numbered past the counter, a link)
        counter += 1
        path = Path(folder) / f"{name}_{counter:05}_{extension}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _names_in(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _counter_of(file_name: str, prefix: str) -> int:
    """The number of '<prefix>_<number>_...' (ComfyUI's `get_save_image_path` reading), else 0."""
    head = file_name[:len(prefix) + 1]
    if os.path.normcase(head) != os.path.normcase(prefix + "_"):
        return 0
    digits = file_name[len(prefix) + 1:].split("_")[0]
    return int(digits) if digits.isdigit() else 0


def list_latent_files(format: Optional[str] = None) -> list[str]:
    """Latent (and weight-delta) files: those in the input folder, and those in the output folder marked
    ' [output]' (linked files and folders followed, see the module docstring). With `format` (e.g.
    core.latents.LATENT_FORMAT), only the pack's files of that kind, and files that cannot be read as safetensors
    (their loader says what is wrong with them)."""
    names = []
    for folder, tag in ((input_dir(), ""), (output_dir(), " [output]")):
        for n in sorted(walk_files(folder)):
            if not n.endswith(LATENT_EXTENSION):
                continue
            if format is not None and safetensors_format(folder / n) not in (format, None):
                continue
            names.append(n + tag)
    return names


def latent_file_path(name: str, what: str = "latent file") -> Path:
    """The path of a name from `list_latent_files()`, inside the input or output folder as written."""
    folder = output_dir() if name.endswith(" [output]") else input_dir()
    rel = name[: -len(" [output]")] if name.endswith(" [output]") else name
    check_name(rel, what, "the input or output folder")
    found = find_in_folders([folder], rel)
    if found is None:
        raise FileNotFoundError(f"{what} {name!r} not found in {folder}")
    return found


def perceptual_dirs() -> list[Path]:
    """Folders searched for perceptual-loss weights (VGG16, AlexNet, LPIPS): models/perceptual."""
    return folder_dirs(PERCEPTUAL_FOLDER)


def landmark_dirs() -> list[Path]:
    """Folders searched for face-landmark detector weights: models/landmarks."""
    return folder_dirs(LANDMARKS_FOLDER)


def arcface_dirs() -> list[Path]:
    """Folders searched for the ArcFace identity network: models/arcface."""
    return folder_dirs(ARCFACE_FOLDER)


def mapper_dirs() -> list[Path]:
    """Folders searched for latent mappers: models/latent_mappers (the first one receives trained mappers)."""
    return folder_dirs(MAPPER_FOLDER)


def face_parsing_dirs() -> list[Path]:
    """Folders searched for face parsers (BiSeNet .pth, SegFormer folders): models/face_parsing."""
    return folder_dirs(FACE_PARSING_FOLDER)


def encoder_dirs() -> list[Path]:
    """Folders searched for pSp / e4e / ReStyle encoders: models/encoders (the first one receives Hub downloads)."""
    return folder_dirs(ENCODER_FOLDER)


def clip_dirs() -> list[Path]:
    """Folders searched for CLIP weights: ComfyUI's models/text_encoders and models/clip (with any extra paths)."""
    return folder_dirs("clip")


def list_files(dirs: list[Path], suffixes: tuple[str, ...]) -> list[str]:
    """Files with one of `suffixes` (any case) under `dirs`, as paths relative to their folder, sorted and unique;
    linked files and folders are followed (see the module docstring)."""
    suffixes = tuple(x.lower() for x in suffixes)
    names = set()
    for folder in dirs:
        names.update(n for n in walk_files(folder) if n.lower().endswith(suffixes))
    return sorted(names)


PREVIEW_MAX_FRAMES = 256    # frames previewed on a node; longer batches show their first frames
PREVIEW_MAX_PX = 256


def preview_images(images: torch.Tensor) -> list[dict]:
    """Save small JPEG previews of an IMAGE batch in ComfyUI's temp folder and return the `ui` entries that
    show them on the node (empty outside ComfyUI)."""
    if not IN_COMFYUI or images.shape[0] == 0:
        return []
    import uuid

    from .convert import to_pil

    folder = Path(_folder_paths.get_temp_directory())
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"sgs_preview_{uuid.uuid4().hex[:12]}"
    entries = []
    for i, image in enumerate(images[:PREVIEW_MAX_FRAMES]):
        pil = to_pil(image)
        pil.thumbnail((PREVIEW_MAX_PX, PREVIEW_MAX_PX))
        name = f"{prefix}_{i:05d}.jpg"
        pil.save(folder / name, quality=90)
        entries.append({"filename": name, "subfolder": "", "type": "temp"})
    return entries


# ------------------------------------------------------------------------------------------------
# Images that carry latents (Save / Load Image with Latent)

IMAGE_LATENT_EXTENSION = ".png"


def metadata_disabled() -> bool:
    """ComfyUI's --disable-metadata: Save Image then writes no prompt/workflow text (the latent is still written:
    keeping it is the node's purpose)."""
    if not IN_COMFYUI:
        return False
    try:
        from comfy.cli_args import args
    except ImportError:
        return False
    return bool(getattr(args, "disable_metadata", False))


def output_entry(path: Path) -> dict:
    """The `ui` entry that shows a saved file on the node: {filename, subfolder, type 'output'}."""
    rel = Path(os.path.relpath(path, output_dir()))
    return {"filename": rel.name, "subfolder": "" if str(rel.parent) == "." else rel.parent.as_posix(),
            "type": "output"}


_latent_image_cache: dict[tuple, bool] = {}   # (path, mtime, size) -> whether the PNG carries a latent


def list_latent_images() -> list[str]:
    """PNG files for Load Image with Latent: every PNG in the input folder (where uploads go; one without a latent
    is explained when loaded), and the PNGs of the output folder that carry a latent, marked ' [output]' (the
    output folder holds every saved image: only ours are offered). Linked files and folders are followed."""
    from ..core.png_latent import has_png_latent

    names = [n for n in sorted(walk_files(input_dir())) if n.lower().endswith(IMAGE_LATENT_EXTENSION)]
    root = output_dir()
    for n in sorted(walk_files(root)):
        if not n.lower().endswith(IMAGE_LATENT_EXTENSION):
            continue
        try:
            st = (root / n).stat()
        except OSError:
            continue
        key = (str(root / n), st.st_mtime_ns, st.st_size)
        if key not in _latent_image_cache:
            if len(_latent_image_cache) > 65536:
                _latent_image_cache.clear()
            _latent_image_cache[key] = has_png_latent(root / n)
        if _latent_image_cache[key]:
            names.append(n + " [output]")
    return names
