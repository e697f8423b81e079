"""Omniglot: the real official archives, bad input, splits, episodes, the sampler's determinism and DDP sharding."""

from __future__ import annotations

import io
import logging
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from lit_papers.data.download import DatasetError, DatasetMissingError
from lit_papers.data.episodes import EpisodeImages, EpisodeSampler, EpisodeTask, FixedEpisodes, draw_episode
from lit_papers.data.omniglot import OmniglotDataModule, class_table, split_units
from lit_papers.data.omniglot_files import read_characters, read_official_runs, read_split_file


@pytest.fixture(scope="module")
def small1(shared_data):
    return read_characters(shared_data / "omniglot" / "images_background_small1.zip", 28)


def _png(ink_square: bool = True, size: int = 105) -> bytes:
    img = Image.new("1", (size, size), 1)  # True = white background, as in the release
    if ink_square:
        for x in range(40, 60):
            for y in range(30, 50):
                img.putpixel((x, y), 0)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


# -- the real files ---------------------------------------------------------------------------------------------
def test_small_background_set_reads_136_characters_of_20_drawings(small1):
    assert len(small1.names) == 136
    assert sorted(set(small1.alphabets)) == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    assert small1.counts.tolist() == [20] * 136
    assert small1.images.shape == (2720, 28, 28) and small1.images.dtype == np.uint8
    ink = small1.images.astype(np.float64).mean() / 255
    assert 0.03 < ink < 0.2, "ink must be the minority (the release stores ink as False; we invert)"
    assert small1.skipped == []


def test_decoded_drawing_matches_the_png_inverted(shared_data):
    path = shared_data / "omniglot" / "images_background_small1.zip"
    chars = read_characters(path, 105)
    with zipfile.ZipFile(path) as zf:
        member = sorted(n for n in zf.namelist() if n.startswith("images_background_small1/Balinese/character01/")
                        and n.endswith(".png"))[0]
        raw = np.asarray(Image.open(io.BytesIO(zf.read(member))))  # bool, True = background
    np.testing.assert_array_equal(chars.images[0], np.where(raw, 0, 255))


def test_extracted_folder_equals_zip(shared_data, tmp_path, small1):
    with zipfile.ZipFile(shared_data / "omniglot" / "images_background_small1.zip") as zf:
        zf.extractall(tmp_path)
    (tmp_path / "images_background_small1" / "Thumbs.db").write_bytes(b"junk")
    folder = read_characters(tmp_path / "images_background_small1", 28)
    assert folder.names == small1.names
    np.testing.assert_array_equal(folder.images, small1.images)
    assert len(folder.skipped) == 1


def test_official_runs(shared_data):
    runs = read_official_runs(shared_data / "omniglot" / "all_runs.zip", 28)
    assert runs.support.shape == (20, 20, 28, 28) and runs.query.shape == (20, 20, 28, 28)
    # run01/class_labels.txt: item01 -> class08, item02 -> class09, item03 -> class02
    assert runs.query_labels[0, :3].tolist() == [7, 8, 1]
    assert all(sorted(r) == list(range(20)) for r in runs.query_labels.tolist())


# -- bad input --------------------------------------------------------------------------------------------------
def test_png_without_alphabet_folder_is_an_error(tmp_path):
    path = _zip(tmp_path / "images_background.zip", {"images_background/character01/0001_01.png": _png()})
    with pytest.raises(DatasetError, match="character01/0001_01.png.*missing alphabet"):
        read_characters(path)


def test_non_png_files_are_counted_skips(tmp_path, caplog):
    path = _zip(tmp_path / "images_background.zip", {
        "images_background/Latin/character01/0001_01.png": _png(),
        "images_background/Latin/character01/notes.txt": b"hello",
        "__MACOSX/images_background/._x": b"x",
    })
    with caplog.at_level(logging.WARNING):
        chars = read_characters(path)
    assert chars.names == ["Latin/character01"] and len(chars.images) == 1
    assert len(chars.skipped) == 2 and "skipped 2 non-PNG" in caplog.text


def test_unreadable_png_names_the_member(tmp_path):
    path = _zip(tmp_path / "images_background.zip", {
        "images_background/Latin/character01/0001_01.png": _png(),
        "images_background/Latin/character01/0001_02.png": b"\x89PNG truncated garbage",
    })
    with pytest.raises(DatasetError, match="0001_02.png: unreadable image"):
        read_characters(path)


