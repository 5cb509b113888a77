"""The Triton model repository template, shipped inside the toolchain as package data.

Not Python to import: ``aisle export`` copies this directory (configs, ``model.py`` adapters,
tokenizer settings) into the repository it builds, from a source checkout or an installed wheel
alike (``aisle_export.build.repository.TEMPLATE_DIR``). ``model_repository/`` at the top of the source
tree is a link here. This file only makes the directory package data.
"""
