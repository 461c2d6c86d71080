"""The gallery page in a real browser: headless Chromium loads it from disk.

Whether an image really loaded (`naturalWidth > 0`) is visible only to script, and the page
has none; so the test loads a copy of the page beside it with a probe script appended, which
writes what it finds into the DOM that `--dump-dom` prints. Skipped without Chromium
(Debian: apt-get install chromium).
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import CHROMIUM
from test_gallery import ODD, make_gallery

from nst_batch.layout import PAGE

pytestmark = pytest.mark.usefixtures("chromium")

PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    images: images.length,
    loaded: images.length - broken.length,
    broken: broken.map(function (i) { return decodeURIComponent(i.getAttribute("src")); }),
    cells: document.querySelectorAll("td.cell").length,
    sections: document.querySelectorAll("section").length
  });
  document.body.appendChild(probe);
});
</script>
"""


def _probe(page: Path, profile: Path) -> dict[str, Any]:
    """Load `page` with the probe in headless Chromium; what the probe saw."""
    probed = page.with_name("probe.html")  # beside the page, so its relative links hold
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    assert CHROMIUM is not None  # the `chromium` fixture skipped or failed the test before
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probed.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, f"no probe result (exit {done.returncode}):\n{done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_every_image_loads_and_every_cell_is_there(tmp_path: Path) -> None:
    made = make_gallery(tmp_path / "gallery", sweep={"style_weight": [5, 10]})

    seen = _probe(made.files.page, tmp_path / "profile")

    # per variant: 2 style and 2 content pictures; 2 done cells in the first variant
    assert seen["images"] == 2 * (2 + 2) + 2
    assert seen["broken"] == []
    assert seen["loaded"] == seen["images"]
    assert seen["cells"] == 2 * 2 * 2
    assert seen["sections"] == 2


def test_the_probe_sees_a_broken_image(tmp_path: Path) -> None:
    made = make_gallery(tmp_path / "gallery")
    thumbs = made.out / "thumbs" / "outputs"
    (odd,) = thumbs.glob("odd*")
    odd.unlink()  # the page still names it

    seen = _probe(made.out / PAGE, tmp_path / "profile")

    assert seen["broken"] == [f"thumbs/outputs/{ODD}__starry_night.jpg.jpg"]
    assert seen["loaded"] == seen["images"] - 1
