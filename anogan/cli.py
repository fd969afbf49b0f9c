"""The `anogan` command: `anogan train ...`, and the commands of later stages.

Only this module (and the pipelines it calls) configures logging handlers. Every AnoganError
becomes one line on stderr and a non-zero exit code.
"""

import logging
import sys

logger = logging.getLogger(__name__)

USAGE = """usage: anogan COMMAND [options]

commands:
  train     train on healthy images, calibrate, evaluate, track in MLflow
            (anogan train --help)
"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a sub-command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from pipelines.train_healthy import main as train_main

        return train_main(rest)
    print(f"anogan: error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
