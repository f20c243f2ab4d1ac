"""Writes the Associative Embedding decoding fixtures with the reference code (not run by the suite).

Run in a scratch environment with PyTorch, munkres, scipy and opencv, beside a checkout of
princeton-vl/pose-ae-train (commit 3c80a16):

    python tests/data/associative_embedding/make_fixtures.py /path/to/pose-ae-train tests/data/associative_embedding

For each case, heatmaps and tags of a few people (Gaussian peaks, one tag value per person plus noise, some joints
left out, background noise) go through the reference's own `test.py` decoding: `HeatmapParser(detection_val=0.1)
.parse` (NMS, top 30, matching by tag, quarter-pixel adjustment) and then `refine` for each person (the second pass
that fills missing joints from the person's mean tag), as its `multiperson` calls them. The fixture holds the
inputs and the reference's people, `[P, 17, 3 + D]`: x, y (pixel corners: add 0.5 to a pixel index), value, tags.
`multiperson_flip.npz` is the reference's whole `multiperson` after its network (`multiperson_case`);
`loss_two_images.npz` its heatmap and tag losses (`loss_case`).
"""

import sys
import types

import numpy as np


def person_maps(rng, size, people, tag_dims, noise):
    joints = 17
    det = rng.uniform(0, noise, (joints, size, size)).astype(np.float32)
    tag = rng.normal(0, 0.05, (joints, size, size, tag_dims)).astype(np.float32)
    grid_y, grid_x = np.mgrid[0:size, 0:size]
    for person in range(people):
        value = rng.normal(person * 3.0, 0.3, tag_dims)
        for joint in range(joints):
            if rng.uniform() < 0.15:  # a joint this person does not show
                continue
            x, y = rng.uniform(1, size - 2, 2)
            peak = rng.uniform(0.3, 1.0)
            det[joint] = np.maximum(det[joint], peak * np.exp(-((grid_x - x) ** 2 + (grid_y - y) ** 2) / 2))
            near = (grid_x - x) ** 2 + (grid_y - y) ** 2 < 9
            tag[joint][near] = value + rng.normal(0, 0.1, (near.sum(), tag_dims))
    return det, tag


def main(reference: str, output: str):
    sys.path.insert(0, reference)
    # test.py imports the COCO tables (and their data files) for the flip table only; the decoding needs none.
    sys.modules["data.coco_pose.ref"] = types.SimpleNamespace(ref_dir=".", flipRef=list(range(17)))
    import test as reference_test

    rng = np.random.default_rng(0)
    cases = [("two_people", 32, 2, 1, 0.05, np.float16), ("four_people_flip_tags", 40, 4, 2, 0.08, np.float16),
             ("crowd", 40, 12, 1, 0.095, np.float16), ("nobody", 24, 0, 1, 0.09, np.float16),
             # noise above the detection threshold: more than 30 people, the reference stops adding joints;
             # float32, so that no two candidates tie (the reference's top-k orders ties its own way)
             ("over_thirty", 24, 3, 1, 0.3, np.float32)]
    for name, size, people, tag_dims, noise, dtype in cases:
        det, tag = person_maps(rng, size, people, tag_dims, noise)
        # stored as float16 where they can (a third of the size): the reference decodes the stored values
        det, tag = (a.astype(dtype).astype(np.float32) for a in (det, tag))
        grouped = reference_test.parser.parse(np.float32([det]), np.float32([tag]))[0]
        for index in range(len(grouped)):
            grouped[index] = reference_test.refine(det, tag, grouped[index])
        np.savez_compressed(f"{output}/{name}.npz", heatmaps=det.transpose(1, 2, 0).astype(dtype),
                            tags=tag.transpose(1, 2, 0, 3).astype(dtype),
                            people=np.asarray(grouped, np.float32).reshape(-1, 17, 3 + tag_dims))
        print(name, np.shape(grouped))


COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]  # the reference's `ref.flipRef`


