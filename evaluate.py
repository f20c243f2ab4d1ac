"""`python evaluate.py --help`: the `keras-hourglass evaluate` command (`keras_hourglass.cli.evaluate`), run from the repository."""

import sys

from keras_hourglass.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
