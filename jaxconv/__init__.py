"""jaxconv: convolutions for JAX, written in JAX."""

__version__ = "0.2.0"

from . import lax as lax
from . import nn as nn
from . import padding as padding
from . import shapes as shapes
from ._conv import (
    conv as conv,
)
from ._conv import (
    conv1d as conv1d,
)
from ._conv import (
    conv2d as conv2d,
)
from ._conv import (
    conv3d as conv3d,
)
from ._conv import (
    conv_transpose as conv_transpose,
)
from ._conv import (
    depthwise_conv as depthwise_conv,
)
from ._conv import (
    separable_conv as separable_conv,
)
from ._explain import explain as explain
from .algorithms.plan import Plan as Plan
from .algorithms.profile import Profile as Profile
from .algorithms.profile import current_profile as current_profile
from .algorithms.profile import get_profile as get_profile
from .algorithms.profile import use_profile as use_profile
from .padding import pad as pad
from .patches import fold as fold
from .patches import unfold as unfold
from .pooling import adaptive_avg_pool as adaptive_avg_pool
from .pooling import adaptive_max_pool as adaptive_max_pool
from .pooling import avg_pool as avg_pool
from .pooling import global_avg_pool as global_avg_pool
from .pooling import global_max_pool as global_max_pool
from .pooling import lp_pool as lp_pool
from .pooling import max_pool as max_pool
from .pooling import min_pool as min_pool
from .pooling import sum_pool as sum_pool
from .signal import convolve as convolve
from .signal import correlate as correlate
from .template import match_template as match_template

__all__ = ["lax", "shapes", "padding", "pad", "__version__"]
__all__ += ["unfold", "fold"]
__all__ += ["nn"]
__all__ += [
    "conv", "conv1d", "conv2d", "conv3d", "conv_transpose", "depthwise_conv",
    "separable_conv",
]  # fmt: skip
__all__ += [
    "max_pool", "avg_pool", "min_pool", "sum_pool", "lp_pool",
    "global_max_pool", "global_avg_pool", "adaptive_avg_pool", "adaptive_max_pool",
]  # fmt: skip
__all__ += ["correlate", "convolve", "match_template"]
__all__ += ["explain", "Plan", "Profile", "use_profile", "current_profile",
            "get_profile"]
