"""``python -m omnireid ...`` (also what torchrun runs: ``torchrun ... -m omnireid train ...``)."""
import sys

from omnireid.cli.main import main

sys.exit(main())
