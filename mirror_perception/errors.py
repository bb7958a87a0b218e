"""Typed errors of the perception package, so callers can tell bad input from a bad checkpoint."""

from __future__ import annotations

from mirror_common.errors import CheckpointError, MirrorError


class PerceptionError(MirrorError):
    """Base class of every error the perception package raises on purpose."""


class ConfigError(PerceptionError, ValueError):
    """A ViCLIP configuration that is inconsistent or names an unknown preset or field."""


class InvalidVideoError(PerceptionError, ValueError):
    """Frames of the wrong type, rank, layout, size, frame count or with non-finite values."""


class InvalidTokensError(PerceptionError, ValueError):
    """Token ids of the wrong rank, length or outside the vocabulary."""


class TokenizerError(PerceptionError):
    """The BPE vocabulary file is missing or malformed."""


class ViCLIPCheckpointError(PerceptionError, CheckpointError):
    """A checkpoint file that cannot be read, or whose content is not a ViCLIP state dict."""


class StateDictMismatchError(ViCLIPCheckpointError):
    """A state dict whose keys or shapes differ from the model built from a given config.

    The three lists are kept as attributes so tools can report or repair them programmatically.
    """

    def __init__(
        self,
        config_name: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        max_listed: int = 12,
    ) -> None:
        self.config_name = config_name
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched
        super().__init__(self._describe(max_listed))

    def _describe(self, max_listed: int) -> str:
        def listing(items: list[str]) -> str:
            shown = ", ".join(items[:max_listed])
            more = len(items) - max_listed
            return shown + (f", ... (+{more} more)" if more > 0 else "")

        parts = [f"state dict does not match ViCLIP config {self.config_name!r}:"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {listing(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s): {listing(self.unexpected)}")
        if self.mismatched:
            shapes = [
                f"{k} (checkpoint {list(got)} vs model {list(want)})" for k, got, want in self.mismatched
            ]
            parts.append(f"{len(self.mismatched)} shape mismatch(es): {listing(shapes)}")
        return " ".join(parts)
