"""Configuration of the LSO network (paper defaults) and a tiny preset for tests."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["LSOConfig", "SolverForm", "CONFIG_HELP", "add_config_argument"]

SolverForm = Literal["reference", "folded"]


@dataclass(frozen=True)
class LSOConfig:
    """Hyper-parameters of the Latent Spectral Operator.

    Defaults are the paper's configuration (1,942,703 parameters). The scale ratio is not part of
    the configuration: it is read from the input shapes at every call.

    Attributes:
        n_bands: hyperspectral bands (31: 400-700 nm at 10 nm).
        n_msi_bands: multispectral (RGB) bands.
        guide_dim: width of the spatial encoder.
        n_resblocks: residual blocks in the spatial encoder.
        width: channels at every U-Net level.
        patch_size: pixels per side of a patch in the spectral blocks.
        num_token: latent tokens per patch.
        num_basis: harmonics Q of the trigonometric solver.
        heads: attention heads (``width`` must be divisible by it).
        solver: ``"reference"`` (materialised 2Q basis, as the official code) or ``"folded"``
            (one sin, one cos and a Clenshaw recurrence; what export and the runtimes use).
    """

    n_bands: int = 31
    n_msi_bands: int = 3
    guide_dim: int = 128
    n_resblocks: int = 4
    width: int = 64
    patch_size: int = 4
    num_token: int = 8
    num_basis: int = 24
    heads: int = 8
    solver: SolverForm = "folded"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("n_bands", "n_msi_bands", "guide_dim", "n_resblocks", "width", "patch_size",
                     "num_token", "num_basis", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "n_resblocks" else 1):
                raise ValueError(f"LSOConfig.{name} must be a positive integer, got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"LSOConfig.width ({self.width}) must be divisible by heads ({self.heads})")
        if self.solver not in ("reference", "folded"):
            raise ValueError(f"LSOConfig.solver must be 'reference' or 'folded', got {self.solver!r}")

    @property
    def head_dim(self) -> int:
        """Channels per attention head."""
        return self.width // self.heads

    @classmethod
    def paper(cls, **overrides: Any) -> LSOConfig:
        """The paper's configuration (the defaults), with optional overrides."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> LSOConfig:
        """A very small model for fast tests (same structure, narrow widths, few harmonics)."""
        base: dict[str, Any] = dict(guide_dim=16, n_resblocks=1, width=16, num_token=4, num_basis=6, heads=2)
        base.update(overrides)
        return cls(**base)

    def replace(self, **changes: Any) -> LSOConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the architectural fields."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LSOConfig:
        """Build from a dict, ignoring unknown keys (forward compatibility)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in names})


# the command-line spelling, here (not in lso.checkpoint) so that building a parser imports no torch
CONFIG_HELP = ("architecture of a checkpoint: key=value pairs (patch_size=2,width=32; the authors' option names "
               "work too), a JSON object, a JSON file (an option dump such as the authors' vars(opt) is fine: "
               "other options are ignored) or 'paper'/'tiny'. Fields the checkpoint records must agree with it; "
               "needed only for what it does not record (patch_size of a bare state dict)")


def add_config_argument(parser: Any, *, help: str = CONFIG_HELP) -> Any:
    """Add ``--config`` (the one definition every command uses); parse its value with
    :func:`lso.checkpoint.parse_config_arg`."""
    parser.add_argument("--config", metavar="K=V,...|JSON", help=help)
    return parser
