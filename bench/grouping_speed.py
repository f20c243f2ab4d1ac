"""The multi-person decoding's cost beside the network's, per 512x512 image on this CPU.

    python -m bench.grouping_speed               # the full-size network and the grouping of 1, 5 and 15 people
    python -m bench.grouping_speed --no-network  # the grouping only

The network is the `associative_embedding` variant (pose-ae-train's: 4
stacks, 256 features, 512x512 input; seeded random weights, nothing is
downloaded), timed on one image after two warm-up calls, as the median of
`--runs` calls. The grouping is `AssociativeEmbeddingCodec.decode_people` on
one image's maps as the flip test leaves them (heatmaps `[128, 128, 17]`,
two tag values per joint): people drawn as Gaussian peaks at random places,
each with its own tag, a fifth of their joints missing (so that the second
pass runs), and background noise below the detection threshold. Prints
milliseconds per image and the grouping's share of the network's time; the
aim is under a tenth.
"""

from __future__ import annotations

import argparse
import numpy as np

from bench.cpu import describe_cpu
from bench.deploy_speed import seconds_per_call

MAP_SIZE = 128  # heatmap side of a 512x512 input
JOINTS = 17


def scene(people: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`(heatmaps [128, 128, 17], tags [128, 128, 17, 2])` of `people` people, as the flip test merges them."""
    rng = np.random.default_rng(seed)
    heatmaps = rng.uniform(0, 0.05, (MAP_SIZE, MAP_SIZE, JOINTS)).astype(np.float32)
    tags = rng.normal(0, 0.05, (MAP_SIZE, MAP_SIZE, JOINTS, 2)).astype(np.float32)
    rows, columns = np.mgrid[0:MAP_SIZE, 0:MAP_SIZE]
    for person in range(people):
        tag = 2.0 * person + rng.normal(0, 0.1, 2)
        for joint in np.flatnonzero(rng.uniform(size=JOINTS) > 0.2):
            x, y = rng.uniform(2, MAP_SIZE - 3, 2)
            distance = (columns - x) ** 2 + (rows - y) ** 2
            heatmaps[..., joint] = np.maximum(heatmaps[..., joint], rng.uniform(0.4, 1.0) * np.exp(-distance / 4))
            tags[distance < 9, joint] = tag
    return heatmaps, tags


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed calls per figure (default 5)")
    parser.add_argument("--people", type=int, nargs="+", default=[1, 5, 15], help="people per scene (default 1 5 15)")
    parser.add_argument("--no-network", action="store_true", help="time the grouping only")
    args = parser.parse_args(argv)
    if args.runs < 1 or min(args.people) < 0:
        parser.error("--runs must be positive and --people not negative")
    from keras_hourglass.codec import AssociativeEmbeddingCodec

    print(describe_cpu(), flush=True)
    network = None
    if not args.no_network:
        import keras

        from keras_hourglass.cli import quiet_tensorflow
        from keras_hourglass.model import build_variant

        quiet_tensorflow()
        keras.utils.set_random_seed(0)
        model = build_variant("associative_embedding", 68)
        image = np.random.default_rng(0).uniform(size=(1, 512, 512, 3)).astype(np.float32)
        network = seconds_per_call(lambda: model.predict_on_batch(image), steps=args.runs)
        print(f"network ({model.count_params():,} parameters), 512x512, batch 1: {network * 1e3:.0f} ms/image "
              f"(x2 with the flip test)", flush=True)
    codec = AssociativeEmbeddingCodec()
    for people in args.people:
        heatmaps, tags = scene(people)
        found = len(codec.decode(heatmaps, tags)[0])
        seconds = seconds_per_call(lambda: codec.decode_people(heatmaps, tags), steps=args.runs)
        share = f", {seconds / network * 100:.1f}% of one network call" if network else ""
        print(f"grouping {people} {'person' if people == 1 else 'people'} ({found} found): {seconds * 1e3:.1f} "
              f"ms/image{share}", flush=True)


if __name__ == "__main__":
    main()
