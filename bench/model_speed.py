"""Builds a model variant, prints its summary and measures its speed.

    python -m bench.model_speed --variant hourglass_small
    python -m bench.model_speed --variant hourglass_2stack --batch-size 1 --steps 5

Prints parameter counts, inference milliseconds per image and training images
per second (RMSprop, `HeatmapMSE` on every stack) on random data. With
`--quantization-aware`, also the training speed of the same model wrapped for
quantization-aware fine-tuning (`keras_hourglass.quantization`; its ranges
are left uncalibrated, which changes no cost), as a ratio to the float step.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _time(fn, steps: int) -> float:
    fn()  # trace / warm up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    import keras
    import tensorflow as tf

    from keras_hourglass import MPII, VARIANTS, HeatmapCodec, HeatmapMSE, build_variant

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="hourglass_small")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch size (default 8)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (default 5)")
    parser.add_argument("--no-summary", action="store_true", help="skip the layer-by-layer summary")
    parser.add_argument("--quantization-aware", action="store_true",
                        help="also time a training step of the quantization-aware wrapper")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1:
        parser.error("--batch-size and --steps must be positive")

    keras.utils.set_random_seed(0)
    model = build_variant(args.variant, MPII.num_keypoints)
    if not args.no_summary:
        model.summary(line_length=140)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    moving = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    height, width = model.input_shape[1:3]
    print(f"variant {args.variant}: {trainable:,} trainable parameters, {moving:,} BatchNorm statistics, "
          f"input {height}x{width}, outputs {model.output_names}")

    codec = HeatmapCodec((height, width))
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(args.batch_size, height, width, 3)).astype(np.float32)
    keypoints = rng.uniform(0, min(height, width), size=(args.batch_size, MPII.num_keypoints, 2))
    heatmaps, weights = codec.encode(keypoints, np.ones(keypoints.shape[:2]))
    num_stacks = len(model.outputs)
    targets = (heatmaps,) * num_stacks
    sample_weights = (weights,) * num_stacks

    infer = tf.function(lambda x: model(x, training=False))
    one = tf.constant(images[:1])
    ms = 1000 * _time(lambda: [t.numpy() for t in infer(one)], args.steps)
    print(f"inference, batch 1: {ms:.1f} ms/image")

    model.compile(keras.optimizers.RMSprop(2.5e-4), loss=HeatmapMSE())
    step = lambda: model.train_on_batch(images, targets, sample_weight=sample_weights)  # noqa: E731
    seconds = _time(step, args.steps)
    print(f"training, batch {args.batch_size}: {args.batch_size / seconds:.1f} images/s ({1000 * seconds:.0f} ms/step)")
    if args.quantization_aware:
        from keras_hourglass.quantization import quantization_aware_model

        wrapper = quantization_aware_model(model)
        wrapper.compile(keras.optimizers.RMSprop(2.5e-4), loss=HeatmapMSE())
        step = lambda: wrapper.train_on_batch(images, targets, sample_weight=sample_weights)  # noqa: E731
        aware = _time(step, args.steps)
        print(f"quantization-aware training, batch {args.batch_size}: {args.batch_size / aware:.1f} images/s "
              f"({1000 * aware:.0f} ms/step, {aware / seconds:.2f}x the float step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
