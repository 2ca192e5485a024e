import sys

from vecdash.cli import main

sys.exit(main())
