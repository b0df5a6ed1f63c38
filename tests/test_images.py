"""Reading images as a user's files come: 16-bit and other PIL modes, huge images, broken files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from splitattn.cli import main
from splitattn.data.images import ImageError, image_size, open_image, set_max_pixels
from tests.conftest import foolbox_photos


@pytest.fixture(scope="module")
def gray8(tmp_path_factory):
    """A real photo as 8-bit grayscale (the reference every other encoding must reproduce)."""
    path = tmp_path_factory.mktemp("photos") / "gray8.png"
    with Image.open(foolbox_photos()[0]) as photo:
        photo.convert("L").save(path)
    return path


def test_a_16_bit_png_is_scaled_not_clipped(gray8, tmp_path):
    reference = np.asarray(Image.open(gray8), dtype=np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(reference * 257).save(path)  # the same photo in 16 bits: 0..255 → 0..65535
    with Image.open(path) as raw:
        assert raw.mode == "I;16"
        clipped = np.asarray(raw.convert("RGB"))  # what PIL alone gives: every value above 255 becomes white
        assert (clipped == 255).mean() > 0.9
    got = np.asarray(open_image(path))
    assert got.shape == (*reference.shape, 3)
    np.testing.assert_array_equal(got[..., 0], reference)
    np.testing.assert_array_equal(got, np.asarray(open_image(gray8)))


def test_predict_gives_the_same_classes_for_the_8_and_16_bit_file(gray8, tmp_path, capsys):
    path = tmp_path / "gray16.png"
    Image.fromarray(np.asarray(Image.open(gray8), dtype=np.uint16) * 257).save(path)
    answers = []
    for image in (gray8, path):
        import torch

        torch.manual_seed(0)  # the same random weights for both
        assert main(["predict", "--model", "resnest14", str(image), "--topk", "5"]) == 0
        answers.append(capsys.readouterr().out.splitlines()[1:])
    assert answers[0] == answers[1]


@pytest.mark.parametrize("mode,make", [
    ("I", lambda g: Image.fromarray(g.astype(np.int32) * 257)),  # 32-bit integer, 16-bit range
    ("F", lambda g: Image.fromarray(g.astype(np.float32) / 255)),  # float in [0, 1]
    ("P", lambda g: Image.fromarray(g).convert("P")),
    ("LA", lambda g: Image.fromarray(np.stack([g, np.full_like(g, 128)], -1), "LA")),
])
def test_other_modes_become_the_same_rgb(gray8, mode, make):
    from splitattn.data.images import to_rgb

    gray = np.asarray(Image.open(gray8))
    image = make(gray)
    assert image.mode == mode
    got = np.asarray(to_rgb(image)).astype(int)
    tolerance = 2 if mode == "P" else 0  # a palette of 256 greys rounds
    assert np.abs(got - np.asarray(open_image(gray8)).astype(int)).max() <= tolerance


def test_a_decompression_bomb_is_a_one_line_error_with_the_limit_and_how_to_raise_it(tmp_path, capsys):
    path = tmp_path / "huge.png"
    Image.new("L", (20000, 20000)).save(path)  # 400 megapixels, a few hundred kB on disk
    assert image_size(path) == (20000, 20000)  # the header alone, no limit needed
    with pytest.raises(ImageError) as err:
        open_image(path)
    message = str(err.value)
    assert "20000×20000 = 400,000,000 pixels, above the limit of 89,478,485" in message
    assert "--max-pixels 400000000" in message and "SPLITATTN_MAX_PIXELS=400000000" in message
    assert main(["predict", "--model", "resnest14", str(path)]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "above the limit" in err_lines[0]
    small = tmp_path / "small.png"
    Image.new("RGB", (300, 200)).save(small)
    try:
        set_max_pixels(50_000)
        with pytest.raises(ImageError, match="300×200 = 60,000 pixels, above the limit of 50,000"):
            open_image(small)
        set_max_pixels(0)  # no limit
        assert open_image(small).size == (300, 200)
    finally:
        set_max_pixels(None)


def test_broken_and_missing_files(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="broken.jpg is not a readable image"):
        open_image(broken)
    with pytest.raises(ImageError, match="missing.jpg does not exist"):
        open_image(tmp_path / "missing.jpg")
