"""An HDMatt-style matting network: a patch encoder-decoder with cross-patch context.

The package, one concern per module:

- :mod:`.config`: the architecture record (:class:`HDMattConfig`) and its constants;
- :mod:`.layers`: the convolution blocks (conv-BN-ReLU, residual block, ASPP);
- :mod:`.context`: HDMatt's Cross-Patch Context module (context selection, TGNL);
- :mod:`.network`: the network (:class:`HDMattNet`), its inputs and its measured
  receptive field;
- :mod:`.weights`: the weights file format and the weights shipped in the package;
- :mod:`.model`: :class:`HDMattModel`, the network as a model of the engine
  (registered as ``model="hdmatt"``).

How the network was trained and how it compares with the closed-form solver on held-out
photos is in ``docs/deep_model.md``.
"""

# "X as X": importable from here as before the split, though not in __all__.
from .config import CPC_MODES, HDMattConfig
from .config import IN_CHANNELS as IN_CHANNELS
from .config import STRIDE as STRIDE
from .context import CrossPatchContext as CrossPatchContext
from .context import MissingContextError, select_context, trimap_guided_attention
from .model import HDMattModel
from .network import (
    HDMattNet,
    context_inputs,
    count_parameters,
    receptive_radius,
    trimap_fractions,
)
from .network import network_input as network_input
from .weights import DEFAULT_WEIGHTS, WeightsError, load_weights, save_weights
from .weights import WEIGHTS_FORMAT as WEIGHTS_FORMAT
from .weights import WEIGHTS_VERSION as WEIGHTS_VERSION

__all__ = [
    "CPC_MODES",
    "DEFAULT_WEIGHTS",
    "HDMattConfig",
    "HDMattModel",
    "HDMattNet",
    "MissingContextError",
    "WeightsError",
    "context_inputs",
    "count_parameters",
    "load_weights",
    "receptive_radius",
    "save_weights",
    "select_context",
    "trimap_fractions",
    "trimap_guided_attention",
]
