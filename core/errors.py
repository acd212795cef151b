"""Exceptions that StyleGAN Studio raises for problems a user can cause and fix."""


class StyleGANStudioError(Exception):
    """Base class of every error the pack raises on purpose."""


class CheckpointError(StyleGANStudioError, ValueError):
    """A checkpoint file is missing, unreadable, corrupt, or not a StyleGAN generator."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asked to run code or import something that a genuine checkpoint never does."""


class LatentError(StyleGANStudioError, ValueError):
    """A latent does not fit the generator or the operation it was given to."""


class LatentFileError(LatentError, CheckpointError):
    """A latent file is unreadable, malformed, or holds an invalid latent; the message names the file and the
    field. It is a LatentError (what the file is about) and a CheckpointError (what file errors always were)."""


class MissingDependencyError(StyleGANStudioError, ImportError):
    """An optional Python package that a feature needs is not installed."""


class MissingWeightsError(StyleGANStudioError, FileNotFoundError):
    """Weights that a feature needs (e.g. VGG16 for perceptual losses) are not on this machine and cannot be
    downloaded; the message names the file, its URL and the folders searched."""


class AlignmentError(StyleGANStudioError, ValueError):
    """Landmarks or images that face alignment cannot work with; the message says what to change."""


# ComfyUI imports a custom node pack under its folder's path (`/home/me/ComfyUI/custom_nodes/stylegan_studio`), and
# shows an error's type as `<module>.<class>`, so every message in the UI and the log would start with the user's
# filesystem path. Give our errors the pack's name there instead (outside ComfyUI `core.errors` is a clean name).
def _name_for_comfyui() -> None:
    if "/" in __name__ or "\\" in __name__:
        for cls in [c for c in globals().values() if isinstance(c, type) and issubclass(c, StyleGANStudioError)]:
            cls.__module__ = "stylegan_studio.errors"


_name_for_comfyui()
