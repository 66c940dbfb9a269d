"""The pipeline's stages, one module per command: prepare, generate, export, train,
evaluate, cycle, report and demo.

Each reads and writes the files of DESIGN.md's contracts and is callable from Python
(``run(config)``) and from the command line (``main(argv)``); the cycle calls the others.
Everything they share (media, datasets, models, generation, training, verify) lives in the
sibling packages.
"""
