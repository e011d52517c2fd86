"""Reading samples into checked arrays, preprocessing, FOV derivation, and one-line errors for bad files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from retina_seg.config import ConfigError, validate
from retina_seg.data.adapters import Sample, seeded_split
from retina_seg.data.loading import DataError, derive_fov, load_arrays, load_splits, preprocess_image, read_mask
from retina_seg.data.synthetic import generate_fundus
from tests.conftest import compose_config


def configs(tmp_path, *overrides):
    return validate(compose_config([f"data.root={tmp_path}", "image_size=64", "data.num_images=10", *overrides]))


def test_seeded_split_is_disjoint_complete_and_repeatable():
    stems = [f"{i:02d}" for i in range(20)]
    split = seeded_split(stems, stems, 0.15, 0.2, seed=1)
    assert sorted(split) == stems
    assert [list(split.values()).count(s) for s in ("train", "val", "test")] == [13, 3, 4]
    assert seeded_split(stems, stems, 0.15, 0.2, seed=1) == split
    assert seeded_split(stems, stems, 0.15, 0.2, seed=2) != split
    # one image per patient: the seeded shuffle of the images it was before patients were known, so the recorded
    # results of such datasets (e.g. IDRiD's held-out test images) are reproduced by their seed
    order = np.random.default_rng(1).permutation(20)
    assert {stems[i] for i in order[:4]} == {k for k, v in split.items() if v == "test"}
    assert {stems[i] for i in order[4:7]} == {k for k, v in split.items() if v == "val"}


def test_seeded_split_deals_whole_patients():
    stems = [f"{i:02d}{eye}" for i in range(10) for eye in "LR"]  # two eyes of each of ten patients
    for seed in range(20):
        split = seeded_split(stems, [stem[:2] for stem in stems], 0.2, 0.2, seed)
        assert all(split[f"{i:02d}L"] == split[f"{i:02d}R"] for i in range(10))
        assert [list(split.values()).count(s) for s in ("train", "val", "test")] == [12, 4, 4]  # patients counted


def test_synthetic_splits_load_as_arrays(tmp_path):
    config = configs(tmp_path)
    splits = load_splits(config.data, config.preprocess, seed=3)
    assert sum(len(a) for a in splits.values()) == 10
    train = splits["train"]
    assert train.images[0].shape == (64, 64, 3) and train.images[0].dtype == np.uint8
    assert train.masks[0].shape == (64, 64, 1) and set(np.unique(train.masks[0])) == {0, 1}
    assert train.fov[0].dtype == bool and train.fov[0][32, 32]


def test_lesion_task_has_one_channel_per_lesion_type(tmp_path):
    config = configs(tmp_path, "data.task=lesions", "data.lesion_types=[MA,EX]")
    assert config.data.channels == ["MA", "EX"]
    assert load_splits(config.data, config.preprocess, seed=3)["test"].masks[0].shape[-1] == 2


def test_unknown_synthetic_lesion_type_is_rejected(tmp_path):
    config = configs(tmp_path, "data.task=lesions", "data.lesion_types=[MA,OD]")
    with pytest.raises(ConfigError, match=r"data.lesion_types has \['OD'\]"):
        load_splits(config.data, config.preprocess, seed=3)


def test_patch_sampling_keeps_native_resolution_capped_at_max_side(tmp_path):
    config = configs(tmp_path, "data.sampling=patches", "data.native_size=128", "data.max_side=96")
    splits = load_splits(config.data, config.preprocess, seed=3)
    assert {image.shape for arrays in splits.values() for image in arrays.images} == {(96, 96, 3)}


def write(path, pixels):
    assert cv2.imwrite(str(path), pixels)
    return path


def test_mask_of_another_size_names_the_file(tmp_path):
    image = write(tmp_path / "a.png", np.zeros((32, 32, 3), np.uint8))
    mask = write(tmp_path / "a_mask.png", np.zeros((16, 32), np.uint8))
    with pytest.raises(DataError, match=r"a_mask.png: mask is 32x16 but its image a.png is 32x32"):
        load_arrays([Sample(image, (mask,), None, "train")], configs(tmp_path).preprocess)


def test_non_binary_mask_names_the_file_and_the_rule(tmp_path):
    mask = write(tmp_path / "grey.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    with pytest.raises(DataError, match=r"grey.png: mask is not binary \(64 grey levels; expected two levels"):
        read_mask(mask)


@pytest.mark.parametrize("levels", [(0, 1), (0, 255), (0, 76)])
def test_two_level_masks_are_binary(tmp_path, levels):
    pixels = np.full((8, 8), levels[0], np.uint8)
    pixels[2:5, 3:6] = levels[1]
    assert read_mask(write(tmp_path / "m.png", pixels)).sum() == 9


def test_gif_palette_and_one_bit_png_masks(tmp_path):
    pixels = np.zeros((16, 16), np.uint8)
    pixels[4:8, 4:12] = 255
    Image.fromarray(pixels).convert("P").save(tmp_path / "m.gif")
    Image.fromarray(pixels).convert("1").save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.gif").sum() == 32 and read_mask(tmp_path / "m.png").sum() == 32


def test_jpeg_compressed_mask_is_thresholded_with_a_warning(tmp_path, caplog):
    pixels = np.zeros((64, 64), np.uint8)
    cv2.circle(pixels, (32, 32), 12, 255, -1)
    path = tmp_path / "mask.jpg"
    cv2.imwrite(str(path), pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
    mask = read_mask(path)
    assert abs(int(mask.sum()) - int((pixels > 0).sum())) < 30
    assert "JPEG-compressed?" in caplog.text


def test_palette_gif_with_a_grey_background_is_binary_without_a_warning(tmp_path, caplog):
    """DRIVE's 2nd_manual GIFs: palette index 0 is grey 3, index 1 grey 253 (OpenCV decodes those two levels)."""
    truth = np.zeros((16, 16), np.uint8)
    truth[4:8, 4:12] = 1
    gif = Image.fromarray(truth, mode="P")
    gif.putpalette([3, 3, 3, 253, 253, 253])
    gif.save(tmp_path / "02_manual2.gif")
    assert set(np.unique(cv2.imread(str(tmp_path / "02_manual2.gif"), cv2.IMREAD_GRAYSCALE))) == {3, 253}
    with caplog.at_level("WARNING"):
        np.testing.assert_array_equal(read_mask(tmp_path / "02_manual2.gif"), truth)
    assert caplog.records == []


