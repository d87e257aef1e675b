"""`python -m keras_batchopt compare`: see `keras_batchopt.src.compare`."""

from keras_batchopt.src.compare.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
