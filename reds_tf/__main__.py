import sys

from reds_tf.cli import main

sys.exit(main())
