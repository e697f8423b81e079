"""The strict image reader and the setup check (issue 17, case 2) on corrupted temporary copies of real images."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from lit_papers.data.download import DatasetError, DatasetMissingError
from lit_papers.data.images import ImageRef, check_image, image_size, read_image, verify_images


@pytest.fixture
def jpeg(shared_data, tmp_path):
    """A temporary copy of a real VOC JPEG (500 x 353) and its size."""
    src = shared_data / "voc" / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000001.jpg"
    dst = tmp_path / "000001.jpg"
    shutil.copyfile(src, dst)
    return dst, (500, 353)


def _truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_good_jpeg_passes_every_mode(jpeg):
    path, hw = jpeg
    image = read_image(path, expected_hw=hw)
    assert image.shape == (*hw, 3) and image.dtype == np.uint8
    reference = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # OpenCV's own decode as the oracle
    assert np.array_equal(image, reference)
    for mode in ("header", "full", "none"):
        check_image(ImageRef(path, hw), mode)
    assert image_size(path) == hw


def test_truncated_jpeg_is_an_error_naming_the_file(jpeg):
    path, hw = jpeg
    _truncate(path)
    assert cv2.imread(str(path)) is not None  # what a plain reader does: a half-grey image, no error
    with pytest.raises(DatasetError, match=r"000001\.jpg.*truncated JPEG"):
        read_image(path, expected_hw=hw)
    with pytest.raises(DatasetError, match=r"000001\.jpg.*truncated JPEG"):  # the fast check sees it too
        check_image(ImageRef(path, hw), "header")


def test_jpeg_padding_after_the_end_marker_is_accepted(jpeg):
    path, hw = jpeg
    path.write_bytes(path.read_bytes() + b"\x00" * 5000)  # longer than the tail the header check reads
    check_image(ImageRef(path, hw), "header")
    check_image(ImageRef(path, hw), "full")


def test_truncated_png_and_wrong_size(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    check_image(ImageRef(path, (20, 30)), "header")
    with pytest.raises(DatasetError, match=r"a\.png is 30x20 but instances\.json says 31x20"):
        check_image(ImageRef(path, (20, 31), "instances.json"), "header")
    with pytest.raises(DatasetError, match=r"a\.png is 30x20"):
        read_image(path, expected_hw=(20, 31))
    _truncate(path, 0.8)
    with pytest.raises(DatasetError, match=r"a\.png.*truncated PNG"):
        check_image(ImageRef(path, (20, 30)), "header")


def test_verify_images_collects_every_bad_file(jpeg, tmp_path):
    path, hw = jpeg
    good = [ImageRef(path, hw)]
    cut = tmp_path / "cut.jpg"
    shutil.copyfile(path, cut)
    _truncate(cut)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8not an image\xff\xd9")
    refs = good + [ImageRef(cut, hw), ImageRef(tmp_path / "missing.jpg", hw), ImageRef(garbage, hw)]
    bad = verify_images(refs, "header", workers=2)
    assert sorted(p.name for p, _ in bad) == ["cut.jpg", "garbage.jpg", "missing.jpg"]
    assert verify_images(refs, "none") == []
    full = dict(verify_images(refs, "full", workers=2))
    assert "truncated" in full[cut] and "not found" in full[tmp_path / "missing.jpg"]
    with pytest.raises(DatasetMissingError, match="missing.jpg"):
        check_image(ImageRef(tmp_path / "missing.jpg"), "header")
