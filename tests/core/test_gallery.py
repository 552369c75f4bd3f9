import errno
import os
import threading

import pytest
from PIL import Image

from studio.core import gallery as gallery_module
from studio.core.errors import UserError
from studio.core.gallery import Gallery, atomic_write_bytes
from studio.core.jobs import TextToImage
from studio.core.metadata import format_parameters, png_info, read_png_request


def _save(g, seed, prompt="a red circle"):
    job = TextToImage(prompt=prompt, seed=seed)
    image = Image.new("RGB", (16, 16), (seed % 256, 0, 0))
    return g.save(image, format_parameters(job, "0123456789", "tiny"), job.to_dict())


def _pngs(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".png")


def test_saved_items_survive_reopen_newest_first(tmp_path):
    g = Gallery(tmp_path)
    first = _save(g, 1)
    second = _save(g, 2, prompt="a blue square")
    assert first.path.is_file() and second.path.is_file()
    assert read_png_request(second.path)["prompt"] == "a blue square"
    g.close()

    reopened = Gallery(tmp_path)
    items = reopened.list_items()
    assert [i.seed for i in items] == [2, 1]
    assert items[0].prompt == "a blue square"
    assert items[0].request["seed"] == 2
    assert reopened.list_items(limit=1, offset=1)[0].seed == 1
    assert reopened.count() == 2
    conn = reopened._connect()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_failed_replace_leaves_no_partial_file_and_earlier_outputs_intact(tmp_path, monkeypatch):
    g = Gallery(tmp_path)
    kept = _save(g, 1)
    before = kept.path.read_bytes()

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gallery_module.os, "replace", full_disk)
    with pytest.raises(UserError, match="is full"):
        _save(g, 2)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == sorted(
        [kept.path.name] + [n for n in os.listdir(tmp_path) if n.startswith(".latent-studio-index")]
    )
    assert kept.path.read_bytes() == before
    assert [i.seed for i in g.list_items()] == [1]


def test_failure_mid_write_removes_the_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def failing_fsync(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(gallery_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new" * 1000)
    assert os.listdir(tmp_path) == ["x.bin"]
    assert target.read_bytes() == b"old"


def test_unwritable_folder_gives_a_clear_message(tmp_path, monkeypatch):
    g = Gallery(tmp_path / "out")
    _save(g, 1)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(gallery_module.tempfile, "mkstemp", denied)
    with pytest.raises(UserError, match="Cannot write to the outputs folder .*permission denied"):
        _save(g, 2)


def test_outputs_folder_that_is_a_file(tmp_path):
    blocker = tmp_path / "outputs"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="outputs folder"):
        _save(Gallery(blocker), 1)


def test_index_rows_lost_in_a_crash_are_rebuilt_from_the_pngs(tmp_path):
    g = Gallery(tmp_path)
    _save(g, 1)
    g.close()
    # A crash after the PNG landed but before its row was written.
    job = TextToImage(prompt="recovered", seed=9)
    text = format_parameters(job, "", "tiny")
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=png_info(text, job.to_dict()))
    atomic_write_bytes(tmp_path / "orphan.png", buf.getvalue())
    # And a foreign PNG with only A1111 text.
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "from elsewhere\nSteps: 5, Sampler: Euler a, Seed: 3, Size: 8x8")
    Image.new("RGB", (8, 8)).save(tmp_path / "foreign.png", pnginfo=info)

    reopened = Gallery(tmp_path)
    by_prompt = {i.prompt: i for i in reopened.list_items()}
    assert set(by_prompt) == {"a red circle", "recovered", "from elsewhere"}
    assert by_prompt["recovered"].seed == 9
    assert by_prompt["from elsewhere"].seed == 3


def test_rows_of_deleted_files_are_dropped_and_delete_works(tmp_path):
    g = Gallery(tmp_path)
    a = _save(g, 1)
    b = _save(g, 2)
    a.path.unlink()
    g.close()
    reopened = Gallery(tmp_path)
    assert [i.seed for i in reopened.list_items()] == [2]
    assert reopened.delete(b)
    assert not b.path.exists()
    assert reopened.count() == 0
    assert not reopened.delete(b)


def test_saves_from_several_threads(tmp_path):
    g = Gallery(tmp_path)
    errors = []

    def worker(base):
        try:
            for i in range(5):
                _save(g, base * 10 + i)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert g.count() == 20
    assert len(_pngs(tmp_path)) == 20
