"""``python -m credvault``: the same entry as the console script (agent fast path first)."""

import sys

from credvault.launch import main

sys.exit(main())
