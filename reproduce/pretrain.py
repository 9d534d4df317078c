"""The cpu profile's one-time pretraining stage (synthetic stand-in for ImageNet weights): python reproduce/pretrain.py -h."""
import sys

from core.cli import pretrain_main

if __name__ == "__main__":
    sys.exit(pretrain_main())
