"""`python predict.py --help`: the `keras-hourglass predict` command (`keras_hourglass.cli.predict`), run from the repository."""

import sys

from keras_hourglass.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
