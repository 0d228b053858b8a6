import sys

from ktlib.cli import main

sys.exit(main())
