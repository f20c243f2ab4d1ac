"""`python import_weights.py --help`: the `keras-hourglass import-weights` command (`keras_hourglass.cli.import_weights`)."""

import sys

from keras_hourglass.cli.import_weights import main

if __name__ == "__main__":
    sys.exit(main())
