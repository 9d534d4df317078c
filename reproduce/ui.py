"""MLflow's UI on the suite's store, bound to 127.0.0.1, printing each experiment's runs-table URL
(python reproduce/ui.py -h; core/ui.py says why a URL and not a setting of the store)."""
import sys

from core.ui import main

if __name__ == "__main__":
    sys.exit(main())
