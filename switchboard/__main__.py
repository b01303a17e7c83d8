import sys

from switchboard.gateway.cli import main

sys.exit(main())
