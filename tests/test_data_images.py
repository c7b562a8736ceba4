"""Reading single images: formats, the [0, 1] rule, and every bad file named."""
import numpy as np
import pytest
import tifffile
from PIL import Image

from emlib.data.images import PERCENTILES, image_shape, read_raw, read_unit, to_unit_range


def test_uint8_is_divided_by_255_and_wider_types_use_their_range(tmp_path):
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    tifffile.imwrite(tmp_path / "a.tif", pixels)
    assert np.array_equal(read_unit(tmp_path / "a.tif"), pixels / np.float32(255))
    dim = np.full((8, 8), 10, np.uint8)
    dim[0, 0] = 20
    assert read_unit_of(tmp_path, dim).max() == pytest.approx(20 / 255)  # uint8 is not stretched


def read_unit_of(tmp_path, array, name="x.tif"):
    tifffile.imwrite(tmp_path / name, array)
    return read_unit(tmp_path / name)


def test_12_bit_camera_data_in_a_16_bit_tiff_spans_the_unit_range(tmp_path):
    rng = np.random.default_rng(0)
    twelve_bit = rng.integers(0, 4096, (64, 64)).astype(np.uint16)
    twelve_bit[0, 0], twelve_bit[0, 1] = 0, 4095
    image = read_unit_of(tmp_path, twelve_bit)
    assert image.min() == 0 and image.max() == 1  # not 4095 / 65535 = 0.06
    low, high = np.percentile(twelve_bit.astype(np.float32), PERCENTILES)
    assert np.allclose(image, np.clip((twelve_bit - low) / (high - low), 0, 1), atol=1e-6)


@pytest.mark.parametrize("defect", ["hot", "dead", "saturated"])
def test_a_few_bad_pixels_do_not_squeeze_the_contrast(tmp_path, defect):
    rng = np.random.default_rng(1)
    frame = rng.normal(2000, 300, (128, 128)).clip(0, 4095).astype(np.uint16)  # a 12-bit camera frame
    clean_std = read_unit_of(tmp_path, frame).std()
    bad = frame.copy()
    spots = rng.choice(bad.size, 5, replace=False)
    bad.flat[spots] = {"hot": 65535, "dead": 0, "saturated": 4095}[defect]
    image = read_unit_of(tmp_path, bad)
    assert image.std() == pytest.approx(clean_std, rel=0.05)  # min-max scaling: 15-fold smaller for a hot pixel
    assert image.min() == 0 and image.max() == 1  # clipped


def test_uint8_keeps_its_values_whatever_its_outliers(tmp_path):
    frame = np.full((16, 16), 100, np.uint8)
    frame[0, 0], frame[0, 1] = 255, 0
    assert np.array_equal(read_unit_of(tmp_path, frame), frame / np.float32(255))


def test_16_bit_png_and_float_tiff(tmp_path):
    values = np.linspace(1000, 3000, 64 * 64).reshape(64, 64)
    Image.fromarray(values.astype(np.uint16)).save(tmp_path / "w.png")
    image = read_unit(tmp_path / "w.png")
    assert image.min() == 0 and image.max() == 1
    floats = read_unit_of(tmp_path, values.astype(np.float32) * 1e-3)
    assert floats.dtype == np.float32 and floats.min() == 0 and floats.max() == pytest.approx(1)
    assert not to_unit_range(np.full((4, 4), 7.5, np.float32)).any()  # a constant image becomes 0


def test_nan_and_inf_pixels_name_the_file(tmp_path):
    bad = np.zeros((8, 8), np.float32)
    bad[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", bad)
    with pytest.raises(ValueError, match=r"nan\.tif has 1 NaN or Inf"):
        read_unit(tmp_path / "nan.tif")
    bad[3, 3] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", bad)
    with pytest.raises(ValueError, match=r"inf\.tif"):
        read_unit(tmp_path / "inf.tif")


def test_colour_images_need_equal_channels(tmp_path):
    grey = np.random.default_rng(0).integers(0, 255, (10, 12), np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    assert np.array_equal(read_raw(tmp_path / "rgb.png"), grey)
    colour = np.stack([grey, grey, 255 - grey], -1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match=r"colour\.png is a colour image with unequal"):
        read_raw(tmp_path / "colour.png")


def test_truncated_png_and_garbage_name_the_file(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read image .*cut\.png"):
        read_raw(tmp_path / "cut.png")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00 not a tiff")
    with pytest.raises(ValueError, match=r"junk\.tif"):
        read_raw(tmp_path / "junk.tif")


def test_a_one_row_tiff_stays_two_dimensional(tmp_path):
    tifffile.imwrite(tmp_path / "row.tif", np.arange(30, dtype=np.uint8).reshape(1, 30))
    assert read_raw(tmp_path / "row.tif").shape == (1, 30)
    assert image_shape(tmp_path / "row.tif") == (1, 30)
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(ValueError, match=r"2-D grayscale .*stack\.tif"):
        read_raw(tmp_path / "stack.tif")
