import sys

from multigan.cli import main

sys.exit(main())
