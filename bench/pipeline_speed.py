"""Training-pipeline throughput: images per second with full augmentation.

    python -m bench.pipeline_speed                 # 1280x720 JPEGs, 256x256 crops, batches of 16
    python -m bench.pipeline_speed --threads 1 2   # the same with tf.data limited to 1, then 2 threads

Writes synthetic 1280x720 JPEG files (MPII's image size) to a temporary
folder, then times `datasets.pipeline.build_dataset` (read, decode the needed
window, warp with rotation/scale/flip, colour jitter, encode heatmaps for 2
stacks) after one warm-up pass.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="distinct JPEG files to write (default 256)")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per measurement (default 40)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=256, help="crop side in pixels (default 256)")
    parser.add_argument("--threads", type=int, nargs="*", default=[0],
                        help="tf.data thread-pool sizes to measure; 0 = all cores (default)")
    args = parser.parse_args(argv)
    if min(args.images, args.batches, args.batch_size, args.image_size) < 1:
        parser.error("--images, --batches, --batch-size and --image-size must be positive")

    import tensorflow as tf

    from keras_hourglass.data.mpii import load_mpii_h5
    from keras_hourglass.data.pipeline import build_dataset
    from keras_hourglass.data.synthetic import generate_split
    from keras_hourglass import MPII, HeatmapCodec

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = generate_split(folder, "train", args.images, seed=0, image_size=(720, 1280))
        print(f"wrote {args.images} 1280x720 JPEGs in {time.perf_counter() - start:.1f} s")
        records = load_mpii_h5(path, os.path.join(folder, "images"))
        codec = HeatmapCodec((args.image_size, args.image_size), flip_index=MPII.flip_index)
        print(f"cores: {os.cpu_count()}, batch {args.batch_size}, crop {args.image_size}x{args.image_size}, "
              f"full augmentation, 2 stacks of targets")
        for threads in args.threads:
            dataset = build_dataset(records, codec, batch_size=args.batch_size, num_stacks=2, seed=0).repeat()
            if threads:
                options = tf.data.Options()
                options.threading.private_threadpool_size = threads
                dataset = dataset.with_options(options)
            iterator = iter(dataset)
            for _ in range(5):  # warm-up: tracing, autotuning
                next(iterator)
            start = time.perf_counter()
            for _ in range(args.batches):
                next(iterator)
            seconds = time.perf_counter() - start
            label = f"{threads} thread(s)" if threads else "all cores"
            print(f"{label}: {args.batches * args.batch_size / seconds:.0f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
