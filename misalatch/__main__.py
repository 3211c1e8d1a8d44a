import sys

from misalatch.cli import main

sys.exit(main())
