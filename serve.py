"""`python serve.py --help`: the `keras-hourglass serve` command (`keras_hourglass.cli.serve`), run from the repository."""

import sys

from keras_hourglass.cli.serve import main

if __name__ == "__main__":
    sys.exit(main())
