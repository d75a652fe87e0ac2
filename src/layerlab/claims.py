"""`python -m layerlab.claims`: the command (`layerlab.report.claims`)."""

from layerlab.report.claims import main

if __name__ == "__main__":
    main()
