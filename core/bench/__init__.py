"""Benchmarks: `python -m core.bench {data,model,eval,storage}`; each reports ratios against a baseline measured in the
same run. `servers.py`: throwaway PostgreSQL and MLflow servers (the storage benchmark and tests/test_e2e_servers.py)."""
