"""`python -m layerlab.status`: the command (`layerlab.workflow.status`)."""

import sys

from layerlab.workflow.status import main

if __name__ == "__main__":
    sys.exit(main())
