"""What the folder-of-images cache saves: seconds to decode a CIFAR split from its JPEG/PNG files (first run,
strict reader) vs seconds to load the cached uint8 array (every later run). Prints JSON.

    LIT_PAPERS_DATA=../shared/data python tests/benchmarks/cifar_image_folder.py [--split train]

The cache goes to a temporary folder (removed afterwards), never to the user cache or the data root.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from lit_papers.data.image_folder import load_image_folder
from lit_papers.data.root import family_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", default="cifar-10-jpeg")
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    root = family_dir("cifar") / args.folder / args.split
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        x, _, listing = load_image_folder(root, hw=(32, 32), cache_dir=Path(cache), progress=False)
        decode = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_image_folder(root, hw=(32, 32), cache_dir=Path(cache), progress=False)
        cached = time.perf_counter() - t0
    print(json.dumps({"folder": str(root), "images": len(x), "formats": listing.formats,
                      "first_decode_s": round(decode, 2), "decode_images_per_s": round(len(x) / decode),
                      "cached_load_s": round(cached, 3), "speedup": round(decode / cached, 1),
                      "threads": os.environ.get("OMP_NUM_THREADS"), "load": [round(v, 2) for v in os.getloadavg()]}))


if __name__ == "__main__":
    main()
