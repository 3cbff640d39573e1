"""Train a difficulty estimator on a table directory (or a data set's levels).

Same as ``tts-selector train-estimator``; kept here so training lives beside its outputs:

    python training/train_estimator.py tables/smollm2-135m__arith-check__arithmetic --features tfidf minilm
    python training/train_estimator.py --dataset math500 --target level --features tfidf minilm
"""
import sys

from selector.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-estimator", *sys.argv[1:]]))
