"""`python -m layerlab.tensorboard results/<study>`: the command (`layerlab.workflow.tensorboard`)."""

import sys

from layerlab.workflow.tensorboard import main

if __name__ == "__main__":
    sys.exit(main())