def test_thresholded_masks_are_counted_in_one_warning_per_dataset(tmp_path, caplog):
    samples = []
    for index in range(5):
        fundus = generate_fundus(64, np.random.default_rng(index))
        image = write(tmp_path / f"{index}.png", cv2.cvtColor(fundus.image, cv2.COLOR_RGB2BGR))
        mask = tmp_path / f"{index}_mask.{'jpg' if index < 3 else 'png'}"  # three JPEG-compressed masks
        cv2.imwrite(str(mask), fundus.vessels * 255, [cv2.IMWRITE_JPEG_QUALITY, 90])
        samples.append(Sample(image, (mask,), None, "train"))
    with caplog.at_level("WARNING"):
        arrays = load_arrays(samples, configs(tmp_path).preprocess)
    [record] = caplog.records
    assert record.getMessage().startswith("3 of 5 mask files have more than two grey levels (JPEG-compressed?)")
    assert all(set(np.unique(m)) == {0, 1} for m in arrays.masks)


def test_truncated_image_names_the_file(tmp_path):
    image = write(tmp_path / "a.png", np.full((64, 64, 3), 128, np.uint8))
    image.write_bytes(image.read_bytes()[:40])
    with pytest.raises(DataError, match=r"a.png: unreadable image"):
        load_arrays([Sample(image, (None,), None, "train")], configs(tmp_path).preprocess)


def test_fov_is_derived_from_the_red_channel_when_not_shipped(tmp_path):
    fundus = generate_fundus(128, np.random.default_rng(0))
    derived = derive_fov(fundus.image, threshold=20)
    agreement = (derived == fundus.fov).mean()
    assert agreement > 0.99
    image = write(tmp_path / "f.png", cv2.cvtColor(fundus.image, cv2.COLOR_RGB2BGR))
    arrays = load_arrays([Sample(image, (None,), None, "test")], configs(tmp_path).preprocess)
    assert arrays.masks[0].sum() == 0 and (arrays.fov[0] == fundus.fov.astype(bool)).mean() > 0.99


def test_green_channel_and_clahe_preprocessing(tmp_path):
    image = generate_fundus(128, np.random.default_rng(1)).image
    green = preprocess_image(image, configs(tmp_path, "preprocess.green_channel=true").preprocess)
    assert (green[..., 0] == image[..., 1]).all() and (green[..., 2] == image[..., 1]).all()
    equalised = preprocess_image(image, configs(tmp_path, "preprocess.clahe=true").preprocess)
    inside = generate_fundus(128, np.random.default_rng(1)).fov > 0
    assert equalised[inside].std() > image[inside].std()


def test_every_bad_file_is_named_at_once(tmp_path):
    """Truncated JPEG, PNG and TIFF, a zero-byte file and a mask of another size: one line each."""
    from tests import layouts

    expected = layouts.folder_with_bad_files(tmp_path / "own")
    config = validate(compose_config(["data=folder", f"data.root={tmp_path}/own"]))
    with pytest.raises(DataError) as caught:
        load_splits(config.data, config.preprocess, config.seed)
    lines = {line.split(": ")[0].rsplit("/", 1)[1]: line for line in str(caught.value).splitlines()}
    assert sorted(lines) == sorted(expected), lines
    for name, problem in expected.items():
        assert f"/{name}: {problem}" in lines[name], lines[name]
