"""modelreg: the Python SDK of the modelreg registry.

from modelreg import Client
"""

from modelreg.client import Client
from modelreg.errors import ModelregError

__all__ = ["Client", "ModelregError"]
__version__ = "0.1.0"
