"""``python -m credvault``."""

import sys

from credvault_launcher import main

sys.exit(main())
