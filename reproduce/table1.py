"""Table 1 of Fu et al. (AAAI 2019): train, evaluate, track and report every row (python reproduce/table1.py -h)."""
import sys

from core.cli import main

if __name__ == "__main__":
    sys.exit(main("table1"))
