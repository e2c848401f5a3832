"""`python -m darkjax.data.records verify DIR [--no-crc]`: see darkjax.data.records.verification."""

import sys

from darkjax.data.records.verification import main

sys.exit(main())
