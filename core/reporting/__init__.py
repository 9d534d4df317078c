"""Reports, reports/<table>.md, from the tracking store's runs joined with a table's spec, along the page: ``select``
(which runs a row averages) -> ``cells`` (numbers, intervals, chance, the paper's) -> ``what_ran`` (what the runs
ran) ->
``claims`` and ``claims_section`` (each paper claim's verdict) -> ``audit`` (the attention audit) -> ``figures`` ->
``report`` (the page, written atomically). No mlflow import: artifacts come through callables (core.tracking's).
"""
