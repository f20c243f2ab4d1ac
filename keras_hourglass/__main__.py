"""`python -m keras_hourglass COMMAND ...`, the same as the `keras-hourglass` console command."""

import sys

from keras_hourglass.cli import main

sys.exit(main())
