"""Rebuild every report (reports/*.md, reports/figures/) from the MLflow store without training."""
import sys

from core.cli import report_main

if __name__ == "__main__":
    sys.exit(report_main())
