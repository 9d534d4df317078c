"""Benchmarks: `python -m core.bench {data,model,eval}`; each reports ratios against a baseline measured in the same run."""
