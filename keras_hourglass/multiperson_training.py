"""Training a multi-person (Associative Embedding) model: `train.py --dataset synthetic-people` or `coco-people`.

What pose-ae-train's `train.py` does, with `model.fit`: whole images with
every person (`keras_hourglass.data.people.people_dataset`), and per stack
the masked heatmap loss plus the grouping losses weighted 1e-3
(`AssociativeEmbeddingTrainer`), averaged over stacks and images as its
`task/pose.py` does. Each validation pass predicts every person of every
validation image with the flip test (`keras_hourglass.multiperson.predict_people`)
and scores them with pycocotools (`KeypointAPCallback`): `val_ap` in the
logs, the best model a multi-person SavedModel (`MultiPersonEstimator`)
under `checkpoints/best`. The run folder is the single-person run's
(`keras_hourglass.training`): `config.json`, `training_log.csv`,
`tensorboard/`, `resume/` (the same command continues the run),
`checkpoints/`, then `eval/metrics.json` (the AP table of the best model)
and `summary.json`.

Not here yet: several machines (`--strategy multiworker`), mixed precision,
quantization-aware training and a TFLite file of a multi-person model;
`check_people_config` refuses them in one line.
"""

from __future__ import annotations

import os
import sys
import time

import keras
from keras import ops

from keras_hourglass.config import Config
from keras_hourglass.losses import TAG_LOSS_WEIGHT, masked_heatmap_loss, tag_losses


