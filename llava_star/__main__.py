"""`python -m llava_star ...` is the same as the `llava-star` console script.

torchrun needs a module to launch: `torchrun --nproc_per_node N -m llava_star generate ...`.
"""

from llava_star.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
