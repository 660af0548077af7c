"""Every image kind a user may have decodes to the RGB pixels it shows (reference pixels computed here).

Files are written with PIL/NumPy (and, for 16-bit colour, by hand following the PNG specification,
which PIL cannot write); the expected pixels come from the format's definition, not from the decoder.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from omnireid.data import CorruptImageError, read_image

RNG = np.random.default_rng(0)
H, W = 5, 7


def pixels(path) -> np.ndarray:
    image = read_image(str(path))
    assert image.mode == "RGB"
    return np.asarray(image)


def png16(path, samples: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG (colour type 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA) from uint16 samples."""
    height, width = samples.shape[:2]
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_8bit_rgb_and_grayscale(tmp_path):
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(pixels(tmp_path / "rgb.png"), rgb)
    gray = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(pixels(tmp_path / "gray.png"), np.repeat(gray[..., None], 3, axis=2))


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    values[0, :4] = [0, 255, 256, 65535]  # the 8-bit path clipped everything above 255 to white
    expected = (values >> 8).astype(np.uint8)  # the high byte, as Pillow decodes 16-bit colour PNGs
    Image.fromarray(values).save(tmp_path / "gray16_pil.png")  # Pillow writes mode I;16 as a 16-bit PNG
    png16(tmp_path / "gray16.png", values, colour_type=0)
    Image.fromarray(values).save(tmp_path / "gray16.tif")
    for name in ("gray16_pil.png", "gray16.png", "gray16.tif"):
        got = pixels(tmp_path / name)
        np.testing.assert_array_equal(got, np.repeat(expected[..., None], 3, axis=2), err_msg=name)
    assert pixels(tmp_path / "gray16.png")[0, :4, 0].tolist() == [0, 0, 1, 255]
    # a mid-gray 16-bit image stays mid-gray (it was white before)
    Image.fromarray(np.full((H, W), 32768, np.uint16)).save(tmp_path / "mid.png")
    assert (pixels(tmp_path / "mid.png") == 128).all()


def test_16bit_colour_and_16bit_alpha(tmp_path):
    rgb = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    png16(tmp_path / "rgb16.png", rgb, colour_type=2)
    np.testing.assert_array_equal(pixels(tmp_path / "rgb16.png"), (rgb >> 8).astype(np.uint8))
    gray_alpha = np.stack([RNG.integers(0, 65536, (H, W)), np.full((H, W), 65535)], axis=2).astype(np.uint16)
    png16(tmp_path / "la16.png", gray_alpha, colour_type=4)  # fully opaque: the gray value itself
    expected = (gray_alpha[..., 0] >> 8).astype(np.uint8)
    np.testing.assert_array_equal(pixels(tmp_path / "la16.png"), np.repeat(expected[..., None], 3, axis=2))


def test_palette_with_and_without_transparency(tmp_path):
    palette = RNG.integers(0, 256, (16, 3), dtype=np.uint8)
    index = RNG.integers(0, 16, (H, W), dtype=np.uint8)
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.flatten().tolist())
    image.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(pixels(tmp_path / "palette.png"), palette[index])
    image.save(tmp_path / "palette.gif")
    np.testing.assert_array_equal(pixels(tmp_path / "palette.gif"), palette[index])
    image.info["transparency"] = 3  # index 3 is transparent: shown over white
    image.save(tmp_path / "palette_t.png", transparency=3)
    expected = palette[index].copy()
    expected[index == 3] = 255
    np.testing.assert_array_equal(pixels(tmp_path / "palette_t.png"), expected)


def test_rgba_is_composited_over_white(tmp_path):
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(tmp_path / "rgba.png")
    a = alpha[..., None].astype(np.float64) / 255
    expected = rgb * a + 255 * (1 - a)
    got = pixels(tmp_path / "rgba.png").astype(np.float64)
    assert np.abs(got - expected).max() <= 1  # 8-bit rounding of the blend
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == rgb[0, 1].tolist()


def test_cmyk(tmp_path):
    cmyk = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.tif")
    c, k = cmyk[..., :3].astype(np.float64), cmyk[..., 3:].astype(np.float64)
    expected = (255 - c) * (255 - k) / 255  # RGB = (1 - C)(1 - K) on the 0..255 scale
    got = pixels(tmp_path / "cmyk.tif").astype(np.float64)
    assert np.abs(got - expected).max() <= 1
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.jpg", quality=100)  # JPEG CMYK (Adobe inverted)
    assert np.abs(pixels(tmp_path / "cmyk.jpg").astype(np.float64) - expected).mean() < 8  # lossy


@pytest.mark.parametrize("orientation, turn", [
    (1, lambda a: a), (2, lambda a: a[:, ::-1]), (3, lambda a: a[::-1, ::-1]), (4, lambda a: a[::-1]),
    (5, lambda a: a.transpose(1, 0, 2)), (6, lambda a: np.rot90(a, k=-1)),
    (7, lambda a: a[::-1, ::-1].transpose(1, 0, 2)), (8, lambda a: np.rot90(a, k=1)),
])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    # EXIF 2.3 Orientation: the stored row 0 / column 0 are the visual (1) top-left, (2) top-right,
    # (3) bottom-right, (4) bottom-left, (5) left-top, (6) right-top, (7) right-bottom, (8) left-bottom.
    stored = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "photo.png", exif=exif)
    got = pixels(tmp_path / "photo.png")
    np.testing.assert_array_equal(got, turn(stored))


def test_bilevel_and_float_images(tmp_path):
    bits = RNG.integers(0, 2, (H, W)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(pixels(tmp_path / "bits.png")[..., 0], bits.astype(np.uint8) * 255)
    values = RNG.uniform(-20, 300, (H, W)).astype(np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    np.testing.assert_array_equal(pixels(tmp_path / "float.tif")[..., 0],
                                  np.clip(np.rint(values), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_unreadable_files_name_the_file(tmp_path, content):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(CorruptImageError, match="bad.jpg"):
        read_image(str(path))
    with pytest.raises(CorruptImageError, match="missing.jpg"):
        read_image(str(tmp_path / "missing.jpg"))
