"""`python -m layerlab.diff`: the command (`layerlab.workflow.diff`)."""

import sys

from layerlab.workflow.diff import main

if __name__ == "__main__":
    sys.exit(main())
