"""``python -m bench``: the same as ``collab bench``."""

import sys

from bench.run import main

sys.exit(main())
