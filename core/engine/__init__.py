"""Training and evaluation engine: config -> trained model -> metrics. No tracking code lives here."""
from core.engine.extract import Extracted, extract_features
from core.engine.run import Evaluation, RunResult, evaluate_model, per_query_path, run, train_dir
from core.engine.training import EpochCallback, EpochStats, NonFiniteLossError, train

__all__ = ["EpochCallback", "EpochStats", "Evaluation", "Extracted", "NonFiniteLossError", "RunResult",
           "evaluate_model", "extract_features", "per_query_path", "run", "train", "train_dir"]
