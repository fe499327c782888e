"""``python -m credvault``."""

import sys

from credvault.cli import main

sys.exit(main())
