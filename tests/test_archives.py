"""training.archives: the zip checks and the folder-per-class reading, without the database.

Every zip is built by the test. "Refused" means the whole archive is turned down before anything
is extracted (nothing stored); "rejected" means one file is left out with its reason.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from tests.dataset_helpers import files_under, image_zip, make_zip, mark_encrypted, zip_with_symlink
from tests.helpers import SHARED, image_bytes, noise_image_bytes
from training import archives, storage
from training.archives import ArchiveError, ZipLimits

LIMITS = ZipLimits(max_members=1000, max_total_bytes=50_000_000, max_ratio=100, max_file_bytes=5_000_000)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "dataset"


def run(data: bytes, folder: Path, *, limits: ZipLimits = LIMITS, known=(), labels=None, max_pixels=50_000_000):
    store = storage.ImageStore(folder, max_bytes=limits.max_file_bytes, max_pixels=max_pixels)
    return archives.import_zip(
        io.BytesIO(data), store=store, known=set(known), existing_labels=labels or {}, limits=limits
    )


def refused(data: bytes, folder: Path, **kwargs) -> str:
    with pytest.raises(ArchiveError) as excinfo:
        run(data, folder, **kwargs)
    assert files_under(folder) == []  # refused before a single byte was extracted
    return str(excinfo.value)


def rejected(result, label: str) -> dict[str, str]:
    return {r["file"]: r["reason"] for r in result.labels[label].rejected_files}


# --- Good archives --------------------------------------------------------------------------


def test_folder_per_class_zip_stores_every_image_under_its_hash(folder):
    result = run(image_zip({"cats": 3, "dogs": 2}), folder)
    assert {k: v.added for k, v in result.labels.items()} == {"cats": 3, "dogs": 2}
    assert len(result.added) == 5
    for added in result.added:
        assert storage.image_path(folder, added.image.sha256, "PNG").exists()
        assert storage.thumbnail_path(folder, added.image.sha256).exists()
        assert added.image.width == added.image.height == 48
    assert {a.original_name for a in result.added if a.label == "dogs"} == {"img_000.png", "img_001.png"}


def test_original_bytes_are_kept_exactly(folder):
    jpeg = image_bytes("JPEG", size=(80, 60))
    result = run(make_zip({"cats/a.jpg": jpeg}), folder)
    stored = result.added[0].image
    assert stored.sha256 == storage.sha256(jpeg)
    assert storage.image_path(folder, stored.sha256, "JPEG").read_bytes() == jpeg


def test_one_enclosing_top_folder_is_tolerated(folder):
    result = run(image_zip({"cats": 2, "dogs": 1}, prefix="my photos/"), folder)
    assert sorted(result.labels) == ["cats", "dogs"]


def test_macosx_folder_and_hidden_files_are_ignored_without_a_word(folder):
    members = {
        "cats/a.png": noise_image_bytes(1),
        "__MACOSX/cats/._a.png": b"resource fork",
        "cats/.DS_Store": b"junk",
        ".hidden/x.png": noise_image_bytes(2),
        "cats/Thumbs.db": b"junk",
    }
    result = run(make_zip(members), folder)
    assert list(result.labels) == ["cats"]
    assert result.labels["cats"].added == 1
    assert result.labels["cats"].rejected == 0
    assert result.other == []
    assert result.ignored == 4


def test_images_in_sub_folders_join_their_label_with_a_note(folder):
    result = run(make_zip({"cats/2019/a.png": noise_image_bytes(1), "cats/b.png": noise_image_bytes(2)}), folder)
    assert result.labels["cats"].added == 2
    assert "Images in sub-folders of a label folder were added to that label." in result.notes


def test_real_photo_folder_imports_every_photo(folder):
    photos = SHARED / "photos" / "signdigits5"
    if not photos.is_dir():
        pytest.skip("../shared/photos/signdigits5 is not available on this machine")
    members = {f"{p.parent.name}/{p.name}": p.read_bytes() for p in sorted(photos.glob("*/*")) if p.is_file()}
    result = run(make_zip(members), folder, limits=ZipLimits(5000, 500_000_000, 100, 20_000_000))
    assert sorted(result.labels) == ["0", "1", "2", "3", "4"]
    assert sum(o.added for o in result.labels.values()) + sum(o.duplicates for o in result.labels.values()) == len(
        members
    )
    assert all(o.rejected == 0 for o in result.labels.values())


# --- Whole-archive refusals -------------------------------------------------------------------


def test_a_file_that_is_not_a_zip_is_refused_with_message(folder):
    message = refused(image_bytes("PNG"), folder)
    assert message.startswith("This file is not a zip archive, or it is damaged.")


def test_an_empty_zip_is_refused_with_message(folder):
    assert "The zip archive is empty" in refused(make_zip({}), folder)


@pytest.mark.parametrize(
    "name",
    ["../evil.png", "cats/../../evil.png", "/etc/cats/x.png", "C:/cats/x.png", "..\\x.png", "d:\\cats\\x.png", "C:"],
)
def test_zip_with_parent_or_absolute_member_path_is_refused_with_message(folder, name):
    data = make_zip({"cats/ok.png": noise_image_bytes(1), name: noise_image_bytes(2)})
    message = refused(data, folder)
    assert "unsafe path" in message and "points outside the archive" in message


def test_folder_with_a_colon_is_not_taken_for_a_windows_drive(folder):
    """Only a letter and a colon before a slash (or alone) is a drive; `a:b` is an odd folder name."""
    data = make_zip({"a:b/x.png": noise_image_bytes(1), "cats/ok.png": noise_image_bytes(2), "ab:/y.png": b"y"})
    result = run(data, folder)
    assert result.labels["cats"].added == 1
    reasons = {r["file"]: r["reason"] for r in result.other}
    assert reasons["a:b/x.png"].startswith("The folder 'a:b' cannot be a label: A label name cannot contain :")
    assert "ab:/y.png" in reasons


def test_zip_with_symlink_member_is_refused_with_message(folder):
    data = zip_with_symlink("cats/link.png", "/etc/passwd", {"cats/ok.png": noise_image_bytes(1)})
    assert "symbolic link ('cats/link.png')" in refused(data, folder)


def test_encrypted_zip_is_refused_with_message(folder):
    data = mark_encrypted(image_zip({"cats": 1}))
    assert "password-protected" in refused(data, folder)


def test_zip_with_too_many_members_is_refused_before_extracting(folder):
    data = image_zip({"cats": 6})
    message = refused(data, folder, limits=ZipLimits(5, 10**9, 100, 10**7))
    assert message == (
        "The zip holds 6 files and folders; the limit is 5. "
        "Split it into smaller zips, or ask your administrator to raise the limit."
    )


def test_zip_larger_than_the_uncompressed_cap_is_refused_before_extracting(folder):
    data = image_zip({"cats": 3}, size=(200, 200))
    message = refused(data, folder, limits=ZipLimits(1000, 100_000, 100, 10**7))
    assert "; the limit is 98 KiB. Split it into smaller zips, or ask your administrator" in message


def test_zip_bomb_member_with_a_huge_ratio_is_refused_before_extracting(folder):
    data = make_zip({"cats/ok.png": noise_image_bytes(1), "cats/bomb.bmp": b"\0" * 20_000_000})
    assert len(data) < 100_000
    message = refused(data, folder)
    assert "looks like a zip bomb" in message and "'cats/bomb.bmp'" in message


def test_bytes_are_counted_while_streaming_even_when_the_directory_lies(folder, monkeypatch):
    """A member whose real content is larger than it claims is cut at the per-image limit."""
    big = noise_image_bytes(1, size=(600, 600))
    data = make_zip({"cats/big.png": big})
    monkeypatch.setattr(archives, "_check_archive", lambda infos, limits: None)  # pretend the checks passed
    real_infolist = zipfile.ZipFile.infolist

    def lying(self):
        infos = real_infolist(self)
        for info in infos:
            info.file_size = 10  # the directory claims 10 bytes; zipfile then stops there (CRC fails)
        return infos

    monkeypatch.setattr(zipfile.ZipFile, "infolist", lying)
    result = run(data, folder)
    assert rejected(result, "cats") == {
        "cats/big.png": "The file is damaged inside the zip (its checksum does not match)."
    }
    assert files_under(folder) == []


# --- Per-file rejections and duplicates --------------------------------------------------------


def test_non_image_member_is_rejected_with_reason(folder):
    result = run(make_zip({"cats/a.png": noise_image_bytes(1), "cats/notes.txt": b"hello"}), folder)
    assert result.labels["cats"].added == 1
    assert rejected(result, "cats") == {
        "cats/notes.txt": "This file is not an image TransferLab can read (JPEG, PNG, GIF, WebP, BMP or TIFF)."
    }


def test_corrupt_image_is_rejected_with_reason(folder):
    truncated = noise_image_bytes(1, fmt="JPEG")[:-400]
    result = run(make_zip({"cats/broken.jpg": truncated}), folder)
    assert rejected(result, "cats") == {
        "cats/broken.jpg": "The image data is damaged or incomplete (the file may be truncated)."
    }
    assert files_under(folder) == []


def test_nested_archive_is_rejected_not_extracted(folder):
    inner = image_zip({"dogs": 1})
    result = run(make_zip({"cats/more.zip": inner, "cats/disguised.png": inner}), folder)
    reasons = rejected(result, "cats")
    assert reasons["cats/more.zip"] == "An archive inside the archive is not opened: extract it first."
    assert reasons["cats/disguised.png"] == "An archive inside the archive is not opened: extract it first."
    assert "dogs" not in result.labels


def test_image_over_the_pixel_limit_is_rejected_with_reason(folder):
    result = run(make_zip({"cats/huge.png": image_bytes("PNG", size=(300, 200))}), folder, max_pixels=50_000)
    assert "300 x 200 pixels" in rejected(result, "cats")["cats/huge.png"]


def test_image_over_the_size_limit_is_rejected_with_reason(folder):
    big = noise_image_bytes(1, size=(300, 300))
    result = run(
        make_zip({"cats/big.png": big}, compression=zipfile.ZIP_STORED),
        folder,
        limits=ZipLimits(1000, 10**8, 100, 100_000),
    )
    reason = rejected(result, "cats")["cats/big.png"]
    assert reason == "The file is 264 KiB; the limit for one image is 98 KiB. Resize or compress it."


def test_duplicate_images_inside_one_zip_are_skipped(folder):
    same = noise_image_bytes(1)
    result = run(make_zip({"cats/a.png": same, "cats/b.png": same, "dogs/c.png": same}), folder)
    assert result.labels["cats"].added == 1
    assert result.labels["cats"].duplicate_files == [{"file": "cats/b.png", "reason": "Same picture as cats/a.png."}]
    assert result.labels["dogs"].duplicates == 1
    assert len(result.added) == 1


def test_images_already_in_the_dataset_are_skipped_as_duplicates(folder):
    known = noise_image_bytes(1)
    result = run(
        make_zip({"cats/a.png": known, "cats/b.png": noise_image_bytes(2)}), folder, known={storage.sha256(known)}
    )
    assert result.labels["cats"].added == 1
    assert result.labels["cats"].duplicate_files == [{"file": "cats/a.png", "reason": "Already in the dataset."}]


def test_files_outside_label_folders_are_rejected_with_reason(folder):
    result = run(make_zip({"README.txt": b"hi", "cats/a.png": noise_image_bytes(1)}), folder)
    assert result.other == [
        {"file": "README.txt", "reason": "Not inside a label folder: put it in the folder of its label."}
    ]


def test_empty_label_folder_gets_a_note_and_no_label(folder):
    result = run(
        make_zip({"cats/a.png": noise_image_bytes(1), "dogs/": None, "owls/": None, "owls/.keep": b""}), folder
    )
    assert "dogs" not in result.labels
    assert "Folder “dogs” is empty: no label was created for it." in result.notes
    assert "Folder “owls” is empty: no label was created for it." in result.notes


def test_folder_names_that_cannot_be_labels_are_rejected_with_reason(folder):
    long_name = "x" * 70
    result = run(make_zip({f"{long_name}/a.png": noise_image_bytes(1), " /b.png": noise_image_bytes(2)}), folder)
    assert result.labels == {}
    reasons = {r["file"]: r["reason"] for r in result.other}
    assert reasons[f"{long_name}/a.png"] == (
        f"The folder '{long_name}' cannot be a label: A label name can be at most 64 characters; this one has 70."
    )
    assert reasons[" /b.png"] == "The folder ' ' cannot be a label: A label name cannot be empty."
    assert files_under(folder) == []


def test_folders_differing_only_in_case_or_spaces_become_one_label(folder):
    result = run(make_zip({"Cats/a.png": noise_image_bytes(1), "cats /b.png": noise_image_bytes(2)}), folder)
    assert list(result.labels) == ["Cats"]
    assert result.labels["Cats"].added == 2
    assert "Folder “cats ” went into the label “Cats”: label names ignore case and surrounding spaces." in result.notes


def test_folder_matching_an_existing_label_keeps_the_existing_spelling(folder):
    result = run(make_zip({"CATS/a.png": noise_image_bytes(1)}), folder, labels={"cats": "cats"})
    assert list(result.labels) == ["cats"]
    assert result.labels["cats"].new is False


# --- Export ------------------------------------------------------------------------------------


def test_export_names_are_safe_and_unique_per_label(tmp_path):
    used: set[str] = set()
    item = archives.ExportItem("cats", "a.png", "ab" * 32, "PNG", tmp_path / "x")
    assert archives.export_name(item, used) == "cats/a.png"
    assert archives.export_name(archives.ExportItem("cats", "A.PNG", "cd" * 32, "PNG", tmp_path), used) == (
        "cats/A-cdcdcdcdcdcd.PNG"
    )
    assert archives.export_name(archives.ExportItem("cats", ".hidden", "ef" * 32, "JPEG", tmp_path), used) == (
        "cats/efefefefefefefef.jpg"
    )


def test_export_streams_a_zip_that_imports_back_to_the_same_files(folder, tmp_path):
    first = run(image_zip({"cats": 2, "dogs": 1}), folder)
    items = [
        archives.ExportItem(
            a.label, a.original_name, a.image.sha256, "PNG", storage.image_path(folder, a.image.sha256, "PNG")
        )
        for a in first.added
    ]
    exported = b"".join(archives.iter_export(items, {"format": 1}))
    assert zipfile.ZipFile(io.BytesIO(exported)).testzip() is None
    again = run(exported, tmp_path / "copy")
    assert {(a.label, a.image.sha256) for a in again.added} == {(a.label, a.image.sha256) for a in first.added}
    assert again.manifest == {"format": 1}


def test_member_compressed_with_an_unsupported_method_is_rejected_with_reason(folder):
    data = bytearray(make_zip({"cats/a.png": noise_image_bytes(1)}, compression=zipfile.ZIP_STORED))
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # method 9 = Deflate64
        pos = data.find(signature)
        data[pos + offset : pos + offset + 2] = (9).to_bytes(2, "little")
    result = run(bytes(data), folder)
    assert rejected(result, "cats")["cats/a.png"].startswith(
        "The file is compressed with a method TransferLab cannot read"
    )


def test_enclosing_folder_with_a_readme_and_manifest_is_still_stripped(folder):
    members = {
        "export/README.md": b"# our pets",
        "export/transferlab.json": b'{"format": 1}',
        "export/cats/a.png": noise_image_bytes(1),
        "export/dogs/b.png": noise_image_bytes(2),
    }
    result = run(make_zip(members), folder)
    assert sorted(result.labels) == ["cats", "dogs"]
    assert result.manifest == {"format": 1}
    assert result.other == [
        {"file": "README.md", "reason": "Not inside a label folder: put it in the folder of its label."}
    ]


def test_label_folder_with_pictures_and_a_sub_folder_is_not_mistaken_for_an_enclosing_folder(folder):
    result = run(make_zip({"cats/a.png": noise_image_bytes(1), "cats/2019/b.png": noise_image_bytes(2)}), folder)
    assert list(result.labels) == ["cats"]
    assert result.labels["cats"].added == 2


# --- The optional manifest ---------------------------------------------------------------------

UNREADABLE = "transferlab.json could not be read; splits were drawn afresh."


@pytest.mark.parametrize(
    "manifest",
    [
        b'{"dataset": {"validation_percent": 20, "test_percent": 0, "split_seed": 1e400}}',
        b'{"dataset": {"split_seed": -1e400}}',
        b'{"dataset": {"split_seed": NaN}}',
        b'{"splits": Infinity}',
        b'{"deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"dataset": {"split_seed": 1' + b"0" * 5000 + b"}}",
        b'{"dataset": "pets"}',
        b'{"labels": ["cats", "dogs"]}',
        b'{"splits": 7}',
        b'"just a string"',
        b"\xff\xfe not utf-8",
        b"{",
    ],
    ids=[
        "seed-1e400", "seed--1e400", "nan", "infinity", "nested-deep", "top-level-deep", "huge-int", "dataset-str",
        "labels-list", "splits-int", "string", "bytes", "truncated",
    ],
)  # fmt: skip
def test_manifest_that_cannot_be_used_gives_the_note_and_the_import_goes_on(folder, manifest):
    data = make_zip({"cats/a.png": noise_image_bytes(1), "transferlab.json": manifest})
    result = run(data, folder)
    assert result.manifest is None
    assert UNREADABLE in result.notes
    assert result.labels["cats"].added == 1


def test_manifest_values_of_the_wrong_type_are_dropped_one_by_one(folder):
    """Inside well-formed sections, a bad value is left out and the rest of the manifest still counts."""
    manifest = {
        "dataset": {"validation_percent": "20", "test_percent": 0, "split_seed": 7, "description": ["x"]},
        "labels": {"cats": "Small felines", "dogs": {"a": 1}, "owls": None},
        "splits": {"ab" * 32: "validation", "cd" * 32: ["train"], "ef" * 32: "nowhere"},
    }
    data = make_zip({"cats/a.png": noise_image_bytes(1), "transferlab.json": json.dumps(manifest).encode()})
    result = run(data, folder)
    assert result.manifest == {
        "dataset": {"test_percent": 0, "split_seed": 7},
        "labels": {"cats": "Small felines"},
        "splits": {"ab" * 32: "validation"},
    }
    assert UNREADABLE not in result.notes
