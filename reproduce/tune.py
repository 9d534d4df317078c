"""Optuna study of lambda and the triplet margin of Fu et al. (AAAI 2019), evaluated on the test split once
(python reproduce/tune.py -h)."""
import sys

from core.tuning import main

if __name__ == "__main__":
    sys.exit(main())
