"""Where users look for the callbacks: they live in `keras_hourglass.callbacks` (installed with the package)."""

from keras_hourglass.callbacks import *  # noqa: F401,F403
from keras_hourglass.callbacks import __all__  # noqa: F401
