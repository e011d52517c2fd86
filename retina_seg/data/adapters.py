"""Dataset adapters: each reads one public dataset's official layout and lists its samples with their split.

An adapter only finds files and assigns splits; reading and checking pixels is `data.py`'s job. When
`data.root` does not match the layout, the error says which layout was expected.

Splits and cross-validation folds deal patients, not images, where a dataset says which images show the
same person (`Sample.patient`). CHASE_DB1 does: Image_NNL/Image_NNR are the two eyes of child NN. The
others publish no patient ids, so each of their images is its own patient: DRIVE (40 photographs drawn
from a screening of 400 diabetic patients), STARE, HRF (15 healthy, 15 diabetic retinopathy, 15 glaucoma
photographs), IDRiD's segmentation set and FIVES (file names are an image number and a disease letter;
the paper does not map photographs to patients); the synthetic images are independent by construction,
and a user's `folder` carries no patient ids.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Sequence

import numpy as np

from retina_seg.config import ConfigError, DataConfig
from retina_seg.data.synthetic import LESION_TYPES, SyntheticSpec, ensure_dataset
from retina_seg.errors import UserError

log = logging.getLogger(__name__)
NETPBM = (".pbm", ".pgm", ".ppm", ".pnm")  # the Netpbm family (STARE: colour .ppm photographs, greyscale .pgm labels)
# the image files adapters and `predict` accept; Netpbm files also gzipped, as STARE is distributed
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", *NETPBM, *(f"{s}.gz" for s in NETPBM))


class Sample(NamedTuple):
    """One image with one mask file per output channel (None: that channel is empty for this image),
    its field-of-view mask (None: derive it from the image) and its split (train, val or test);
    `subgroup` (e.g. HRF healthy/dr/glaucoma) stratifies cross-validation folds, `second` is the second
    human observer's vessel mask where the dataset ships one (a reference row in reports). `patient` names
    the person the image is of where the dataset says (CHASE_DB1: both eyes of a child): a patient's images
    always share a split and a fold, so one eye never trains while the other picks the epoch or the
    threshold. None: the dataset publishes no patient ids, and the image is taken as its own patient."""

    image: Path
    masks: tuple
    fov: Path | None
    split: str
    subgroup: str | None = None
    second: Path | None = None
    patient: str | None = None

    @property
    def person(self) -> str:
        """The unit a split deals: the patient, or the image itself where the dataset names none."""
        return self.patient or self.image.name


class LayoutError(UserError):
    """`data.root` does not look like the dataset's official layout."""


def _require_dir(root: Path, relative: str, layout: str) -> Path:
    folder = root / relative
    if not folder.is_dir():
        raise LayoutError(f"data.root '{root}' has no {relative} folder (expected {layout})")
    return folder


def _files(folder: Path, pattern: str, layout: str) -> List[Path]:
    """Files in `folder` whose name matches `pattern` (case-insensitive), sorted by name."""
    regex = re.compile(pattern, re.IGNORECASE)
    found = sorted(p for p in folder.iterdir() if p.is_file() and regex.fullmatch(p.name))
    if not found:
        raise LayoutError(f"'{folder}' holds no files named like {pattern} (expected {layout})")
    return found


def image_stem(path: Path) -> str:
    """The file name without its image suffix, the longest known one (`a.v1.ppm.gz` -> `a.v1`)."""
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _find(folder: Path, stem: str) -> Path | None:
    """The image file named `stem` + any known suffix, matching the suffix case-insensitively."""
    if not folder.is_dir():
        return None
    for path in folder.iterdir():
        if path.is_file() and image_stem(path) == stem and path.name.lower().endswith(IMAGE_SUFFIXES):
            return path
    return None


def _require(path: Path | None, what: str, image: Path) -> Path:
    if path is None:
        raise LayoutError(f"{image}: no {what} found for this image")
    return path


