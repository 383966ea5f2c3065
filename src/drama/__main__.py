import sys

from drama.cli import main

sys.exit(main())
