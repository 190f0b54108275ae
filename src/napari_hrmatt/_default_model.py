"""The model used when none is named: ``"ifm"``, information-flow matting (issue #11: it
meets every bar of docs/ifm.md, quality and cost; ``"cf"`` was the default until then).

Kept apart from :mod:`.models` (which imports numpy) so that the command line's ``--help``
imports nothing heavy.
"""

DEFAULT_MODEL = "ifm"