class AssociativeEmbeddingTrainer(keras.Model):
    """Fits a network whose stacks output `[heatmaps (J), tags (J), ...]` with Associative Embedding's loss.

    `y` is `people_dataset`'s dict (`heatmaps`, `mask`, `keypoints`). The loss
    is the mean over stacks and images of `masked_heatmap_loss + tag_weight x
    (push + pull)` (pose-ae-train weighs both grouping terms
    `TAG_LOSS_WEIGHT`, 1e-3); the three terms are logged apart
    (`detection_loss`, `push_loss`, `pull_loss`, unweighted, last stack).
    """

    def __init__(self, network: keras.Model, num_joints: int, tag_weight: float = TAG_LOSS_WEIGHT, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.num_joints = num_joints
        self.tag_weight = tag_weight
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("detection_loss", "push_loss", "pull_loss")}

    def call(self, images, training=False):
        return self.network(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The mean over stacks of `masked_heatmap_loss + tag_weight x (push + pull)`, each averaged over images."""
        from keras_hourglass.model import stack_outputs

        joints, total = self.num_joints, 0.0
        stacks = stack_outputs(y_pred)
        for output in stacks:
            output = ops.cast(output, "float32")
            detection = ops.mean(masked_heatmap_loss(output[..., :joints], y["heatmaps"], y["mask"]))
            push, pull = (ops.mean(v) for v in tag_losses(output[..., joints:2 * joints], y["keypoints"]))
            total = total + detection + self.tag_weight * (push + pull)
        for name, value in zip(self.trackers, (detection, push, pull)):
            self.trackers[name].update_state(value)
        return total / len(stacks)

    @property
    def metrics(self):
        return [*super().metrics, *self.trackers.values()]


def check_people_config(config: Config) -> None:
    """One line for each setting a multi-person run does not take (`--refine` is read by single-person decoding
    only: `AssociativeEmbeddingCodec` takes the reference's quarter-pixel step)."""
    refused = [(config.strategy == "multiworker", "--strategy multiworker", "on one machine"),
               (bool(config.qat_from), "--qat-from", "in float32, with no quantization-aware fine-tuning"),
               (config.mixed_precision, "--mixed-precision", "in float32")]
    for given, flag, how in refused:
        if given:
            raise ValueError(f"{flag} is for single-person data sets; --dataset {config.dataset} trains a "
                             f"multi-person model {how}.")


def load_people_data(config: Config):
    """(training images, validation images for AP); generates the synthetic scenes if they are missing."""
    from keras_hourglass.data.people import load_people

    if config.dataset == "synthetic-people":
        from keras_hourglass.data.synthetic import generate_scenes

        train_path = config.train_annotations or os.path.join(config.data_dir, "people_train.json")
        valid_path = config.valid_annotations or os.path.join(config.data_dir, "people_valid.json")
        image_dir = config.image_dir or os.path.join(config.data_dir, "images")
        if not (os.path.isfile(train_path) and os.path.isfile(valid_path)):
            if config.train_annotations or config.valid_annotations:
                raise ValueError(f"synthetic annotation file not found: {train_path} or {valid_path}.")
            print(f"generating the synthetic scenes in {config.data_dir} ({config.num_train} training and "
                  f"{config.num_valid} validation images of 1 to 4 people)", flush=True)
            size = (config.image_size, config.image_size)
            generate_scenes(config.data_dir, "train", config.num_train, config.seed, size)
            generate_scenes(config.data_dir, "valid", config.num_valid, config.seed, size)
    else:
        train_path, valid_path, image_dir = config.train_annotations, config.valid_annotations, config.image_dir
    train = load_people(train_path, image_dir)
    valid = load_people(valid_path, image_dir, with_keypoints=False, max_people=None)
    for people in (train, valid):
        if not len(people):
            raise ValueError(f"{people.source}: no image has a person with a labelled keypoint.")
        print(f"checking the {len(people)} images of {people.source}", flush=True)
        people.check_images()
    return train, valid


def build_network(config: Config, num_joints: int) -> keras.Model:
    """The network of a multi-person run: its variant (a `block="conv"` one) with 2 x joints output channels."""
    from keras_hourglass.training import build_architecture

    network = build_architecture(config, 2 * num_joints)
    if network.outputs[-1].shape[1] * 4 != config.image_size:
        raise ValueError(f"--variant {config.variant}: heatmaps must be a quarter of the input.")
    return network


def run_people_training(config: Config) -> dict:
    """Trains (or resumes) a multi-person run, evaluates its best model with COCO AP; returns the summary."""
    from keras_hourglass.callbacks import ResumeCheckpoint, SavedModelCheckpoint, Throughput
    from keras_hourglass.callbacks.ap import KeypointAPCallback
    from keras_hourglass.callbacks import latest_resume_state
    from keras_hourglass.coco_ap import ap_report, evaluate_people, format_stats
    from keras_hourglass.data.people import PeopleAugmentation, NO_PEOPLE_AUGMENTATION, people_dataset
    from keras_hourglass.fileio import FolderLock, complete_directory, write_json
    from keras_hourglass.multiperson import MultiPersonEstimator, load_multi_person_model
    from keras_hourglass.training import (earlier_train_seconds, learning_rate_schedule, plot_run_curves,
                                          prepare_output, truncate_log)

    started = time.perf_counter()
    check_people_config(config)
    train_people, valid = load_people_data(config)
    spec = train_people.spec
    keras.utils.set_random_seed(config.seed)
    steps = config.steps_per_epoch or len(train_people) // config.batch_size
    if steps < 1:
        raise ValueError(f"{train_people.source}: {len(train_people)} images make no full batch of "
                         f"{config.batch_size}.")
    network = build_network(config, spec.num_keypoints)
    heatmap_size = tuple(network.outputs[-1].shape[1:3])
    dataset = people_dataset(train_people, (config.image_size,) * 2, heatmap_size, config.batch_size, config.sigma,
                             PeopleAugmentation() if config.augment else NO_PEOPLE_AUGMENTATION, config.seed)
    dataset = dataset.repeat() if config.steps_per_epoch else dataset
    model = AssociativeEmbeddingTrainer(network, spec.num_keypoints, config.tag_loss_weight)
    schedule = learning_rate_schedule(config, steps)
    optimizer = keras.optimizers.Adam(schedule) if config.optimizer == "adam" else keras.optimizers.RMSprop(schedule)
    model.compile(optimizer, jit_compile=config.xla)
    model.build((None, config.image_size, config.image_size, 3))

    with FolderLock(config.output):
        prepare_output(config)
        ap = KeypointAPCallback(valid, every=config.eval_every, flip_test=config.flip_test, network=network)
        best = SavedModelCheckpoint(os.path.join(config.output, "checkpoints"), None, spec.names, monitor=ap.monitor,
                                    export_model=network, make_estimator=lambda net: MultiPersonEstimator(
                                        net, spec.names, spec.flip_partners, spec.limbs))
        resume = ResumeCheckpoint(os.path.join(config.output, "resume"), stateful={"best": best})
        callbacks = [Throughput(config.batch_size), ap, best,
                     keras.callbacks.CSVLogger(os.path.join(config.output, "training_log.csv"), append=True),
                     keras.callbacks.TensorBoard(os.path.join(config.output, "tensorboard"), write_graph=False),
                     resume]
        resume.set_model(model)
        initial_epoch = 0
        latest = latest_resume_state(os.path.join(config.output, "resume"))
        if latest:
            initial_epoch = resume.restore(latest)
            truncate_log(os.path.join(config.output, "training_log.csv"), initial_epoch)
            print(f"resuming {config.output} from {latest} (epoch {initial_epoch} of {config.epochs})")
        start = time.perf_counter()
        if initial_epoch < config.epochs:
            model.fit(dataset, epochs=config.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                      shuffle=False, callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
        else:
            print(f"{config.output} has finished all {config.epochs} epochs; evaluating only")
        summary = {"train_seconds": round(time.perf_counter() - start + earlier_train_seconds(config.output), 1)}
        plot_run_curves(config)
        best_path = complete_directory(best.best_path) or complete_directory(best.last_path)
        if config.evaluate and best_path:
            stats, results = evaluate_people(load_multi_person_model(best_path), valid, flip_test=config.flip_test)
            report = ap_report(stats, len(valid), len(results), config.flip_test)
            os.makedirs(os.path.join(config.output, "eval"), exist_ok=True)
            write_json(os.path.join(config.output, "eval", "metrics.json"), report)
            write_json(os.path.join(config.output, "eval", "keypoints_results.json"), results, indent=None)
            print(f"\n{best_path} on {valid.source} ({len(valid)} images, flip test "
                  f"{'on' if config.flip_test else 'off'}), COCO keypoint AP by pycocotools:")
            print(format_stats(stats))
            summary.update(metric="COCO keypoint AP", ap=round(stats["AP"], 4), ap50=round(stats["AP .5"], 4))
        summary["saved_model"] = best_path
        summary["total_seconds"] = round(time.perf_counter() - started, 1)
        write_json(os.path.join(config.output, "summary.json"), summary)
    return summary
