"""The deployment benchmark's arithmetic: FLOPs counted from the model, not assumed."""

from bench.deploy_speed import model_flops, seconds_per_call


def test_model_flops_counts_every_convolution():
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8 outputs * 3*3*3 MACs * 4 channels
    x = keras.layers.Conv2D(6, 1, strides=2)(x)  # 4*4 outputs * 4 MACs * 6 channels
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.Add()([x, x]))
    assert model_flops(model) == 2 * (8 * 8 * 27 * 4 + 4 * 4 * 4 * 6)


def test_seconds_per_call_calls_warmup_then_steps_and_takes_the_median_or_best():
    import time

    durations = iter([0.5, 0.5, 0.03, 0.01, 0.02])  # two warm-up calls (not timed), then three timed ones
    calls = []

    def work():
        calls.append(1)
        time.sleep(next(durations))

    median = seconds_per_call(work, steps=3, warmup=2)
    assert len(calls) == 5 and 0.02 <= median < 0.03  # the warm-up's 0.5 s are not counted
    durations = iter([0.0, 0.03, 0.01, 0.02])
    assert 0.01 <= seconds_per_call(work, steps=3, warmup=1, best=True) < 0.02


def test_the_multiworker_benchmark_reads_the_last_epoch_rate_that_train_prints():
    import pytest

    from bench.multiworker_speed import images_per_second

    log = ("epoch 1: 10 steps of 16 images in 9.0 s: 17.8 images/s\n10/10 - 12s - 1s/step - loss: 0.5\n"
           "epoch 2: 10 steps of 16 images in 3.2 s: 50.0 images/s\n")
    assert images_per_second(log) == 50.0
    with pytest.raises(RuntimeError, match="no epoch rate"):
        images_per_second("10/10 - 12s - 1s/step")


def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo():
    from bench.cpu import FEATURES, cpu_flags, describe_cpu

    x86 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_vnni\n\nprocessor\t: 1\n"
    assert cpu_flags(x86) == {"fpu", "avx2", "avx512f", "avx512_vnni"}
    assert cpu_flags("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n") >= {"asimddp", "i8mm"}
    assert cpu_flags("nothing here") == set()
    line = describe_cpu()
    assert "logical CPUs; integer features: " in line
    assert all(name in FEATURES for name in line.split("integer features: ")[1].split(";")[0].split()
               if name != "none" and name != "found")


def test_the_grouping_benchmark_draws_people_that_the_codec_finds():
    from bench.grouping_speed import scene
    from keras_hourglass.codec import AssociativeEmbeddingCodec

    for people in (0, 1, 5):
        heatmaps, tags = scene(people)
        assert heatmaps.shape == (128, 128, 17) and tags.shape == (128, 128, 17, 2)
        assert len(AssociativeEmbeddingCodec().decode(heatmaps, tags)[0]) == people


def test_the_server_load_benchmark_runs_on_the_demo_model(shared_data, capsys):
    """`bench.serve_speed` end to end, briefly: a real server on loopback, then the same model in-process."""
    from bench.serve_speed import main

    image = sorted((shared_data / "mpii" / "images").glob("*.jpg"))[0]
    assert main(["--image", str(image), "--requests", "4", "--clients", "2", "--in-process", "2"]) == 0
    printed = capsys.readouterr().out
    assert "4 requests from 2 clients" in printed and "errors 0" in printed
    assert "server exit status after SIGTERM: 0" in printed and "in-process, one image at a time" in printed
