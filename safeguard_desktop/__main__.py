"""`python -m safeguard_desktop`."""

from __future__ import annotations

import sys

from safeguard_desktop.launch import main

sys.exit(main())