def multiperson_case(rng, output: str):
    """The reference's whole one-scale `multiperson` after the network: flip merge, decoding, mapping back.

    Its network is replaced by two fixed outputs, for the crop and for its mirror image (the mirror's are the
    first's mirrored back with partners swapped, plus noise), on a 854x480 image (the size of the MPII photo
    of two seated men): the fixture holds both outputs in this project's layout (`[2, H, W, 17]`), the
    reference's crop matrix inverse (`mat`, crop pixel corners -> image), its people in image pixels and
    their scores.
    """
    import test as reference_test

    det, tag = person_maps(rng, 128, 3, 1, 0.05)
    mirror_det = det[COCO_FLIP][:, :, ::-1] + rng.uniform(0, 0.02, det.shape).astype(np.float32)
    mirror_tag = tag[COCO_FLIP][:, :, ::-1, 0] + rng.normal(0, 0.05, det.shape).astype(np.float32)
    half = [a.astype(np.float16) for a in (det, tag[..., 0], mirror_det, mirror_tag)]  # stored as float16:
    det, tag, mirror_det, mirror_tag = (a.astype(np.float32) for a in half)  # the reference decodes those values
    calls = iter([(det, tag), (mirror_det, mirror_tag)])

    def network(inputs):
        heatmaps, tags = next(calls)
        out = np.zeros((1, 1, 68, 128, 128), np.float32)  # [N, stacks, channels, H, W]
        out[0, 0, :17], out[0, 0, 17:34] = heatmaps, tags
        return [out]

    image = np.zeros((480, 854, 3), np.uint8)
    people, scores = reference_test.multiperson(image, network, "single")
    height, width = image.shape[:2]
    crop = reference_test.get_transform((width / 2, height / 2), max(height, width) / 200, (512, 512))
    np.savez_compressed(f"{output}/multiperson_flip.npz",
                        heatmaps=np.stack([det, mirror_det]).transpose(0, 2, 3, 1).astype(np.float16),
                        tags=np.stack([tag, mirror_tag]).transpose(0, 2, 3, 1).astype(np.float16),
                        image_size=np.array([height, width]), mat=np.linalg.pinv(crop)[:2],
                        people=np.asarray(people, np.float32).reshape(-1, 17, 5), scores=np.float32(scores))


def loss_case(rng, output: str):
    """The reference's losses on a batch of two images: `task/loss.py`'s `HeatmapLoss` and `singleTagLoss`.

    Training runs the tag loss as a C/CUDA extension (`extensions/AE/src/my_lib.c`), which needs a GPU; its
    arithmetic for one tag value per joint is `singleTagLoss`'s (run here with PyTorch 0.1's reductions) (pull: each person's mean squared distance
    to its mean tag, averaged over people; push: half the mean over pairs of people of exp(-squared
    distance between their mean tags)), which runs on a CPU. Image 0 has three people (one with no visible
    joint, which counts for nothing), image 1 one person (push 0).
    """
    import torch

    import task.loss as reference_loss

    reference_loss.make_input = lambda t, requires_grad=False, need_cuda=True: t  # no GPU here
    res, joints = 16, 17
    tags = rng.normal(0, 1, (2, joints, res, res)).astype(np.float32)
    predicted = rng.uniform(0, 1, (2, joints, res, res)).astype(np.float32)
    target = rng.uniform(0, 1, (2, joints, res, res)).astype(np.float32)
    masks = (rng.uniform(size=(2, res, res)) > 0.2).astype(np.float32)
    keypoints = np.zeros((2, 30, joints, 2), np.int64)  # the reference's layout: (joint * res^2 + y * res + x, 1)
    for image, people in ((0, (5, 0, 17)), (1, (9,))):
        for person, count in enumerate(people):
            for slot, joint in enumerate(sorted(rng.choice(joints, count, replace=False))):
                y, x = rng.integers(0, res, 2)
                keypoints[image, person, slot] = (joint * res * res + y * res + x, 1)
    detection = reference_loss.HeatmapLoss()(torch.tensor(predicted), torch.tensor(target), torch.tensor(masks))
    flat = torch.tensor(tags).reshape(2, -1, 1)
    # singleTagLoss was written for PyTorch 0.1, whose reductions kept the reduced dimension: run it so
    mean, tensor_sum = torch.mean, torch.Tensor.sum
    torch.mean = lambda x, dim=None: mean(x) if dim is None else mean(x, dim, keepdim=True)
    torch.Tensor.sum = lambda x, dim=None: tensor_sum(x) if dim is None else tensor_sum(x, dim, keepdim=True)
    try:
        push, pull = zip(*(reference_loss.singleTagLoss(flat[i], keypoints[i]) for i in range(2)))
    finally:
        torch.mean, torch.Tensor.sum = mean, tensor_sum
    np.savez_compressed(f"{output}/loss_two_images.npz", tags=tags, predicted=predicted, target=target, masks=masks,
                        keypoints=keypoints, detection=detection.numpy(),
                        push=np.float32([float(p) for p in push]), pull=np.float32([float(p) for p in pull]))


if __name__ == "__main__":
    reference, output = sys.argv[1], sys.argv[2]
    main(reference, output)
    sys.modules["data.coco_pose.ref"].flipRef = COCO_FLIP
    import test as reference_test

    reference_test.flipRef = COCO_FLIP
    multiperson_case(np.random.default_rng(1), output)
    loss_case(np.random.default_rng(2), output)
