"""medseg: medical image segmentation, from published data layouts to metrics in millimetres."""

from medseg.errors import ConfigError, DataError, MedsegError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "MedsegError", "__version__"]
