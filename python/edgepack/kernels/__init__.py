"""Low-level kernels: quantize/dequantize, int8 GEMM, sparse matmul, attention, int8 and float32 convolution.

Every function validates its input (dtype, shape) and raises ``TypeError``/``ValueError``
naming the argument; strided inputs are copied once to C order. Kernels release the GIL.
"""

from ._quantize import *  # noqa: F401,F403
from ._quantize import __all__ as _q_all
from ._gemm import *  # noqa: F401,F403
from ._gemm import __all__ as _g_all
from ._sparse import *  # noqa: F401,F403
from ._sparse import __all__ as _s_all
from ._attn import *  # noqa: F401,F403
from ._attn import __all__ as _a_all
from ._conv import *  # noqa: F401,F403
from ._conv import __all__ as _c_all
from ._conv_f32 import *  # noqa: F401,F403
from ._conv_f32 import __all__ as _cf_all

__all__ = [*_q_all, *_g_all, *_s_all, *_a_all, *_c_all, *_cf_all]
