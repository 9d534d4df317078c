"""python -m core.bench NAME [args]: run one benchmark (NAME: data, model, eval, train, smoke, storage)."""
import sys


def _data(argv):
    from core.bench import data
    return data.main(argv)


def _model(argv):
    from core.bench import model
    return model.main(argv)


def _train(argv):
    from core.bench import train
    return train.main(argv)


def _smoke(argv):
    from core.bench import smoke
    return smoke.main(argv)


def _eval(argv):
    from core.bench import eval as eval_bench
    return eval_bench.main(argv)


def _storage(argv):
    from core.bench import storage
    return storage.main(argv)


BENCHMARKS = {"data": _data, "model": _model, "eval": _eval, "train": _train, "smoke": _smoke, "storage": _storage}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        sys.exit(f"usage: python -m core.bench {{{','.join(BENCHMARKS)}}} [options]")
    sys.exit(BENCHMARKS[sys.argv[1]](sys.argv[2:]))
