"""Anomaly model: an Isolation Forest over channel transactions that says why (docs/anomaly.md).

    features.py   the feature table (name, SQL, unit, meaning, words) and its DuckDB relations
    model.py      fit, score, persist (joblib file + `anomaly_model` row), lazy loading
    training.py   `train` / `retrain`: per merchant, pooled fallback, flagged rows kept out
    scoring.py    `after_run`: scores, break severities, `anomaly` alerts
    explain.py    per-feature deviations -> words
    feedback.py   a reviewer marks an alert `expected`
    synthetic.py  SYNTHETIC traffic for the benchmark, tests and the demo's history
    stopwatch.py  wall and CPU seconds per step, for the bench
"""