def seeded_split(names: Sequence[str], patients: Sequence[str], val_fraction: float, test_fraction: float,
                 seed: int) -> Dict[str, str]:
    """Assign each item (`names`, each of one of `patients`) to train/val/test, whole patients at a time, by a
    seeded shuffle of the patients; the fractions count patients, val and test get at least one each
    (test_fraction 0: no test items, for datasets whose test split is official). With one image per patient
    this is the shuffle of the images it always was, so such datasets keep their splits."""
    rank = patient_ranks(patients, seed)
    people = len(rank)
    n_test = max(1, round(people * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(people * val_fraction))
    if n_test + n_val >= people:
        what = f"{len(names)} images" + (f" of {people} patients" if people < len(names) else "")
        raise ConfigError(f"data: {what} are too few for a train/val/test split")
    return {name: "test" if rank[patient] < n_test else "val" if rank[patient] < n_test + n_val else "train"
            for name, patient in zip(names, patients, strict=True)}


def patient_ranks(patients: Sequence[str], seed: int) -> Dict[str, int]:
    """Each distinct patient's place in a seeded shuffle of them (taken in order of first appearance)."""
    people = list(dict.fromkeys(patients))
    return {people[index]: rank for rank, index in enumerate(np.random.default_rng(seed).permutation(len(people)))}


def _with_validation(samples: List[Sample], data: DataConfig, seed: int) -> List[Sample]:
    """Carve the validation split out of an official training split (the test split stays official)."""
    train = [s for s in samples if s.split == "train"]
    split = seeded_split([str(s.image) for s in train], [s.person for s in train], data.val_fraction, 0.0, seed)
    return [s._replace(split=split.get(str(s.image), s.split)) for s in samples]


def _held_out_test(samples: List[Sample], test_fraction: float, seed: int) -> List[Sample]:
    """A seeded test split of whole patients taken from the training split, for a copy of a dataset without its
    test set."""
    rank = patient_ranks([s.person for s in samples], seed)
    n_test = max(1, round(len(rank) * test_fraction))
    return [s._replace(split="test") if rank[s.person] < n_test else s for s in samples]


def _seeded(samples: List[Sample], data: DataConfig, seed: int) -> List[Sample]:
    split = seeded_split([s.image.name for s in samples], [s.person for s in samples], data.val_fraction,
                         data.test_fraction, seed)
    return [s._replace(split=split[s.image.name]) for s in samples]


def synthetic(data: DataConfig, seed: int) -> List[Sample]:
    unknown = sorted(set(data.lesion_types) - set(LESION_TYPES))
    if unknown:
        raise ConfigError(f"data.lesion_types has {unknown}: the synthetic dataset draws {list(LESION_TYPES)}")
    folder = ensure_dataset(data.root, SyntheticSpec(data.num_images, data.native_size, seed))
    samples = []
    for image in sorted((folder / "images").glob("*.png")):
        if data.task.value == "lesions":
            masks = tuple(folder / "lesions" / f"{image.stem}_{name}.png" for name in data.lesion_types)
        else:
            masks = (folder / "masks" / image.name,)
        samples.append(Sample(image, masks, folder / "fov" / image.name, "train"))
    return _seeded(samples, data, seed)


DRIVE_LAYOUT = "DRIVE: training|test/images/NN_training.tif|NN_test.tif, 1st_manual/NN_manual1.gif, mask/NN_*_mask.gif"


def drive(data: DataConfig, seed: int) -> List[Sample]:
    root = Path(data.root)
    samples = []
    for part in ("training", "test"):
        folder = _require_dir(root, part, DRIVE_LAYOUT)
        for image in _files(_require_dir(folder, "images", DRIVE_LAYOUT), rf"\d+_{part}\.tiff?", DRIVE_LAYOUT):
            number = image.name.split("_")[0]
            mask = _require(_find(folder / "1st_manual", f"{number}_manual1"), "1st_manual/NN_manual1.gif", image)
            fov = _require(_find(folder / "mask", f"{number}_{part}_mask"), "mask/NN_*_mask.gif FOV", image)
            second = _find(folder / "2nd_manual", f"{number}_manual2")  # shipped for the test images
            samples.append(Sample(image, (mask,), fov, "train" if part == "training" else "test", second=second))
    return _with_validation(samples, data, seed)


CHASE_LAYOUT = "CHASE_DB1: one folder of Image_NN{L,R}.jpg with Image_NN{L,R}_1stHO.png"


def chase_db1(data: DataConfig, seed: int) -> List[Sample]:
    """Conventional split: the first 20 images (patients 1-10) train, the last 8 (patients 11-14) test.
    Image_NNL and Image_NNR are the left and right eye of child NN: its patient (validation takes whole
    children from the training ones)."""
    root = Path(data.root)
    if not root.is_dir():
        raise LayoutError(f"data.root '{root}' is not a folder (expected {CHASE_LAYOUT})")
    images = _files(root, r"Image_\d+[LR]\.jpg", CHASE_LAYOUT)
    samples = []
    for index, image in enumerate(images):
        stem = image_stem(image)
        mask = _require(_find(root, f"{stem}_1stHO"), "Image_NNX_1stHO.png (1st observer)", image)
        samples.append(Sample(image, (mask,), None, "train" if index < data.official_train_count else "test",
                              second=_find(root, f"{stem}_2ndHO"), patient=f"child {stem[len('Image_'):-1]}"))
    patients = {split: {s.patient for s in samples if s.split == split} for split in ("train", "test")}
    both = sorted(patients["train"] & patients["test"])
    if both:
        raise ConfigError(f"data.official_train_count={data.official_train_count} is invalid: expected an even "
                          f"count, so that both eyes of a child share a split ({both[0]} would train and test)")
    return _with_validation(samples, data, seed)


STARE_LAYOUT = "STARE: stare-images/im0001.ppm[.gz] and labels-ah/im0001.ah.ppm|.pgm[.gz] (any Netpbm format)"


def stare(data: DataConfig, seed: int) -> List[Sample]:
    root = Path(data.root)
    images = _files(_require_dir(root, "stare-images", STARE_LAYOUT), r"im\d+\.p[bgpn]m(\.gz)?", STARE_LAYOUT)
    _require_dir(root, "labels-ah", STARE_LAYOUT)
    samples = [Sample(image, (_require(_find(root / "labels-ah", f"{image_stem(image)}.ah"),
                                       "labels-ah/imNNNN.ah.ppm|.pgm (Netpbm, optionally .gz)", image),), None,
                      "train") for image in images]
    return _seeded(samples, data, seed)


HRF_LAYOUT = "HRF: images/01_dr.JPG, manual1/01_dr.tif, mask/01_dr_mask.tif"
HRF_SUBGROUPS = {"h": "healthy", "dr": "diabetic_retinopathy", "g": "glaucoma"}


def hrf(data: DataConfig, seed: int) -> List[Sample]:
    root = Path(data.root)
    images = _files(_require_dir(root, "images", HRF_LAYOUT), r"\d+_(dr|g|h)\.jpe?g", HRF_LAYOUT)
    samples = []
    for image in images:
        stem = image_stem(image)
        mask = _require(_find(_require_dir(root, "manual1", HRF_LAYOUT), stem), "manual1/NN_x.tif", image)
        fov = _require(_find(_require_dir(root, "mask", HRF_LAYOUT), f"{stem}_mask"), "mask/NN_x_mask.tif", image)
        samples.append(Sample(image, (mask,), fov, "train", subgroup=HRF_SUBGROUPS[stem.split("_")[-1].lower()]))
    return _seeded(samples, data, seed)


IDRID_LESIONS = {"MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates",
                 "SE": "4. Soft Exudates", "OD": "5. Optic Disc"}
IDRID_PARTS = {"train": "a. Training Set", "test": "b. Testing Set"}
IDRID_LAYOUT = ("IDRiD: A. Segmentation/1. Original Images/{a. Training Set,b. Testing Set}/IDRiD_NN.jpg and "
                "A. Segmentation/2. All Segmentation Groundtruths/<set>/<N. Lesion>/IDRiD_NN_<MA|HE|EX|SE|OD>.tif")


def idrid(data: DataConfig, seed: int) -> List[Sample]:
    """Multi-label lesions; a lesion file missing for an image means that channel is empty for it.
    A copy without `b. Testing Set` gets a seeded test split of `data.test_fraction` of its training images."""
    unknown = sorted(set(data.lesion_types) - set(IDRID_LESIONS))
    if unknown:
        raise ConfigError(f"data.lesion_types has {unknown}: IDRiD provides {list(IDRID_LESIONS)}")
    root = _require_dir(Path(data.root), "A. Segmentation", IDRID_LAYOUT)
    official_test = (root / "1. Original Images" / IDRID_PARTS["test"]).is_dir()
    samples = []
    for split, part in IDRID_PARTS.items():
        if split == "test" and not official_test:
            continue
        images = _require_dir(root, f"1. Original Images/{part}", IDRID_LAYOUT)
        truths = _require_dir(root, f"2. All Segmentation Groundtruths/{part}", IDRID_LAYOUT)
        for image in _files(images, r"IDRiD_\d+\.jpe?g", IDRID_LAYOUT):
            stem = image_stem(image)
            masks = tuple(_find(truths / IDRID_LESIONS[name], f"{stem}_{name}") for name in data.lesion_types)
            if not any(masks) and not any(_find(truths / lesion, f"{stem}_{code}")
                                          for code, lesion in IDRID_LESIONS.items()):
                raise LayoutError(f"{image}: no ground truth file for any lesion type under '{truths}' "
                                  f"(expected at least one <N. Lesion>/{stem}_<code>.tif)")
            samples.append(Sample(image, masks, None, split))
    for channel, name in enumerate(data.lesion_types):
        if all(s.masks[channel] is None for s in samples):
            raise LayoutError(f"IDRiD lesion {name}: no ground truth file for any image under "
                              f"'{root}/2. All Segmentation Groundtruths/*/{IDRID_LESIONS[name]}'")
    if not official_test:
        samples = _held_out_test(samples, data.test_fraction, seed)
        log.info("IDRiD: no '%s' under %s: testing on %d of the %d training images (seed %d): %s",
                 IDRID_PARTS["test"], root / "1. Original Images", sum(s.split == "test" for s in samples),
                 len(samples), seed, ", ".join(s.image.stem for s in samples if s.split == "test"))
    return _with_validation(samples, data, seed)


FIVES_LAYOUT = "FIVES: train|test/Original/1_A.png and train|test/Ground truth/1_A.png"
FIVES_SUBGROUPS = {"A": "amd", "D": "diabetic_retinopathy", "G": "glaucoma", "N": "normal"}


def fives(data: DataConfig, seed: int) -> List[Sample]:
    root = Path(data.root)
    samples = []
    for split in ("train", "test"):
        originals = _require_dir(root, f"{split}/Original", FIVES_LAYOUT)
        truths = _require_dir(root, f"{split}/Ground truth", FIVES_LAYOUT)
        for image in _files(originals, r"\d+_[A-Z]\.png", FIVES_LAYOUT):
            mask = _require(_find(truths, image_stem(image)), "Ground truth/<same name>.png", image)
            samples.append(Sample(image, (mask,), None, split, subgroup=FIVES_SUBGROUPS[image_stem(image)[-1]]))
    return _with_validation(samples, data, seed)


FOLDER_LAYOUT = "images/ and masks/ (optional fov/) with files matched by name stem"


def folder(data: DataConfig, seed: int) -> List[Sample]:
    """Users' own data: every image in images/ needs a mask of the same stem in masks/."""
    root = Path(data.root)
    images = _files(_require_dir(root, "images", FOLDER_LAYOUT), r".+", FOLDER_LAYOUT)
    masks = _require_dir(root, "masks", FOLDER_LAYOUT)
    samples = [Sample(image, (_require(_find(masks, image_stem(image)), f"mask in '{masks}' with the same name",
                                       image),), _find(root / "fov", image_stem(image)), "train") for image in images]
    return _seeded(samples, data, seed)


# datasets whose test split is official: cross-validation folds divide only their training images
OFFICIAL_TEST = {"drive", "chase_db1", "idrid", "fives"}

ADAPTERS: Dict[str, Callable[[DataConfig, int], List[Sample]]] = {
    "synthetic": synthetic, "drive": drive, "chase_db1": chase_db1, "stare": stare, "hrf": hrf,
    "idrid": idrid, "fives": fives, "folder": folder,
}
