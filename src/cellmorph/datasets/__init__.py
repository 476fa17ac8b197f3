"""Dataset indexes: one validated table row per field of view, for any screen layout.

BBBC021, BBBC014 and a user's own plate map are presets that each produce a *plate map*
(a table in the common schema of :mod:`cellmorph.schema`); one function,
:func:`cellmorph.datasets.index.build_index`, validates it and resolves the image paths.
"""
