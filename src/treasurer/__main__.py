"""``python -m treasurer``: the command line (needs ``pip install treasurer[cli]``)."""

import sys

try:
    from ._ops.cli import main
except ImportError as exc:  # pragma: no cover - only without the cli extra
    sys.exit(f"treasurer's command line needs its extra: pip install 'treasurer[cli]' ({exc})")

main()
