"""Bringing people's images into MNIST form, on synthetic images with a known answer."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitnet.core.images import ImageProblem, as_is, mnist_form, open_gray


def draw_seven(size=(120, 160), box=(30, 30, 90, 130), ink=0, paper=255, width=10, mode="L"):
    """A dark '7' on light paper, inside `box`."""
    img = Image.new(mode, size, paper)
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = box
    d.line([(x0, y0), (x1, y0), (x0 + (x1 - x0) // 3, y1)], fill=ink, width=width)
    return img


def ink_box(a, level=0.1):
    rows, cols = np.nonzero(a > level)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def centre_of_mass(a):
    r, c = np.indices(a.shape)
    return (r * a).sum() / a.sum(), (c * a).sum() / a.sum()


def assert_mnist_like(out):
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1 and out.max() > 0.9
    r0, r1, c0, c1 = ink_box(out)
    assert max(r1 - r0, c1 - c0) in (19, 20, 21)  # longer side scaled to 20 px
    cr, cc = centre_of_mass(out)
    assert abs(cr - 14) <= 1 and abs(cc - 14) <= 1  # centred by mass
    assert out[0].max() < 0.05 and out[:, 0].max() < 0.05  # dark background, light ink


def gray(img):
    return np.asarray(img.convert("L"), dtype=np.float32) / 255


def test_ink_on_paper_is_inverted_cropped_scaled_and_centred():
    out = mnist_form(gray(draw_seven()))
    assert_mnist_like(out)


def test_light_on_dark_is_not_inverted():
    dark = mnist_form(gray(draw_seven(ink=255, paper=0)))
    light = mnist_form(gray(draw_seven()))
    assert_mnist_like(dark)
    assert np.abs(dark - light).max() < 0.05


def test_off_centre_and_large_images_give_the_same_digit():
    reference = mnist_form(gray(draw_seven()))
    corner = mnist_form(gray(draw_seven(size=(1600, 1200), box=(1300, 900, 1456, 1160), width=26)))
    assert_mnist_like(corner)
    # Same shape, other scale and place: nearly the same 28x28 picture.
    assert np.abs(corner - reference).mean() < 0.06


def test_aspect_is_kept():
    out = mnist_form(gray(draw_seven(size=(300, 300), box=(100, 20, 140, 280), width=8)))
    r0, r1, c0, c1 = ink_box(out)
    assert r1 - r0 in (19, 20, 21) and (c1 - c0) < 10  # tall and narrow stays tall and narrow


def test_rgba_transparent_canvas(tmp_path):
    img = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(img).line([(20, 20), (80, 20), (40, 85)], fill=(0, 0, 0, 255), width=8)
    path = tmp_path / "seven.png"
    img.save(path)
    out = mnist_form(open_gray(path))
    assert_mnist_like(out)


def test_sixteen_bit_grayscale(tmp_path):
    a = (np.asarray(draw_seven(), dtype=np.uint16) * 257).astype(np.uint16)
    path = tmp_path / "seven16.png"
    Image.fromarray(a).save(path)
    loaded = open_gray(path)
    assert loaded.max() == pytest.approx(1.0) and loaded.min() == 0
    assert_mnist_like(mnist_form(loaded))


@pytest.mark.parametrize("suffix, dtype", [(".png", np.uint16), (".tif", np.int32)])
def test_a_high_bit_image_that_uses_part_of_its_range_is_read_by_its_own_range(tmp_path, suffix, dtype):
    """A 12-bit sensor's image (0-1000 in a 16- or 32-bit file) was divided by 65535: nearly black, 'no digit'."""
    a = (np.asarray(draw_seven(), dtype=np.float64) / 255 * 1000).astype(dtype)
    path = tmp_path / f"seven12bit{suffix}"
    Image.fromarray(a).save(path)
    loaded = open_gray(path)
    assert loaded.max() == pytest.approx(1.0) and loaded.min() == 0
    assert_mnist_like(mnist_form(loaded))


