import sys

from volgan.cli import main

sys.exit(main())
