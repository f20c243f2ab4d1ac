"""Inference speed of every deployment format at batch 1, against the machine's matrix-multiply speed.

    python -m bench.deploy_speed                       # 2 and 8 stacks at 256x256, 2 threads
    python -m bench.deploy_speed --variant hourglass_small --steps 20

For each model variant it builds the network (random weights: speed does not
depend on their values), exports the SavedModel, converts the four TFLite
variants (int8 calibrated on random crops, which only sets ranges) and
times one crop at a time:

* `keras`: the Keras model called inside a `tf.function` (heatmaps of every
  stack, no decoding);
* `savedmodel`: the exported `crops` signature (last stack, decoding included);
* `tflite-<quantization>`: the converted `crops` signature with the LiteRT
  interpreter (decoding included);
* `onnx-float32`, `openvino-float32`: the same signature as an ONNX file in
  ONNX Runtime and an OpenVINO file in OpenVINO Runtime (CPU, f32 precision;
  `keras_hourglass.interchange`), with the same number of threads;
  `openvino-auto`: the OpenVINO file at the plugin's own precision (bf16 on
  CPUs with bf16 units), with how far its heatmaps move from f32's.

It prints the median milliseconds per image and each one's efficiency: the
model's FLOPs (2 per multiply-add of every convolution, the rest is
negligible) over its time, as a share of the machine's float32
matrix-multiply GFLOP/s: the best of NumPy's BLAS and TensorFlow at
1024 and 2048 square, on the same number of threads. The int8 variants are
held to the same float32 reference. The first line names the CPU and its
integer features (`bench.cpu`): int8 speed depends on them (VNNI or AMX on
x86, the dot-product extensions on Arm).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from bench.cpu import describe_cpu

def seconds_per_call(fn, steps: int, warmup: int = 2, best: bool = False) -> float:
    """Median (or best) wall time of `fn` over `steps` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) if best else statistics.median(times)


def matmul_gflops(sizes=(1024, 2048), steps: int = 10) -> dict:
    """Best float32 matrix-multiply GFLOP/s of NumPy (its BLAS) and of TensorFlow, per square size."""
    import numpy as np
    import tensorflow as tf

    found = {}
    for size in sizes:
        a, b = np.random.default_rng(0).uniform(size=(2, size, size)).astype(np.float32)
        found[f"numpy {size}"] = 2 * size**3 / seconds_per_call(lambda: a @ b, steps, best=True) / 1e9
        x, y = tf.constant(a), tf.constant(b)
        product = tf.function(lambda: tf.linalg.matmul(x, y))
        found[f"tensorflow {size}"] = 2 * size**3 / seconds_per_call(lambda: product().numpy(), steps, best=True) / 1e9
    return found


