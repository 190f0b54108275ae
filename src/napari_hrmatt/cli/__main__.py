"""``python -m napari_hrmatt.cli``."""

import sys

from . import main

sys.exit(main())
