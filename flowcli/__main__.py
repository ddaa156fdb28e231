"""``python -m flowcli`` runs the command line (same as the ``flowcli`` script)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
