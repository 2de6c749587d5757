"""The SparkApplication's mainApplicationFile (spark-submit runs a file, not a module)."""

import sys

from regflow.render.stage_main import main

sys.exit(main())
