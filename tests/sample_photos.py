"""Write sample photos into a folder, for trying imgurbox offline (README "Try it
offline"): small real JPEGs from tests/imagefiles.py, each different, so no photos of
your own are needed.

    python3 tests/sample_photos.py FOLDER [COUNT]      # default 12: photo01.jpg ...
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imagefiles import jpeg  # noqa: E402


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not 1 <= len(argv) <= 2 or (len(argv) == 2 and not argv[1].isdigit()):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    folder, count = argv[0], int(argv[1]) if len(argv) == 2 else 12
    os.makedirs(folder, exist_ok=True)
    for number in range(1, count + 1):
        with open(os.path.join(folder, "photo%02d.jpg" % number), "wb") as f:
            f.write(jpeg(number))
    print("wrote %d sample photos into %s" % (count, folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
