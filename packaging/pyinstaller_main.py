"""Entry script of the PyInstaller build (packaging/safeguard-desktop.spec): launch.main.

Without a subcommand it opens the desktop app, exactly as the `safeguard-desktop` script does.
"""

import sys

from safeguard_desktop.launch import main

if __name__ == "__main__":
    sys.exit(main())
