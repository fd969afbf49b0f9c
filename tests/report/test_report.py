"""The HTML report in a real headless Chromium, and what hostile DICOM text can and cannot do."""

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anogan.cli import main
from tests.scoring.phantom import lesion_volume, trained_model, write_ct_series

CHROMIUM = shutil.which("chromium")
HOSTILE_NAME = "<script>alert(1)</script>"
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run)")


def chromium(page: Path, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a file, logging console messages to stderr."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        *arguments,
        page.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def console_problems(stderr: str) -> list[str]:
    """Console messages, script errors and refused loads Chromium logged for the page."""
    pattern = re.compile(r"CONSOLE|Uncaught|Refused to|ERR_|Content Security Policy", re.I)
    return [line for line in stderr.splitlines() if pattern.search(line)]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.policy = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "meta" and values.get("http-equiv") == "Content-Security-Policy":
            self.policy = values.get("content") or ""
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster", "data") and value:
                self.urls.append(value)


@pytest.fixture(scope="module")
def hostile_output(tmp_path_factory) -> tuple[Path, Path]:
    """A DICOM series with a script for a patient name and `../` in its UID and patient ID."""
    model = trained_model(tmp_path_factory.getbasetemp() / "phantom-model")
    sandbox = tmp_path_factory.mktemp("hostile")
    volume, _ = lesion_volume(6, (2, 3))
    write_ct_series(
        sandbox / "inputs",
        volume,
        patient_name=HOSTILE_NAME,
        patient_id="../../../escaped",
        series_uid="1.2.826.0.1.3680043.8.498.1/../../../../escaped",
    )
    before = {path for path in sandbox.rglob("*")}
    out = sandbox / "out"
    code = main(["score", "--dicom", str(sandbox / "inputs"), "--model", str(model),
                 "--out", str(out)])  # fmt: skip
    assert code in (0, 3)
    after = {path for path in sandbox.rglob("*")}
    outside = [path for path in after - before if not path.is_relative_to(out)]
    assert outside == []
    return out, sandbox


def test_hostile_header_text_writes_nothing_outside_the_output(hostile_output):
    out, sandbox = hostile_output
    assert not list(sandbox.parent.rglob("escaped*"))
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out.resolve())


def test_report_is_self_contained_with_a_policy(hostile_output):
    html = (hostile_output[0] / "report" / "index.html").read_text()
    parser = _Links()
    parser.feed(html)
    assert parser.policy.startswith("default-src 'none'; img-src data:;")
    assert parser.urls and all(url.startswith(("data:", "#")) for url in parser.urls)
    assert HOSTILE_NAME not in html
    assert "Decision support, not a diagnosis" in html


@needs_chromium
def test_report_opens_cleanly_and_shows_hostile_text_as_text(hostile_output, tmp_path):
    page = hostile_output[0] / "report" / "index.html"
    result = chromium(page, tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_problems(result.stderr) == []
    assert 'data-report-ready="yes"' in result.stdout  # the page's own script ran to its end
    # The name is in the document as text (escaped when serialised), never as an element.
    assert "&lt;script&gt;alert(1)" in result.stdout
    assert "<script>alert" not in result.stdout

    screenshot = tmp_path / "page.png"
    result = chromium(page, tmp_path / "profile", f"--screenshot={screenshot}",
                      "--window-size=1200,2400")  # fmt: skip
    assert result.returncode == 0 and screenshot.is_file()
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, images, heatmap colours


@needs_chromium
def test_the_console_check_catches_errors_and_blocked_loads(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><head><meta http-equiv='Content-Security-Policy' content=\"default-src 'none'\">"
        "</head><body><img src='http://192.0.2.1/x.png'><script>undefined_call()</script>"
        "</body></html>"
    )
    result = chromium(page, tmp_path / "profile", "--dump-dom")
    assert console_problems(result.stderr)
