"""`python -m layerlab.params`: the command (`layerlab.workflow.parameters`)."""

import sys

from layerlab.workflow.parameters import main

if __name__ == "__main__":
    sys.exit(main())
