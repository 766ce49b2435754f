"""Image folders as users bring them: mixed sizes and formats, junk files, the agent's resize."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_agent.inputs import fit_image
from stream.codecs import decode_image, encode_jpeg, encode_png
from stream.content_types import JPEG, PNG
from stream.datasets import load_dataset
from stream.exceptions import ConfigError, DatasetError, DecodeError
from stream.image_folder import (
    ImageFile,
    ImageFileError,
    ImageGeometry,
    choose_geometry,
    load_images,
    parse_image_size,
    read_image,
    scan_folder,
)
from stream.preprocessing import ImagePreprocessing, resize_image


def pixels(rng: np.random.Generator, h: int, w: int, c: int = 3) -> np.ndarray:
    """Smooth random pixels (JPEG-friendly) with noise."""
    base = np.linspace(0, 200, w, dtype=np.float32)[None, :, None] + rng.normal(0, 20, (h, w, c))
    return np.clip(base, 0, 255).astype(np.uint8)


def save(path: Path, arr: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    src = arr[:, :, 0] if arr.shape[2] == 1 else arr
    Image.fromarray(src).save(path, format=fmt)


def messy_folder(root: Path) -> dict[str, str]:
    """Two classes of mixed sizes and formats plus junk; returns {junk name: reason part}."""
    rng = np.random.default_rng(0)
    formats = ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"]
    for label in ("cats", "dogs"):
        for i, fmt in enumerate(formats):
            h, w = (30 + 7 * i, 40 + 5 * i) if label == "cats" else (50 + 3 * i, 36 + 2 * i)
            save(root / label / f"img{i}.{fmt.lower()}", pixels(rng, h, w), fmt)
    save(root / "dogs" / "nested" / "deep.png", pixels(rng, 44, 44), "PNG")
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / "cats" / ".DS_Store").write_bytes(b"\x00\x01\x02")
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    jpeg = encode_jpeg(pixels(rng, 40, 40))
    (root / "dogs" / "header-only.jpg").write_bytes(jpeg[:120])
    (root / "README.md").write_text("a folder of pets")
    return {
        "notes.txt": "not an image",
        ".DS_Store": "hidden file",
        "empty.jpg": "empty file",
        "header-only.jpg": "not a readable image",
        "README.md": "not in a class folder",
    }


def test_scan_keeps_every_readable_format_and_lists_the_rest_with_reasons(tmp_path: Path) -> None:
    junk = messy_folder(tmp_path)
    folder = scan_folder(tmp_path)
    assert folder.labels == ["cats", "dogs"]
    names = sorted(f.path.name for f in folder.train)
    assert len(names) == 13 and "deep.png" in names
    assert {f.path.suffix for f in folder.train} >= {".png", ".jpeg", ".bmp", ".gif", ".webp"}
    reasons = {Path(s.path).name: s.reason for s in folder.skipped}
    assert set(reasons) == set(junk)
    for name, part in junk.items():
        assert part in reasons[name], (name, reasons[name])


def test_a_file_over_the_pixel_limit_is_skipped_not_decoded(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        save(tmp_path / label / "small.png", pixels(rng, 10, 10), "PNG")
    save(tmp_path / "a" / "big.png", pixels(rng, 100, 100), "PNG")
    folder = scan_folder(tmp_path, max_pixels=50 * 50)
    assert [Path(s.path).name for s in folder.skipped] == ["big.png"]
    assert "100x100 pixels, over the limit of 2,500" in folder.skipped[0].reason


def test_own_test_split_and_unknown_test_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        for label in ("a", "b"):
            save(tmp_path / split / label / "x.png", pixels(rng, 12, 12), "PNG")
    save(tmp_path / "test" / "zebra" / "z.png", pixels(rng, 12, 12), "PNG")
    folder = scan_folder(tmp_path)
    assert folder.has_test_split and len(folder.test) == 2
    train, test = folder.split(seed=0, test_fraction=0.25)
    assert len(train) == 2 and len(test) == 2
    assert [s.reason for s in folder.skipped] == ["class 'zebra' is not in train"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "has no class subfolders"),
        (lambda root: (root / "a").mkdir(parents=True), "no readable image"),
    ],
)
def test_unusable_folders_stop_with_a_message(tmp_path: Path, make: object, message: str) -> None:
    root = tmp_path / "data"
    make(root)  # type: ignore[operator]
    with pytest.raises(DatasetError, match=message):
        scan_folder(root)


def files(sizes: list[tuple[int, int]], grey: bool = False) -> list[ImageFile]:
    return [ImageFile(Path(f"{i}.png"), 0, h, w, grey) for i, (h, w) in enumerate(sizes)]


def test_geometry_is_the_median_size_capped_for_small_devices() -> None:
    assert choose_geometry(files([(20, 30), (40, 60), (60, 90)])) == ImageGeometry(40, 60, "RGB")
    # Phone photos: 3024x4032 -> longer side 96, aspect kept.
    assert choose_geometry(files([(3024, 4032)] * 3)) == ImageGeometry(72, 96, "RGB")
    assert choose_geometry(files([(500, 500)]), image_size=(32, 48)).shape == (32, 48, 3)


def test_colour_is_inferred_from_the_files_or_chosen() -> None:
    assert choose_geometry(files([(8, 8)] * 2, grey=True)).color == "L"
    mixed = files([(8, 8)], grey=True) + files([(8, 8)], grey=False)
    assert choose_geometry(mixed).color == "RGB"
    assert choose_geometry(mixed, color="L").channels == 1
    with pytest.raises(ConfigError, match="--color 'CMYK': use L"):
        choose_geometry(mixed, color="CMYK")  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "size"), [("64x48", (64, 48)), ("32", (32, 32)), ("8X9", (8, 9))])
def test_parse_image_size(text: str, size: tuple[int, int]) -> None:
    assert parse_image_size(text) == size


@pytest.mark.parametrize("text", ["", "x", "0x5", "5x", "axb", "1x2x3", "5000x5"])
def test_parse_image_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="--image-size .*use HxW"):
        parse_image_size(text)


@pytest.mark.parametrize(
    ("shape", "target"),
    [
        ((37, 53, 3), (16, 16, 3)),
        ((37, 53, 3), (16, 16, 1)),
        ((20, 11, 1), (40, 30, 3)),
        ((20, 11, 1), (8, 8, 1)),
        ((16, 16, 3), (16, 16, 3)),
        ((300, 200, 3), (96, 64, 3)),
    ],
)
def test_resize_is_the_agents_fit_image_bit_for_bit(
    shape: tuple[int, int, int], target: tuple[int, int, int]
) -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    color = "L" if target[2] == 1 else "RGB"
    prep = ImagePreprocessing(height=target[0], width=target[1], channels=target[2], color=color)
    ours = resize_image(img, height=target[0], width=target[1], channels=target[2])
    agent = fit_image(img, JPEG, prep)
    assert ours.shape == target and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, agent)


@pytest.mark.parametrize(("fmt", "ctype"), [("PNG", PNG), ("JPEG", JPEG)])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_file_is_read_exactly_as_the_agent_reads_the_same_bytes(
    tmp_path: Path, fmt: str, ctype: str, channels: int
) -> None:
    rng = np.random.default_rng(4)
    src = pixels(rng, 45, 61)
    data = encode_png(src) if fmt == "PNG" else encode_jpeg(src)
    path = tmp_path / "x.img"
    path.write_bytes(data)
    geometry = ImageGeometry(24, 32, "L" if channels == 1 else "RGB")
    prep = ImagePreprocessing(height=24, width=32, channels=channels, color=geometry.color)
    agent = fit_image(decode_image(data, {"content-type": ctype}).pixels, ctype, prep)
    np.testing.assert_array_equal(read_image(path, geometry), agent)


def test_lossless_formats_decode_to_the_same_pixels_as_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    src = pixels(rng, 21, 34)
    geometry = ImageGeometry(21, 34, "RGB")
    save(tmp_path / "a.png", src, "PNG")
    for fmt in ("BMP", "TIFF"):
        save(tmp_path / f"a.{fmt}", src, fmt)
        np.testing.assert_array_equal(read_image(tmp_path / f"a.{fmt}", geometry), src)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", geometry), src)


def test_a_truncated_image_is_an_image_file_error_with_the_reason(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    data = encode_jpeg(pixels(rng, 64, 64))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageFileError, match="corrupt_image: .*truncated"):
        read_image(path, ImageGeometry(8, 8, "RGB"))
    with pytest.raises(ImageFileError, match="cannot read the file"):
        read_image(tmp_path / "missing.png", ImageGeometry(8, 8, "RGB"))


def test_resize_refuses_what_is_not_an_image() -> None:
    with pytest.raises(DecodeError, match="uint8"):
        resize_image(np.zeros((4, 4, 3), np.float32), height=2, width=2, channels=3)
    with pytest.raises(DecodeError, match="the model takes 2"):
        resize_image(np.zeros((4, 4, 3), np.uint8), height=2, width=2, channels=2)


def test_load_images_skips_what_fails_and_keeps_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    listed = []
    for i in range(12):
        path = tmp_path / f"{i:02d}.png"
        save(path, pixels(rng, 10 + i, 12), "PNG")
        listed.append(ImageFile(path, i % 2, 10 + i, 12, False))
    listed[5].path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    x, y, skipped = load_images(listed, ImageGeometry(8, 8, "RGB"), threads=3)
    assert x.shape == (11, 8, 8, 3) and y.tolist() == [i % 2 for i in range(12) if i != 5]
    assert [Path(s.path).name for s in skipped] == ["05.png"]
    expected = read_image(listed[6].path, ImageGeometry(8, 8, "RGB"))
    np.testing.assert_array_equal(x[5], expected)


def test_load_dataset_images_dir_takes_mixed_sizes(tmp_path: Path) -> None:
    messy_folder(tmp_path)
    ds = load_dataset(f"images:{tmp_path}")
    assert ds.kind == "image" and ds.labels == ["cats", "dogs"]
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape[1:] == ds.x_test.shape[1:]
    assert len(ds.x_train) + len(ds.x_test) == 13


def test_grey_files_make_a_grey_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    for label in ("a", "b"):
        for i in range(3):
            save(tmp_path / label / f"{i}.png", pixels(rng, 9, 9, 1), "PNG")
    assert load_dataset(f"images:{tmp_path}").x_train.shape[1:] == (9, 9, 1)
    buf = io.BytesIO()
    Image.fromarray(pixels(rng, 9, 9)).save(buf, format="PNG")
    (tmp_path / "a" / "colour.png").write_bytes(buf.getvalue())
    assert load_dataset(f"images:{tmp_path}").x_train.shape[1:] == (9, 9, 3)