def test_character_folder_without_drawings_is_an_error(tmp_path):
    root = tmp_path / "images_background"
    (root / "Latin" / "character01").mkdir(parents=True)
    (root / "Latin" / "character01" / "0001_01.png").write_bytes(_png())
    (root / "Latin" / "character02").mkdir()
    (root / "Latin" / "character02" / "Thumbs.db").write_bytes(b"x")
    with pytest.raises(DatasetError, match="Latin/character02"):
        read_characters(root)


def test_corrupt_zip_and_malformed_class_labels(tmp_path):
    bad = tmp_path / "images_background.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DatasetError, match="not a readable zip"):
        read_characters(bad)
    runs = _zip(tmp_path / "all_runs.zip", {"run01/class_labels.txt": b"run01/test/item01.png training/class01.png\n",
                                            "run01/training/class01.png": _png(), "run01/test/item01.png": _png()})
    with pytest.raises(DatasetError, match="class_labels.txt line 1: malformed"):
        read_official_runs(runs)


def test_missing_files_without_download_name_the_file(tmp_path):
    dm = OmniglotDataModule(root=str(tmp_path), download=False)
    with pytest.raises(DatasetMissingError, match="images_background_small1.zip"):
        dm.prepare_data()


def test_prepare_data_fetches_and_md5_checks_the_official_files(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("LIT_PAPERS_MIRROR", str(shared_data))  # <mirror>/omniglot/<file>, no network
    dm = OmniglotDataModule(root=str(tmp_path))
    dm.prepare_data()
    assert (tmp_path / "omniglot" / "images_background_small1.zip").is_file()
    assert (tmp_path / "omniglot" / "all_runs.zip").is_file()


# -- splits -----------------------------------------------------------------------------------------------------
def test_character_and_alphabet_splits(shared_data):
    dm = OmniglotDataModule(root=str(shared_data), test_size=16, val_size=8, rotations=True)
    dm.setup("fit")
    chars = {s: set(t[:, 0].tolist()) for s, t in dm.tables.items()}
    assert [len(chars[s]) for s in ("train", "val", "test")] == [112, 8, 16]
    assert not (chars["train"] & chars["test"]) and not (chars["train"] & chars["val"])
    assert len(dm.tables["train"]) == 4 * 112 and set(dm.tables["train"][:, 1].tolist()) == {0, 1, 2, 3}
    dm2 = OmniglotDataModule(root=str(shared_data), split="alphabets", test_size=1, rotations=False)
    dm2.setup("fit")
    alphabets = {s: {dm2.characters.alphabets[c] for c in t[:, 0]} for s, t in dm2.tables.items() if len(t)}
    assert len(alphabets["test"]) == 1 and not (alphabets["test"] & alphabets["train"])
    with pytest.raises(ValueError, match="leave no training"):
        split_units(["a", "b"], 1, 1, 0, "characters")


def test_vinyals_split_files(tmp_path):
    root = tmp_path / "omniglot"
    members = {f"images_background/{a}/character0{c}/000{c}_0{d}.png": _png()
               for a in ("Latin", "Greek") for c in (1, 2) for d in (1, 2)}
    _zip(root.mkdir(parents=True) or root / "images_background.zip", members)
    splits = root / "splits" / "vinyals"
    splits.mkdir(parents=True)
    (splits / "train.txt").write_text("Latin/character01/rot000\nLatin/character01/rot090\nLatin/character02/rot000\n")
    (splits / "val.txt").write_text("Greek/character01/rot180\n")
    (splits / "test.txt").write_text("Greek/character02/rot270\n")
    dm = OmniglotDataModule(root=str(tmp_path), sources=["images_background"], split="vinyals", official_runs=False)
    dm.setup("fit")
    names = dm.characters.names
    assert [(names[c], k) for c, k in dm.tables["train"]] == [("Latin/character01", 0), ("Latin/character01", 1),
                                                             ("Latin/character02", 0)]
    assert [(names[c], k) for c, k in dm.tables["test"]] == [("Greek/character02", 3)]
    (splits / "trainval.txt").write_text("Latin/character02/rot000\nGreek/character01/rot180\n")
    dm = OmniglotDataModule(root=str(tmp_path), sources=["images_background"], split="vinyals", official_runs=False,
                            vinyals_train="trainval")
    dm.setup("fit")
    assert [(names[c], k) for c, k in dm.tables["train"]] == [("Latin/character02", 0), ("Greek/character01", 2)]
    assert [(names[c], k) for c, k in dm.tables["test"]] == [("Greek/character02", 3)]
    (splits / "test.txt").write_text("Hebrew/character01/rot000\n")
    dm = OmniglotDataModule(root=str(tmp_path), sources=["images_background"], split="vinyals", official_runs=False)
    with pytest.raises(DatasetError, match="alphabet Hebrew"):
        dm.setup("fit")
    (splits / "test.txt").write_text("Hebrew/character01\n")
    with pytest.raises(DatasetError, match="malformed split line"):
        read_split_file(splits / "test.txt")


# -- episodes ---------------------------------------------------------------------------------------------------
def _sampler(small1, **kw):
    table = class_table(list(range(136)), rotations=True)
    args = dict(way=20, shot=2, query=3, episodes=10, seed=7)
    args.update(kw)
    return table, EpisodeSampler(table[:, 0], small1.starts, small1.counts, **args)


def test_episode_never_mixes_classes_and_labels_are_reindexed(small1):
    table, sampler = _sampler(small1, batch=2)
    builder = EpisodeImages(small1.images, table)
    for episode in sampler:
        batch = builder.build(episode)
        chars = table[episode.classes, 0]  # (B, N) character of each episode class
        assert all(len(set(row)) == len(row) for row in episode.classes.tolist())  # N distinct classes
        for b in range(2):
            for n in range(20):
                rows = episode.images[b, n]
                start, count = small1.starts[chars[b, n]], small1.counts[chars[b, n]]
                assert ((rows >= start) & (rows < start + count)).all(), "image from another character"
                assert len(set(rows.tolist())) == 5, "a drawing used twice in one class"
        assert batch["support_labels"][0].tolist() == [n for n in range(20) for _ in range(2)]
        assert batch["query_labels"][0].tolist() == [n for n in range(20) for _ in range(3)]


def test_rotation_classes_are_rotated_drawings(small1):
    table = np.array([[5, 0], [5, 1], [5, 2], [5, 3]])
    builder = EpisodeImages(small1.images, table)
    rng = np.random.default_rng(0)
    episode = draw_episode(rng, table[:, 0], small1.starts, small1.counts, way=4, shot=1, query=0)
    batch = builder.build(episode)
    for n in range(4):
        k = int(table[episode.classes[0, n], 1])
        expected = np.rot90(small1.images[episode.images[0, n, 0]], k) / 255.0
        np.testing.assert_allclose(batch["support"][0, n, 0].numpy(), expected, atol=1e-6)


def test_shuffled_episodes_keep_image_label_pairs(small1):
    table = class_table(list(range(136)), rotations=False)
    plain, shuffled = EpisodeImages(small1.images, table), EpisodeImages(small1.images, table, shuffle=True)
    episode = draw_episode(np.random.default_rng(1), table[:, 0], small1.starts, small1.counts, way=5, shot=10,
                           query=0)
    a, b = plain.build(episode), shuffled.build(episode)
    assert a["support_labels"].tolist() != b["support_labels"].tolist()
    for i in range(50):  # each shuffled image is the plain image with the same label
        label = int(b["support_labels"][0, i])
        match = [j for j in range(50) if torch.equal(a["support"][0, j], b["support"][0, i])]
        assert match and all(int(a["support_labels"][0, j]) == label for j in match)


def test_sampler_is_deterministic_and_epochs_differ(small1):
    _, s1 = _sampler(small1)
    _, s2 = _sampler(small1)
    first = [e.images for e in s1]
    assert all(np.array_equal(x, y) for x, y in zip(first, [e.images for e in s2]))
    s1.set_epoch(1)
    assert not np.array_equal(first[0], next(iter(s1)).images)
    _, s3 = _sampler(small1, seed=8)
    assert not np.array_equal(first[0], next(iter(s3)).images)


def test_ddp_ranks_draw_disjoint_shares_of_the_single_process_stream(small1):
    _, single = _sampler(small1, episodes=10)
    _, r0 = _sampler(small1, episodes=9, rank=0, world_size=2)
    _, r1 = _sampler(small1, episodes=9, rank=1, world_size=2)
    assert len(r0) == len(r1) == 5  # ceil(9 / 2): every rank steps the same number of times
    stream = [e.images for e in single]
    e0, e1 = [e.images for e in r0], [e.images for e in r1]
    for i in range(5):
        np.testing.assert_array_equal(e0[i], stream[2 * i])
        np.testing.assert_array_equal(e1[i], stream[2 * i + 1])
        assert not np.array_equal(e0[i], e1[i])


def test_sampler_resume_skips_consumed_episodes(small1):
    _, full = _sampler(small1)
    _, resumed = _sampler(small1)
    resumed.skip_first(0, 4)
    assert [e.seed for e in resumed] == [e.seed for e in full][4:]


def test_infeasible_episodes_are_refused(small1):
    with pytest.raises(ValueError, match="only 20 drawings"):
        _sampler(small1, shot=15, query=10)
    with pytest.raises(ValueError, match="need 600 classes"):
        _sampler(small1, way=600)


def test_fixed_eval_episodes_are_reproducible(small1):
    table = class_table(list(range(10)), rotations=True)
    make = lambda: FixedEpisodes(EpisodeImages(small1.images, table), table[:, 0], small1.starts,  # noqa: E731
                                 small1.counts, task=EpisodeTask(5, 1, 5, 3), seed=0)
    a, b = make(), make()
    assert len(a) == 3 and a.name == "5way_1shot"
    for i in range(3):
        assert torch.equal(a[i]["support"], b[i]["support"]) and torch.equal(a[i]["query"], b[i]["query"])


def test_datamodule_batches(shared_data):
    dm = OmniglotDataModule(root=str(shared_data), test_size=16, way=60, shot=1, query=5,
                            test_tasks=[EpisodeTask(20, 5, 5, 2)], episodes_per_epoch=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["support"].shape == (1, 60, 1, 28, 28) and batch["query"].shape == (1, 300, 1, 28, 28)
    assert batch["support"].dtype == torch.float32 and 0 <= batch["support"].min() and batch["support"].max() <= 1
    loaders = dm.test_dataloader()
    names = [next(iter(dl))["task"] for dl in loaders]
    assert names == ["official_20way_1shot", "20way_5shot"] and len(loaders[0]) == 20
    assert dm.val_dataloader() == []


def test_existing_archive_with_another_md5_is_used_and_its_md5_logged(tmp_path, caplog):
    """The shared full zips are pixel-exact rebuilds whose md5 differs from the official one: accept, log both."""
    import hashlib

    root = tmp_path / "omniglot"
    root.mkdir()
    _zip(root / "images_background.zip", {"images_background/Latin/character01/0001_01.png": _png()})
    digest = hashlib.md5((root / "images_background.zip").read_bytes()).hexdigest()
    dm = OmniglotDataModule(root=str(tmp_path), sources=["images_background"], official_runs=False, download=False)
    with caplog.at_level(logging.INFO, logger="lit_papers.data.omniglot"):
        dm.prepare_data()  # no download attempted (download=False would raise for a missing file)
    assert dm.archive_md5 == {"images_background": digest}
    assert digest in caplog.text and "68d2efa1b9178cc56df9314c21c6e718" in caplog.text


def test_small1_alphabets_split_holds_out_whole_alphabets(shared_data):
    """configs/*/small1_*_alphabets.yaml: test_size 1 alphabet, split_seed 0 -> Greek (24 characters)."""
    dm = OmniglotDataModule(root=str(shared_data), split="alphabets", test_size=1, split_seed=0, rotations=True,
                            official_runs=False)
    dm.setup("fit")
    alphabets = {s: {dm.characters.alphabets[c] for c in t[:, 0]} for s, t in dm.tables.items() if len(t)}
    assert alphabets["test"] == {"Greek"} and alphabets["train"] == {"Balinese", "Early_Aramaic", "Korean", "Latin"}
    assert len(dm.tables["test"]) == 24 * 4 and len(dm.tables["train"]) == (136 - 24) * 4
