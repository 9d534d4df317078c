"""Optuna study of lambda and the triplet margin of Fu et al. (AAAI 2019), evaluated on the test split once
(python reproduce/tune.py -h)."""
import sys

from core.cli import tune_main

if __name__ == "__main__":
    sys.exit(tune_main())
