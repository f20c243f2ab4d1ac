"""`python convert.py --help`: the `keras-hourglass convert` command (`keras_hourglass.cli.convert`), run from the repository."""

import sys

from keras_hourglass.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