def model_flops(model) -> float:
    """FLOPs of one forward pass at batch 1: 2 per multiply-add of every convolution."""
    import keras

    total = 0.0
    for layer in model.layers:  # the functional model is flat
        if isinstance(layer, keras.layers.Conv2D):
            kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            total += 2.0 * height * width * kernel_h * kernel_w * channels_in * channels_out / layer.groups
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", nargs="+", default=["hourglass_2stack", "hourglass_8stack"])
    parser.add_argument("--image-size", type=int, default=256, help="square input size (default 256)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow and LiteRT threads (default 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed images per format (default 10)")
    parser.add_argument("--formats", nargs="+", default=["keras", "savedmodel", "float32", "float16", "dynamic", "int8",
                                                          "onnx", "openvino"])
    parser.add_argument("--num-calibration", type=int, default=8,
                        help="random crops that calibrate int8 (default 8: they set ranges only; 200, convert.py's "
                             "default, times a real conversion)")
    parser.add_argument("--keep", help="folder to keep the exported models in (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.steps < 1 or args.num_calibration < 1:
        parser.error("--threads, --steps and --num-calibration must be positive")
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)  # read when NumPy's BLAS loads, just below

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from keras_hourglass import MPII, VARIANTS, HeatmapCodec, build_variant
    from keras_hourglass.export import export_saved_model
    from keras_hourglass.interchange import EXTENSIONS, FORMATS, RuntimePoseModel, convert
    from keras_hourglass.tflite import QUANTIZATIONS, TFLitePoseModel, convert_saved_model, int8_mac_share

    unknown = [v for v in args.variant if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; expected {sorted(VARIANTS)}")
    print(f"CPU: {describe_cpu()}", flush=True)
    references = matmul_gflops()
    peak = max(references.values())
    print(f"float32 matmul on {args.threads} thread(s), GFLOP/s: "
          + ", ".join(f"{name}: {value:.1f}" for name, value in references.items())
          + f"; reference (the best): {peak:.1f}", flush=True)
    folder = args.keep or tempfile.mkdtemp(prefix="deploy_speed_")
    rng = np.random.default_rng(0)
    size = (args.image_size, args.image_size)
    crop = rng.uniform(0, 1, (1, *size, 3)).astype(np.float32)
    rows = []
    for variant in args.variant:
        model = build_variant(variant, MPII.num_keypoints, image_size=size)
        flops = model_flops(model)
        print(f"\n{variant} at {size[0]}x{size[1]}: {model.count_params() / 1e6:.1f} M parameters, "
              f"{flops / 1e9:.1f} GFLOPs per image", flush=True)
        timings = {}
        if "keras" in args.formats:
            call = tf.function(lambda x: model(x, training=False))
            timings["keras"] = seconds_per_call(lambda: [t.numpy() for t in call(crop)], args.steps)
        saved = export_saved_model(model, os.path.join(folder, variant, "saved_model"),
                                   HeatmapCodec(size, flip_index=MPII.flip_index), MPII.names)
        if "savedmodel" in args.formats:
            signature = tf.saved_model.load(saved).signatures["crops"]
            timings["savedmodel"] = seconds_per_call(
                lambda: {k: v.numpy() for k, v in signature(images=tf.constant(crop)).items()}, args.steps)
        calibration = list(rng.uniform(0, 1, (args.num_calibration, *size, 3)).astype(np.float32))
        for quantization in (q for q in QUANTIZATIONS if q in args.formats):
            start = time.perf_counter()
            path = convert_saved_model(saved, os.path.join(folder, variant, f"model-{quantization}.tflite"),
                                       quantization, calibration if quantization == "int8" else None)
            print(f"  converted {quantization} in {time.perf_counter() - start:.0f} s "
                  f"({os.path.getsize(path) / 2**20:.1f} MiB, {100 * int8_mac_share(path):.1f}% of multiply-adds in int8)", flush=True)
            runner = TFLitePoseModel(path, num_threads=args.threads)
            timings[f"tflite-{quantization}"] = seconds_per_call(lambda: runner.predict(crop), args.steps)
        for fmt in (f for f in FORMATS if f in args.formats):
            start = time.perf_counter()
            path = convert(saved, os.path.join(folder, variant, "model" + EXTENSIONS[fmt]), fmt)
            print(f"  converted {fmt} in {time.perf_counter() - start:.0f} s (float32)", flush=True)
            runtime = RuntimePoseModel(path, num_threads=args.threads)
            timings[f"{fmt}-float32"] = seconds_per_call(lambda: runtime.predict(crop), args.steps)
            if fmt == "openvino":  # the plugin's own precision: bf16 where the CPU has bf16 units
                auto = RuntimePoseModel(path, num_threads=args.threads, openvino_precision=None)
                timings["openvino-auto"] = seconds_per_call(lambda: auto.predict(crop), args.steps)
                difference = np.abs(auto.predict(crop)["heatmaps"] - runtime.predict(crop)["heatmaps"]).max()
                print(f"  openvino-auto: heatmaps differ from f32 by up to {difference:.2g} "
                      f"(their largest value {np.abs(runtime.predict(crop)['heatmaps']).max():.2g})", flush=True)
        for name, seconds in timings.items():
            achieved = flops / seconds / 1e9
            rows.append((variant, name, 1000 * seconds, achieved, 100 * achieved / peak))
            print(f"  {name:<16} {1000 * seconds:9.1f} ms/image  {achieved:7.1f} GFLOP/s  "
                  f"{100 * achieved / peak:5.1f}% of matmul", flush=True)
    print(f"\n{describe_cpu()}\nbatch 1, {args.threads} thread(s), median of {args.steps}; matmul reference "
          f"{peak:.1f} GFLOP/s")
    print(f"{'variant':<18}{'format':<18}{'ms/image':>10}{'GFLOP/s':>9}{'% matmul':>10}")
    for variant, name, ms, achieved, share in rows:
        print(f"{variant:<18}{name:<18}{ms:>10.1f}{achieved:>9.1f}{share:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
