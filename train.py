"""`python train.py --help`: the `keras-hourglass train` command (`keras_hourglass.cli.train`), run from the repository."""

import sys

from keras_hourglass.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
