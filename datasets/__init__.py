"""Where users look for the data loaders: they live in `keras_hourglass.data` (installed with the package)."""

from keras_hourglass.data import *  # noqa: F401,F403
from keras_hourglass.data import __all__  # noqa: F401
