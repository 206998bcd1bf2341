"""Image dataset uploads over real HTTP: what is accepted and reported, and every refusal with a crafted file."""

from __future__ import annotations

import base64
import io
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import Server
from tests.image_archives import encode, png_claiming, solid, two_classes, zip_of, zip_with_link


def upload(http: httpx.Client, archive: bytes, name: str = "images.zip") -> httpx.Response:
    return http.post("/v1/datasets", files={"file": (name, archive)}, data={"name": "imgs", "kind": "image"})


def dataset_count(http: httpx.Client) -> int:
    return len(http.get("/v1/datasets", params={"limit": 1000}).json()["data"])


def assert_refused(http: httpx.Client, archive: bytes, status: int, *needles: str, code: str) -> None:
    before = dataset_count(http)
    response = upload(http, archive)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    for needle in needles:
        assert needle in error["message"], error["message"]
    assert dataset_count(http) == before  # nothing stored, and the server still answers


def test_class_folders_of_every_format_are_decoded_cleaned_and_reported(http: httpx.Client) -> None:
    rotated = Image.fromarray(np.random.default_rng(7).integers(0, 256, (10, 20, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; shown rotated 90 degrees
    buffer = io.BytesIO()
    rotated.save(buffer, format="JPEG", exif=exif)
    frames = [Image.new("P", (16, 16), i) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    grey = encode(np.full((9, 9), 40, dtype=np.uint8))
    files = [
        ("photos/cat/1.png", solid(30, 20, 1)),
        ("photos/cat/2.webp", solid(30, 20, 2, "WEBP")),
        ("photos/cat/copy.png", solid(30, 20, 1)),  # the same pixels as 1.png
        ("photos/cat/turned.jpg", buffer.getvalue()),
        ("photos/dog/1.gif", gif.getvalue()),
        ("photos/dog/grey.png", grey),
        ("photos/.DS_Store", b"\x00junk"),
        ("__MACOSX/photos/._1.png", b"junk"),
    ]
    response = upload(http, zip_of(files))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["kind"] == "image" and body["format"] == "zip"
    assert body["rows"] == 5 and body["labels"] == {"cat": 3, "dog": 2}
    report = body["report"]
    assert report["input_images"] == 6 and report["layout"] == "folders"
    assert report["dropped"]["duplicate"] == {"count": 1, "files": ["photos/cat/copy.png (same as photos/cat/1.png)"]}
    # The JPEG stored upright: 10 wide, 20 high after its EXIF rotation.
    assert report["width"] == {"min": 9, "max": 30} and report["height"] == {"min": 9, "max": 20}

    samples = http.get(f"/v1/datasets/{body['id']}/samples", params={"per_class": 2}).json()["data"]
    assert [(s["label"], s["file"]) for s in samples] == [
        ("cat", "photos/cat/1.png"),
        ("cat", "photos/cat/2.webp"),
        ("dog", "photos/dog/1.gif"),
        ("dog", "photos/dog/grey.png"),
    ]
    prefix = "data:image/png;base64,"
    assert all(s["image"].startswith(prefix) for s in samples)
    thumbnail = Image.open(io.BytesIO(base64.b64decode(samples[0]["image"][len(prefix) :])))
    assert thumbnail.format == "PNG" and thumbnail.mode == "RGB" and max(thumbnail.size) <= 64
    assert (samples[0]["width"], samples[0]["height"]) == (30, 20)


def test_a_manifest_names_files_and_labels(http: httpx.Client) -> None:
    images = [(f"img/{i}.png", solid(8, 8, 50 + i)) for i in range(4)]
    csv = b"file,label\nimg/0.png,yes\nimg/1.png,yes\nimg/2.png,no\nimg/3.png,no\n"
    response = upload(http, zip_of([*images, ("labels.csv", csv)]))
    assert response.status_code == 201, response.text
    assert response.json()["labels"] == {"no": 2, "yes": 2}
    jsonl = b"".join(b'{"file": "%d.png", "label": %d}\n' % (i, i % 2) for i in range(4))
    nested = [(f"set/{i}.png", solid(8, 8, 60 + i)) for i in range(5)]
    response = upload(http, zip_of([*nested, ("set/labels.jsonl", jsonl)]))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["labels"] == {"0": 2, "1": 2} and body["report"]["unlisted_files"] == 1


def test_samples_of_a_text_dataset_are_refused(http: httpx.Client) -> None:
    created = http.post("/v1/datasets", files={"file": ("t.csv", b"text,label\na,x\nb,y\n")}).json()
    response = http.get(f"/v1/datasets/{created['id']}/samples")
    assert response.status_code == 400 and response.json()["error"]["code"] == "wrong_dataset_kind"


def truncated_jpeg() -> bytes:
    data = solid(64, 64, 3, "JPEG")
    return data[: len(data) // 2]


def corrupt_png() -> bytes:
    data = bytearray(solid(32, 32, 4))
    data[60:80] = b"\xff" * 20  # inside the image data: its checksum no longer matches
    return bytes(data)


@pytest.mark.parametrize(
    ("bad_name", "bad_bytes", "needle", "code"),
    [
        ("a/broken.jpg", truncated_jpeg(), "corrupt or truncated", "corrupt_image"),
        ("a/broken.png", corrupt_png(), "corrupt or truncated", "corrupt_image"),
        ("a/empty.png", b"", "empty", "empty_image"),
        ("a/notes.txt", b"just some text, not an image\n", "not a PNG", "not_an_image"),
        ("a/bitmap.bmp", encode(np.zeros((4, 4, 3), dtype=np.uint8), "BMP"), "not a PNG", "not_an_image"),
    ],
)
def test_a_bad_image_is_refused_with_its_name(
    http: httpx.Client, bad_name: str, bad_bytes: bytes, needle: str, code: str
) -> None:
    archive = zip_of([*two_classes(), (bad_name, bad_bytes)])
    assert_refused(http, archive, 400, repr(bad_name), needle, code=code)


def test_a_decompression_bomb_is_refused_before_it_is_decoded(http: httpx.Client) -> None:
    archive = zip_of([*two_classes(), ("b/bomb.png", png_claiming(60_000, 60_000))])
    assert_refused(http, archive, 413, "'b/bomb.png'", "pixels", code="image_too_large")


def test_a_zip_bomb_is_refused_from_its_directory(http: httpx.Client) -> None:
    archive = zip_of([*two_classes(), ("b/zeros.png", b"\x00" * (20 * 1024 * 1024))])
    assert len(archive) < 200_000
    assert_refused(http, archive, 413, "'b/zeros.png'", "zip bomb", code="archive_too_large")


def test_unsafe_archives_are_refused(http: httpx.Client) -> None:
    assert_refused(
        http, zip_of([*two_classes(), ("../evil.png", solid(4, 4, 9))]), 400, "'../evil.png'", code="unsafe_path"
    )
    assert_refused(
        http, zip_of([*two_classes(), ("/abs/x.png", solid(4, 4, 9))]), 400, "'/abs/x.png'", code="unsafe_path"
    )
    linked = zip_with_link("a/link.png", "/etc/passwd", two_classes())
    assert_refused(http, linked, 400, "'a/link.png'", "links", code="link_in_archive")
    assert_refused(http, b"PK\x03\x04 not really a zip", 400, ".zip", code="malformed_file")


def test_too_few_classes_or_images_are_refused(http: httpx.Client) -> None:
    one_class = [(f"a/{i}.png", solid(6, 6, i)) for i in range(4)]
    assert_refused(http, zip_of(one_class), 422, "2 classes", "'a'", code="too_few_classes")
    lonely = [*one_class, ("b/0.png", solid(6, 6, 99))]
    assert_refused(http, zip_of(lonely), 422, "'b' (1)", code="too_few_images")
    # Two files with the same pixels are one image: the class is still too small.
    twins = [*one_class, ("b/0.png", solid(6, 6, 99)), ("b/1.png", solid(6, 6, 99))]
    assert_refused(http, zip_of(twins), 422, "'b' (1)", code="too_few_images")
    assert_refused(http, zip_of([("loose.png", solid(6, 6, 1))]), 400, "'loose.png'", "class folder", code="no_label")


def test_limits_from_settings(start_server: type[Server]) -> None:
    server = start_server(
        OPENMAAS_IMAGE_MAX_PIXELS="400",
        OPENMAAS_ARCHIVE_MAX_FILES="7",
        OPENMAAS_ARCHIVE_MAX_UNCOMPRESSED_BYTES="200000",
    )
    with server.http() as http:
        assert upload(http, zip_of(two_classes())).status_code == 201
        big = zip_of([*two_classes(), ("b/big.png", solid(21, 20, 5))])
        assert_refused(http, big, 413, "'b/big.png'", "21x20", code="image_too_large")
        many = zip_of([*two_classes(), ("b/x.png", solid(4, 4, 1)), ("b/y.png", solid(4, 4, 2))])
        assert_refused(http, many, 413, "more than 7 files", code="too_many_files")
        # Incompressible bytes, so that only the total bound (not the ratio) refuses them.
        noise = np.random.default_rng(0).bytes(250_000)
        stored = zip_of([*two_classes(), ("b/noise.png", noise)], compression=zipfile.ZIP_STORED)
        assert_refused(http, stored, 413, "more than 200000 bytes", code="archive_too_large")


def test_a_member_whose_compressed_stream_is_damaged_is_a_400_naming_it(http: httpx.Client) -> None:
    archive = bytearray(zip_of(two_classes()))
    name_length, extra_length = int.from_bytes(archive[26:28], "little"), int.from_bytes(archive[28:30], "little")
    start = 30 + name_length + extra_length  # the first member's deflate stream
    archive[start : start + 4] = b"\xff\xff\xff\xff"  # a block of the reserved type: zlib refuses it
    first = zipfile.ZipFile(io.BytesIO(bytes(archive))).namelist()[0]
    assert_refused(http, bytes(archive), 400, first, "cannot be read", code="malformed_file")


def test_a_manifest_with_a_field_too_long_for_csv_is_a_400(http: httpx.Client) -> None:
    images = two_classes()
    rows = "file,label\n" + "".join(f"{name},{name.split('/')[0]}\n" for name, _ in images)
    noise = "".join(chr(97 + b % 26) for b in np.random.default_rng(0).integers(0, 256, 200_000))  # no zip bomb
    manifest = rows + "x.png," + noise + "\n"
    assert_refused(http, zip_of([*images, ("labels.csv", manifest.encode())]), 400, "labels.csv", code="malformed_file")


def test_an_image_dataset_has_samples_not_rows(http: httpx.Client) -> None:
    created = upload(http, zip_of(two_classes()))
    assert created.status_code == 201, created.text
    rows = http.get(f"/v1/datasets/{created.json()['id']}/rows")
    assert rows.status_code == 400 and rows.json()["error"]["code"] == "wrong_dataset_kind", rows.text
    assert "/samples" in rows.json()["error"]["message"]
