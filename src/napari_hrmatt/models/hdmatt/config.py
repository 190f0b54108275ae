"""The architecture record of the network: :class:`HDMattConfig` and its constants."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["CPC_MODES", "IN_CHANNELS", "STRIDE", "HDMattConfig"]

#: Total stride of the encoder: block origins should be multiples of it.
STRIDE = 8
#: Input channels: RGB, trimap fractions (background, unknown, foreground), coarse alpha.
IN_CHANNELS = 7
CPC_MODES = ("none", "nonlocal", "tgnl")


@dataclass(frozen=True)
class HDMattConfig:
    """Architecture of :class:`HDMattNet` (everything needed to rebuild it).

    Attributes
    ----------
    widths : (int, int, int, int)
        Channels at 1/1 (stem), 1/2, 1/4 and 1/8.
    blocks : (int, int, int)
        Residual blocks at 1/2, 1/4 and 1/8.
    aspp_dilations : tuple of int
        Dilations of ASPP's 3x3 branches at 1/8 (a 1x1 branch is always present).
    aspp_width : int
        Channels per ASPP branch.
    decoder_widths : (int, int, int)
        Decoder channels at 1/4, 1/2 and 1/1.
    cpc : {"tgnl", "nonlocal", "none"}
        Cross-patch context with trimap-guided attention, with plain non-local
        attention, or no cross-patch context (HDMatt's ablation).
    top_k : int
        Context patches kept per query position (HDMatt's K).
    key_width, value_width : int
        Channels of the attention keys and values.
    context_patch : int
        Side of one context patch in 1/8 cells (4 cells = 32 context pixels).
    query_window : int
        Side (odd, in 1/8 cells) of the window whose unknown cells form a query
        position's descriptor.
    coarse_residual : bool
        Predict a correction to the coarse alpha (``coarse + head``, clamped to [0, 1]
        with a straight-through gradient; the head starts at zero, so an untrained
        network returns the coarse alpha) instead of alpha itself (``sigmoid(head)``).
    """

    widths: tuple[int, int, int, int] = (16, 32, 48, 96)
    blocks: tuple[int, int, int] = (1, 1, 2)
    aspp_dilations: tuple[int, ...] = (2, 4, 6)
    aspp_width: int = 48
    decoder_widths: tuple[int, int, int] = (64, 32, 16)
    cpc: str = "tgnl"
    top_k: int = 3
    key_width: int = 32
    value_width: int = 32
    context_patch: int = 4
    query_window: int = 5
    coarse_residual: bool = True

    def __post_init__(self):
        for f in fields(self):  # lists from JSON -> tuples, so the config stays hashable
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(int(v) for v in value))
        object.__setattr__(self, "coarse_residual", bool(self.coarse_residual))
        if len(self.widths) != 4 or len(self.blocks) != 3 or len(self.decoder_widths) != 3:
            raise ValueError(
                "widths needs 4 entries (1/1, 1/2, 1/4, 1/8), blocks 3 and decoder_widths 3; "
                f"got {self.widths}, {self.blocks}, {self.decoder_widths}"
            )
        if min(self.widths + self.decoder_widths + (self.aspp_width,)) < 1:
            raise ValueError("all widths must be positive")
        if self.cpc not in CPC_MODES:
            raise ValueError(f"cpc must be one of {CPC_MODES}, got {self.cpc!r}")
        if self.top_k < 1 or self.context_patch < 1:
            raise ValueError("top_k and context_patch must be at least 1")
        if self.query_window < 1 or self.query_window % 2 == 0:
            raise ValueError(f"query_window must be odd and positive, got {self.query_window}")

    @classmethod
    def from_dict(cls, d: dict | None) -> HDMattConfig:
        """Build from a (JSON) dict; unknown keys are an error, missing keys default."""
        d = dict(d or {})
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(
                f"unknown HDMatt architecture setting(s) {unknown}; "
                f"valid: {sorted(f.name for f in fields(cls))}"
            )
        return cls(**d)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
