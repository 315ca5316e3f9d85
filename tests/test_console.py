"""Progress on the terminal: a bar on a terminal, a few plain lines anywhere else, never garbage."""
from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import termios

import numpy as np
import pytest
from PIL import Image

from multigan import console
from multigan.console import Progress, terminal_size, track


class Clock:
    """A stand-in for time.monotonic that moves only when told."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(console.time, "monotonic", fake)
    return fake


@pytest.fixture()
def pty(monkeypatch):
    """A pseudo-terminal: (the file a program writes to, a function that returns what it wrote).

    A fresh one reports 0 columns and 0 lines, as some containers and serial consoles do.
    """
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # no "\n" -> "\r\n": what is read is what was written
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    out = os.fdopen(slave, "w")

    def written() -> str:
        out.flush()
        chunks = []
        while select.select([master], [], [], 0.05)[0]:
            chunks.append(os.read(master, 65536))
        return b"".join(chunks).decode()

    yield out, written
    out.close()
    os.close(master)


def _resize(stream, columns: int, lines: int = 24) -> None:
    fcntl.ioctl(stream.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))


def test_without_a_terminal_progress_is_a_few_plain_lines():
    out = io.StringIO()
    bar = Progress(4400, "train", unit="step", file=out)
    for step in range(4400):
        if step == 4000:
            bar.set_postfix(D="0.693", G="0.701")
        bar.update(1)
    bar.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert 20 <= len(lines) <= 21  # one per 5%
    assert all(line.startswith("train: step ") for line in lines)
    assert lines[-1].startswith("train: step 4,400/4,400 (100%)") and lines[-1].endswith("D=0.693 G=0.701")


def test_a_slow_first_item_does_not_set_the_time_left(clock):
    out = io.StringIO()
    items = []
    for i in track(range(100), "loading clips", unit="clip", file=out):
        clock.now += 60.0 if i == 0 else 0.1  # the first decode pays for imports and JIT compilation
        items.append(i)
    assert items == list(range(100))
    lines = out.getvalue().splitlines()
    # At 6 of 100: 5 items in 0.5 s since the first, so 10 clips/s and 9.4 s left (not 6 x 60 s).
    assert lines[1] == "loading clips: clip 6/100 (6%), 10.0 clip/s, 00:09 left"
    assert lines[-1].startswith("loading clips: clip 100/100 (100%)")


def test_a_long_wait_between_lines_writes_one(clock):
    out = io.StringIO()
    bar = Progress(1_000_000, "train", unit="step", file=out)
    bar.update(1)
    clock.now += console.LINE_SECONDS + 1
    bar.update(1)
    assert len(out.getvalue().splitlines()) == 1  # far from 5%, but a minute passed
    bar.close()


def test_a_stopped_run_says_where_it_ended():
    out = io.StringIO()
    bar = Progress(1000, "train", unit="step", initial=200, file=out)
    for _ in range(7):
        bar.update(1)
    bar.close()
    assert out.getvalue().splitlines()[-1].startswith("train: step 207/1,000 (21%)")


def test_disabled_progress_writes_nothing():
    out = io.StringIO()
    for _ in track(range(50), "loading", file=out, enabled=False):
        pass
    assert out.getvalue() == ""


def test_a_terminal_of_0_columns_gets_plain_lines(pty):
    stream, written = pty
    assert terminal_size(stream) == (0, 0)
    for _ in track(range(40), "train", unit="step", file=stream):
        pass
    text = written()
    assert "\r" not in text
    assert text.splitlines()[-1].startswith("train: step 40/40 (100%)")


def test_columns_0_gets_plain_lines_on_a_wide_terminal(pty, monkeypatch):
    stream, written = pty
    _resize(stream, 120)
    monkeypatch.setenv("COLUMNS", "0")
    for _ in track(range(40), "train", unit="step", file=stream):
        pass
    text = written()
    assert "\r" not in text and "train: step 40/40 (100%)" in text


def test_a_terminal_gets_a_bar_that_survives_shrinking_to_0_columns(pty):
    stream, written = pty
    _resize(stream, 80)
    bar = Progress(50, "train", unit="step", file=stream)
    for _ in range(25):
        bar.update(1)
    bar._bar.refresh()
    wide = written()
    assert "\r" in wide and "train:" in wide and "|" in wide  # a bar, redrawn in place
    assert max(len(frame) for frame in wide.split("\r")) <= 80

    _resize(stream, 0)
    for _ in range(25):
        bar.update(1)
    bar.close()
    frames = [f for f in written().split("\r") if f.strip()]
    assert frames, "nothing drawn after the resize"
    assert frames[-1].strip().startswith("train: 100% 50/50")  # figures without a bar, not a trimmed line


def test_loading_an_image_folder_shows_a_labelled_count(tmp_path, capsys):
    from multigan.data.image_folder import load_image_folder

    root = tmp_path / "faces"
    root.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(root / f"{i}.png")
    dataset = load_image_folder(root, channels=3, height=8, width=8, progress=True)
    assert len(dataset) == 3
    err = capsys.readouterr().err  # not a terminal: plain lines
    assert "loading faces: img 3/3 (100%)" in err and "\r" not in err


def test_without_a_total_lines_come_by_the_minute(clock):
    out = io.StringIO()
    for i in track((i for i in range(500)), "scanning", unit="file", file=out):
        clock.now += 0.5
    lines = out.getvalue().splitlines()
    assert 3 <= len(lines) <= 6  # 250 s: about one a minute and the end, not one per item
    assert lines[-1].startswith("scanning: file 500,") and "2.0 file/s" in lines[-1]
