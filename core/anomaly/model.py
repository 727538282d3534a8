"""The Isolation Forest: fit, score, persist (joblib file + `anomaly_model` row), load lazily.

A model's *scope* is a merchant id, or "*" for the pooled model that scores merchants with
too little history of their own. It carries what scoring needs besides the trees: the
feature list (in column order), each merchant's profile (`features.profile`), the
per-feature centre and spread of the training rows (to say in words which features made a
transaction unusual), and the two thresholds.

Score: the forest's anomaly score s(x) = 2^(-E[path length] / c(256)) in (0, 1]; about 0.5
is unremarkable, closer to 1 is easier to isolate. A forest cannot tell a value just past the
range it was trained on from one far past it (both end in the same outermost leaf), so a
fee at twice the rate card would score like the highest fee in training. The score is
therefore raised by how far the features lie beyond the training range (0.1%..99.9%
quantiles), in units of each feature's spread, added up over the features (a duplicate
charge is a little out of range on two features at once, which ordinary traffic rarely is):
    score = 1 - (1 - s) * exp(-excess / OUT_OF_RANGE_SCALE)
which is s itself inside the range and tends to 1 far outside it. The alert threshold is the
(1 - ALERT_SHARE_OF_TARGET × target_alert_rate) quantile of the training scores: ordinary
traffic alone fills 30% of the alert budget, the rest is left for what is new (and for days
that differ from the training window).
The urgent threshold is ten times rarer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
from sqlalchemy import select
from sqlmodel import Session

from models.db import get_engine
from models.tables import AnomalyModel

ALERT_SHARE_OF_TARGET = 0.3
OUT_OF_RANGE_SCALE = 2.5  # spreads beyond the training range that close ~63% of the gap to 1
URGENT_SHARE = 0.1
MAX_SAMPLES = 256
THRESHOLD_SAMPLE = 200_000  # training rows scored to place the thresholds (80 above a 0.04% cut)
POOLED = "*"


@dataclass
class Model:
    scope: str
    forest: object  # sklearn.ensemble.IsolationForest
    features: list[str]
    center: np.ndarray
    spread: np.ndarray
    low: np.ndarray  # training range per feature (0.1% and 99.9% quantiles)
    high: np.ndarray
    profiles: dict[str, dict[str, pa.Table]]
    threshold: float
    urgent_threshold: float
    target_alert_rate: float
    window: tuple[date, date]
    rows: int
    excluded: int = 0  # flagged anomalies kept out of training
    id: int | None = field(default=None, compare=False)
    version: int | None = field(default=None, compare=False)


def matrix(table: pa.Table, names: list[str]) -> np.ndarray:
    """The named columns as one C-ordered float32 matrix (what the trees read), filled chunk by
    chunk: converting a chunked column whole first is ten times slower."""
    out = np.empty((table.num_rows, len(names)), np.float32)
    for j, name in enumerate(names):
        i = 0
        for chunk in table[name].chunks:
            out[i:i + len(chunk), j] = chunk.to_numpy(zero_copy_only=False)
            i += len(chunk)
    return out


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): the average path length of an unsuccessful search in a binary search tree of n
    points, which a leaf still holding n training points adds to its depth (Liu et al.)."""
    n = np.asarray(n, np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def leaf_depths(tree) -> np.ndarray:
    """Per node of a fitted tree (`tree_`): its depth plus c(training points in it), the path
    length a point ending there is given."""
    left, right = tree.children_left, tree.children_right
    depth = np.zeros(tree.node_count, np.float64)
    for node in range(tree.node_count):  # children always come after their parent
        if left[node] >= 0:
            depth[left[node]] = depth[right[node]] = depth[node] + 1
    return depth + average_path_length(tree.n_node_samples)


ROWS_PER_TASK = 1 << 16  # rows per thread task: its slice of the matrix stays in cache across the trees


def _trees(forest, n_features: int) -> list:
    if forest.max_features not in (1.0, n_features):  # trees on feature subsets read permuted columns
        raise ValueError("an Isolation Forest with max_features below all features is not supported here")
    return [(e.tree_, leaf_depths(e.tree_)) for e in forest.estimators_]


def _sample(n: int) -> np.ndarray:
    return np.arange(0, n, max(1, n // 4096))


def sort_keys(sample: np.ndarray) -> list[int]:
    """The columns by how few values they take in a sample of rows, for `_forest_part`."""
    return sorted(range(sample.shape[1]), key=lambda j: len(np.unique(sample[:, j])))


def _forest_part(forest, trees: list, part: np.ndarray, keys: list[int]) -> np.ndarray:
    """The forest's score of the rows of `part` (a slice of a C-ordered float32 matrix).

    The trees walk the rows sorted by their values (`keys`: columns of few values first), so
    that rows taking the same turns follow each other: a tree's walk is a chain of branches
    the processor guesses, and on rows in arrival order it guesses half of them wrong. The
    sort costs a tenth of the walks and saves a third of them (1M rows x 100 trees: 2.5 ->
    1.7 CPU s). Each row's path lengths are added up tree by tree as before, then put back in
    the rows' order: the same sums, bit for bit."""
    order = np.lexsort([part[:, j] for j in reversed(keys)])  # lexsort's last key sorts first
    rows = part[order]
    walked = np.zeros(len(part))
    for tree, depth in trees:
        walked += depth[tree.apply(rows)]
    acc = np.empty_like(walked)
    acc[order] = walked
    return 2.0 ** (-acc / (len(trees) * average_path_length([forest.max_samples_])[0]))


def _by_slices(n: int, task) -> np.ndarray:
    """task(start, stop) for every ROWS_PER_TASK rows of n, on every core (the trees' `apply`
    releases the GIL), written into one result."""
    from concurrent.futures import ThreadPoolExecutor

    out = np.zeros(n)

    def run(start: int) -> None:
        stop = min(n, start + ROWS_PER_TASK)
        out[start:stop] = task(start, stop)

    with ThreadPoolExecutor(min(os.cpu_count() or 1, 8)) as pool:
        list(pool.map(run, range(0, n, ROWS_PER_TASK)))
    return out


def forest_score(forest, X: np.ndarray) -> np.ndarray:
    """The forest's own score 2^(-E[path length] / c(max_samples)) in (0, 1], as scikit-learn's
    `-score_samples` computes it, on every core: row slices go to threads and each adds its
    trees' path lengths up itself, with no lock, no per-tree pass over all rows (what
    `score_samples` does) and no copy of the matrix."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    trees, keys = _trees(forest, X.shape[1]), sort_keys(X[_sample(len(X))])
    return _by_slices(len(X), lambda a, b: _forest_part(forest, trees, X[a:b], keys))


def excess(X: np.ndarray, low: np.ndarray, high: np.ndarray, spread: np.ndarray, directions: list[str]) -> np.ndarray:
    """How far the features lie beyond the training range, in spreads, added up (0 inside):
    per feature the distance above its range (if high values are unusual) plus the distance
    below it (if low ones are), in one matrix written in place, then summed per row."""
    highs = np.array([d in ("both", "high") for d in directions])
    lows = np.flatnonzero([d in ("both", "low") for d in directions])
    out = np.subtract(X, high, dtype=np.float64)
    np.maximum(out, 0, out=out)
    out /= spread
    out[:, ~highs] = 0
    if len(lows):
        out[:, lows] += np.maximum(low[lows] - X[:, lows], 0) / spread[lows]
    return np.sum(out, axis=1)


def score(model: "Model", X: np.ndarray | pa.Table) -> np.ndarray:
    """Forest score lifted by the excess beyond the training range (module docstring), a row
    slice at a time on threads: the slice is still in cache when its excess is taken. `X`:
    the feature matrix, or feature rows (a table with the model's feature columns), of which
    each thread makes its own slice of the matrix (`matrix` of all rows first is a tenth of a
    second per million rows on one core)."""
    from core.anomaly.features import BY_NAME

    if isinstance(X, pa.Table):
        table, n = X, X.num_rows

        def rows(a: int, b: int) -> np.ndarray:
            return matrix(table.slice(a, b - a), model.features)

        sample = matrix(table.take(_sample(n)), model.features)
    else:
        X, n = np.ascontiguousarray(X, dtype=np.float32), len(X)

        def rows(a: int, b: int) -> np.ndarray:
            return X[a:b]

        sample = X[_sample(n)]
    trees, keys = _trees(model.forest, len(model.features)), sort_keys(sample)
    directions = [BY_NAME[name].unusual for name in model.features]

    def task(a: int, b: int) -> np.ndarray:
        part = rows(a, b)
        s = _forest_part(model.forest, trees, part, keys)
        e = excess(part, model.low, model.high, model.spread, directions)
        return 1 - (1 - s) * np.exp(-e / OUT_OF_RANGE_SCALE)

    return _by_slices(n, task)


def fit(X: np.ndarray, names: list[str], *, trees: int, target_alert_rate: float, seed: int = 0) -> dict:
    """The fields of a `Model` that training decides: forest, yardsticks, thresholds."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=trees, max_samples=min(MAX_SAMPLES, len(X)), random_state=seed)
    forest.fit(X)
    rng = np.random.default_rng(seed)
    sample = X if len(X) <= THRESHOLD_SAMPLE else X[rng.choice(len(X), THRESHOLD_SAMPLE, replace=False)]
    center = np.median(sample, axis=0)
    q75, q25 = np.quantile(sample, [0.75, 0.25], axis=0)
    # a feature that hardly varies in training still needs a yardstick: its own typical size
    spread = np.maximum((q75 - q25) / 1.349, np.maximum(0.1 * np.abs(center), 0.25))
    low, high = np.quantile(sample, [0.001, 0.999], axis=0)
    fields = dict(forest=forest, features=names, center=center, spread=spread, low=low, high=high,
                  target_alert_rate=target_alert_rate, threshold=0.0, urgent_threshold=0.0)
    s = score(Model(scope="", profiles={}, window=(None, None), rows=0, **fields), sample)
    fields["threshold"] = float(np.quantile(s, 1 - ALERT_SHARE_OF_TARGET * target_alert_rate))
    fields["urgent_threshold"] = max(fields["threshold"], float(
        np.quantile(s, 1 - URGENT_SHARE * ALERT_SHARE_OF_TARGET * target_alert_rate)))
    return fields


# -- persistence ------------------------------------------------------------------------

def save(url: str, model_dir: Path, model: Model) -> Model:
    """Write the file, then the row (a file without a row is never used)."""
    import joblib

    model_dir.mkdir(parents=True, exist_ok=True)
    with Session(get_engine(url)) as s:
        last = s.execute(select(AnomalyModel.version).where(AnomalyModel.scope == model.scope)
                         .order_by(AnomalyModel.version.desc())).scalars().first()
    version = (last or 0) + 1
    name = "pooled" if model.scope == POOLED else model.scope
    path = (model_dir / f"{name}-v{version}.joblib").resolve()
    payload = {k: getattr(model, k) for k in ("scope", "forest", "features", "center", "spread", "low", "high",
                                              "profiles",
                                              "threshold", "urgent_threshold", "target_alert_rate", "window",
                                              "rows", "excluded")}
    joblib.dump(payload, path, compress=3)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with Session(get_engine(url)) as s:
        row = AnomalyModel(scope=model.scope, version=version, path=str(path), sha256=digest,
                           window_first=model.window[0], window_last=model.window[1], rows=model.rows,
                           features=json.dumps(model.features), threshold=model.threshold,
                           urgent_threshold=model.urgent_threshold, target_alert_rate=model.target_alert_rate)
        s.add(row)
        s.commit()
        model.id, model.version = row.id, version
    _cache.pop((url, model.scope), None)
    return model


_cache: dict[tuple[str, str], Model] = {}
_lock = threading.Lock()


class ModelFileError(Exception):
    pass


def latest_row(url: str, scope: str) -> AnomalyModel | None:
    with Session(get_engine(url)) as s:
        return s.execute(select(AnomalyModel).where(AnomalyModel.scope == scope)
                         .order_by(AnomalyModel.version.desc())).scalars().first()


def load(url: str, scope: str) -> Model | None:
    """The newest model of `scope`, read from its file on first use (and again when a newer
    version appears in the database)."""
    row = latest_row(url, scope)
    return None if row is None else from_row(url, row)


def from_row(url: str, row: AnomalyModel) -> Model:
    """The model a row describes: from the cache, else from its file after checking it
    against the row's checksum. No database access (scoring runs it on a thread beside the
    bulk read of the day's records)."""
    with _lock:
        cached = _cache.get((url, row.scope))
        if cached is not None and cached.id == row.id:
            return cached
        import joblib

        path = Path(row.path)
        if not path.is_file():
            raise ModelFileError(f"anomaly model {row.scope} v{row.version}: file {path} is missing "
                                 "(run `recon model train` again)")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != row.sha256:
            raise ModelFileError(f"anomaly model {row.scope} v{row.version}: file {path} does not match its "
                                 "checksum in the database")
        model = Model(**joblib.load(io.BytesIO(data)))
        model.id, model.version = row.id, row.version
        _cache[(url, row.scope)] = model
        return model


def row_for_merchant(url: str, merchant_id: str) -> AnomalyModel | None:
    """The row of the merchant's own newest model, else of the pooled one, else None."""
    return latest_row(url, merchant_id) or latest_row(url, POOLED)


def for_merchant(url: str, merchant_id: str) -> Model | None:
    """The merchant's own model, else the pooled one, else None."""
    row = row_for_merchant(url, merchant_id)
    return None if row is None else from_row(url, row)


def forget() -> None:
    """Drop every loaded model (what a restart does)."""
    with _lock:
        _cache.clear()
