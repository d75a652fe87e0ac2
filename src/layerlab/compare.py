"""`python -m layerlab.compare`: the command (`layerlab.report.compare`)."""

from layerlab.report.compare import main

if __name__ == "__main__":
    main()
