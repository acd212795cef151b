"""Checkpoints from the Hugging Face Hub, and the licences of well-known public StyleGAN weights."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .errors import MissingDependencyError, StyleGANStudioError
from .files import check_hub_file, download_from_hub
from .log import logger

NVIDIA_NC_LICENSE = (
    "NVIDIA Source Code License-NC: research and evaluation use only, no commercial use "
    "(https://github.com/NVlabs/stylegan3/blob/main/LICENSE.txt). Models fine-tuned from NVIDIA weights inherit it.")

# File-name patterns of NVIDIA's published networks (and rosinality's conversions of them).
_KNOWN_LICENSES = [
    (re.compile(r"stylegan2|stylegan3|stylegan-|ffhq|afhq|metfaces|celebahq|lsun|brecahad|cifar10|550000",
                re.I), NVIDIA_NC_LICENSE),
]


class HubDownloadError(StyleGANStudioError, OSError):
    """A file could not be fetched from the Hugging Face Hub."""


def known_license(name: str) -> str:
    """Licence text for a checkpoint file name where it is known, else ''."""
    for pattern, text in _KNOWN_LICENSES:
        if pattern.search(Path(name).name):
            return text
    return ""


def download_checkpoint(repo_id: str, filename: str, dest_dir: Path, *, revision: Optional[str] = None) -> tuple[Path, str]:
    """Download `filename` from Hub repo `repo_id` into `dest_dir/<repo_id with '--'>/` (reused if present).

    Returns (local path, licence text or ''). Offline, an already downloaded file is used.
    """
    check_hub_file(repo_id, filename)
    local_dir = Path(dest_dir) / repo_id.replace("/", "--")
    target = local_dir / filename
    if target.is_file():
        path = target
    else:
        try:
            path = download_from_hub(repo_id, filename, local_dir, revision=revision)
        except MissingDependencyError:
            raise
        except Exception as e:  # the hub raises many types (HTTP, offline, auth); report them all alike
            raise HubDownloadError(
                f"could not download {filename!r} from the Hugging Face repo {repo_id!r} ({type(e).__name__}: {e}). "
                f"If you are offline, download it yourself and put it in {dest_dir}") from e
    return path, _hub_license(repo_id) or known_license(filename)


def _hub_license(repo_id: str) -> str:
    """The licence declared in the repo's model card, when the hub answers."""
    try:
        import huggingface_hub

        info = huggingface_hub.model_info(repo_id)
        card = getattr(info, "card_data", None) or getattr(info, "cardData", None) or {}
        license_id = card.get("license") if hasattr(card, "get") else getattr(card, "license", None)
        name = card.get("license_name") if hasattr(card, "get") else None
        return " ".join(str(x) for x in (license_id, name) if x)
    except Exception as e:  # licence lookup is best effort; the download already succeeded
        logger.info("could not read the licence of %s from the hub: %s", repo_id, e)
        return ""
