"""The pack's one named logger, and a helper that warns only once per message key."""

import logging

logger = logging.getLogger("stylegan_studio")

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Log `message` as a warning the first time `key` is seen in this process."""
    if key in _warned:
        return
    _warned.add(key)
    logger.warning(message)