def test_float_images_in_any_range_and_a_hot_pixel_are_read_by_the_images_own_range(tmp_path):
    """A float image standardised like MNIST (-0.42 to 2.8) was divided by 255 and called blank; one pixel at
    65535 in a 12-bit image dimmed the rest to 'blank'."""
    seven = np.asarray(draw_seven(), dtype=np.float32) / 255
    standardised = (seven - 0.1307) / 0.3081
    Image.fromarray(standardised, mode="F").save(tmp_path / "std.tif")
    Image.fromarray(-1 - seven, mode="F").save(tmp_path / "negative.tif")  # all below zero, still a digit
    hot = (seven * 1000).astype(np.uint16)
    hot[0, 0] = 65535
    Image.fromarray(hot).save(tmp_path / "hot.png")
    for name in ("std.tif", "negative.tif", "hot.png"):
        loaded = open_gray(tmp_path / name)
        assert loaded.min() == 0 and loaded.max() == pytest.approx(1.0), name
        assert_mnist_like(mnist_form(loaded))


def test_a_broken_link_in_a_folder_is_kept_to_get_its_own_line(tmp_path):
    from digitnet.core.images import expand_paths

    draw_seven().save(tmp_path / "good.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert expand_paths([str(tmp_path)]) == [tmp_path / "gone.png", tmp_path / "good.png"]
    with pytest.raises(ImageProblem) as err:
        open_gray(tmp_path / "gone.png")
    assert err.value.kind == "unreadable"


def test_rgb_jpeg_photo_like(tmp_path):
    rng = np.random.default_rng(0)
    seven = np.asarray(draw_seven(size=(400, 300), box=(120, 60, 280, 250), width=18), dtype=np.float32)
    # Uneven light across the paper, sensor noise, a warm tint.
    light = np.linspace(0.75, 1.0, 400)[None, :] * np.linspace(0.85, 1.0, 300)[:, None]
    photo = np.clip(seven * light + rng.normal(0, 6, seven.shape), 0, 255)
    rgb = np.stack([photo, photo * 0.95, photo * 0.85], axis=-1).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(path, quality=85)
    assert_mnist_like(mnist_form(open_gray(path)))


def test_blank_image_is_refused():
    with pytest.raises(ImageProblem) as err:
        mnist_form(np.full((50, 50), 0.9, dtype=np.float32))
    assert err.value.kind == "no digit"


def test_as_is_needs_28x28():
    assert as_is(np.zeros((28, 28))).shape == (28, 28)
    with pytest.raises(ImageProblem) as err:
        as_is(np.zeros((30, 40)))
    assert err.value.kind == "size"


def test_thin_pen_strokes_are_widened_to_mnist_weight():
    thin = mnist_form(gray(draw_seven(size=(900, 1200), box=(250, 200, 650, 1000), width=6)))
    bold = mnist_form(gray(draw_seven()))
    assert_mnist_like(thin)
    # A 6 px pen in an 800 px digit would be a faint 0.15 px line at MNIST scale; widened, it carries ink like
    # a normal MNIST digit (about 100-200 pixels over 0.5).
    assert (thin > 0.5).sum() >= 0.6 * (bold > 0.5).sum()
    assert (thin > 0.5).sum() >= 40  # samples/sample_image.png, an MNIST 7, has 71


def test_mnist_digits_pass_through_nearly_unchanged(mnist_root):
    import gzip

    raw = gzip.decompress((mnist_root / "t10k-images-idx3-ubyte.gz").read_bytes())[16:]
    digits = np.frombuffer(raw, np.uint8).reshape(-1, 28, 28)[:50].astype(np.float32) / 255
    diffs = [np.abs(mnist_form(d) - d).mean() for d in digits]
    # MNIST digits already are 20 px, centred by mass: re-preprocessing moves little ink.
    assert np.median(diffs) < 0.06


def page_with_seven(size, box, width, dust=0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    a = gray(draw_seven(size=size, box=box, width=width))
    for _ in range(dust):  # dark specks, 1-2 px, anywhere on the page
        r, c = rng.integers(0, size[1] - 2), rng.integers(0, size[0] - 2)
        a[r : r + rng.integers(1, 3), c : c + rng.integers(1, 3)] = rng.uniform(0, 0.5)
    return np.clip(a + rng.normal(0, noise, a.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize(
    "size, box, width",
    [
        ((1000, 1000), (400, 400, 520, 600), 14),  # 200 px tall on a 1000x1000 page (was "no digit found")
        ((2400, 1800), (1500, 1200, 1560, 1280), 7),  # its box is 0.11% of the frame
    ],
)
def test_a_small_digit_on_a_large_page_is_found(size, box, width):
    reference = mnist_form(gray(draw_seven()))
    out = mnist_form(page_with_seven(size, box, width))
    assert_mnist_like(out)
    assert np.abs(out - reference).mean() < 0.08


def test_dust_texture_and_jpeg_noise_are_not_ink(tmp_path):
    reference = mnist_form(gray(draw_seven()))
    page = page_with_seven((1000, 800), (600, 300, 700, 460), 12, dust=40, noise=0.03)
    Image.fromarray((page * 255).astype(np.uint8)).save(tmp_path / "photo.jpg", quality=60)
    out = mnist_form(open_gray(tmp_path / "photo.jpg"))
    assert_mnist_like(out)
    assert np.abs(out - reference).mean() < 0.08
    blank = page_with_seven((1000, 800), (0, 0, 0, 0), 0, dust=40, noise=0.03)
    with pytest.raises(ImageProblem) as err:
        mnist_form(blank)
    assert err.value.kind == "no digit"


def test_non_finite_pixels_are_this_image_s_problem(tmp_path):
    a = np.full((40, 40), 0.0, dtype=np.float32)
    a[10:30, 18:22] = 1.0
    a[0, 0] = np.nan
    Image.fromarray(a, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(ImageProblem) as err:
        mnist_form(open_gray(tmp_path / "nan.tif"))
    assert err.value.kind == "not numbers"


@pytest.mark.parametrize("size", [28, 40, 63])
def test_small_ink_on_paper_is_inverted_too(size):
    """A dark digit on white under 64 px was measured against the border before inversion: "no digit found"."""
    a = np.ones((size, size), dtype=np.float32)
    a[size // 5 : size - size // 5, size // 2 - 1 : size // 2 + 2] = 0.0  # a dark "1"
    out = mnist_form(a)
    assert out.max() > 0.9 and out[0].max() < 0.05


def test_a_pipe_is_not_an_image(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(ImageProblem) as err:
        open_gray(tmp_path / "fifo.png")  # returns at once: it never opens the pipe
    assert err.value.kind == "unreadable"


def test_a_symlink_loop_is_named_as_a_path_problem_not_a_damaged_image(tmp_path):
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    with pytest.raises(ImageProblem) as err:
        open_gray(tmp_path / "a.png")
    assert err.value.kind == "unreadable"


def test_infinite_float_pixels_are_refused(tmp_path):
    a = np.zeros((40, 40), dtype=np.float32)
    a[10:30, 18:22] = np.inf
    Image.fromarray(a, mode="F").save(tmp_path / "inf.tif")
    with pytest.raises(ImageProblem) as err:
        open_gray(tmp_path / "inf.tif")
    assert err.value.kind == "not numbers"


@pytest.mark.parametrize("suffix", ["gif", "tiff", "png"])
def test_an_image_of_several_frames_is_refused_not_read_as_its_first(tmp_path, suffix):
    seven, one = Image.new("L", (28, 28), 0), Image.new("L", (28, 28), 0)
    seven.paste(255, (6, 6, 22, 9)), seven.paste(255, (18, 9, 21, 23))
    one.paste(255, (13, 5, 16, 23))
    path = tmp_path / f"two.{suffix}"
    seven.save(path, save_all=True, append_images=[one])
    with pytest.raises(ImageProblem) as err:
        open_gray(path)
    assert err.value.kind == "frames"
    one.save(tmp_path / f"one.{suffix}")
    assert open_gray(tmp_path / f"one.{suffix}").shape == (28, 28)


def test_a_colour_mode_pil_cannot_turn_grey_is_named_as_such(tmp_path):
    Image.new("LAB", (40, 40)).save(tmp_path / "lab.tif")  # a valid file, not a damaged one
    with pytest.raises(ImageProblem) as err:
        open_gray(tmp_path / "lab.tif")
    assert err.value.kind == "colour mode" and "LAB" in str(err.value)
