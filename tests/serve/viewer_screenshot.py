"""Drive the viewer page of a real `retina-seg-serve` in headless Chromium: the code path of the browser test
(tests/serve/test_viewer.py), and by hand the screenshot of the docs:

    MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db .venv/bin/python -m tests.serve.viewer_screenshot \\
        models:/retina-seg@champion photo.jpg docs/images/viewer.png

Needs Debian's chromium and chromium-driver (`make browser`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.conftest import free_port, stop_group, wait_until_up

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# this machine's closed network stalls a Chromium that tries to reach its services
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVE = Path(sys.executable).with_name("retina-seg-serve")


def missing_browser() -> str | None:
    """Why the browser cannot run here (None when it can)."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        absent.append("selenium (pip install -e '.[dev]')")
    return f"{', '.join(absent)} missing: `make browser` installs chromium and chromium-driver" if absent else None


@contextmanager
def serving(uri: str, log_path: Path, env: dict | None = None, options: tuple[str, ...] = (),
            seconds: float = 240) -> Iterator[str]:
    """A real `retina-seg-serve <uri> [options]` on a free 127.0.0.1 port in its own process group: yields its
    URL."""
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(SERVE), uri, "--host", "127.0.0.1", "--port", str(port), *options], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(proc, f"{url}/ping", log_path, seconds)
            yield url
        finally:
            stop_group(proc)


@contextmanager
def chromium(width: int = 1400, height: int = 900, downloads: Path | None = None) -> Iterator:
    """A headless Chromium under Selenium with a fresh profile, removed afterwards; what the page downloads
    lands in `downloads` without a prompt."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="retina-seg-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
            options.add_argument(flag)
        options.add_experimental_option("prefs", {
            "download.default_directory": str(downloads or Path(profile) / "downloads"),
            "download.prompt_for_download": False,
            "profile.default_content_setting_values.automatic_downloads": 1})  # several masks at once
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver, script: str, seconds: float = 120):
    """Poll a JavaScript expression until it is truthy; returns its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda d: d.execute_script(f"return {script}"))


def open_viewer(driver, url: str) -> None:
    """Load the page and wait until it has read the model's description."""
    driver.get(url)
    wait_for(driver, "['idle', 'ready', 'refused'].includes(document.body.dataset.state)", 60)


def choose_photograph(driver, path: Path) -> int:
    """Choose `path` in the page's file input, as a user does; returns how often the overlay had been painted
    before (for `finished`)."""
    painted = int(driver.execute_script("document.body.dataset.state = 'choosing';"
                                        "return Number(document.body.dataset.painted || 0)"))
    driver.find_element("id", "file").send_keys(str(Path(path).resolve()))
    return painted


def finished(driver, painted: int, seconds: float = 300) -> str:
    """The page's state once it has finished with the photograph chosen after `painted` paints ('ready': the
    overlay is painted again; 'refused': the one-line reason is shown in #error)."""
    state = wait_for(driver, "!['choosing', 'busy'].includes(document.body.dataset.state) && "
                             "document.body.dataset.state", seconds)
    if state == "ready":
        wait_for(driver, f"Number(document.body.dataset.painted || 0) > {painted}", 30)
    return state


def open_photograph(driver, path: Path, seconds: float = 300) -> str:
    """Choose `path` as a user does and wait until the page has finished with it: its state (see `finished`)."""
    return finished(driver, choose_photograph(driver, path), seconds)


def screenshot(uri: str, photo: Path, out: Path, env: dict | None = None) -> None:
    """Serve `uri`, open `photo` in the viewer and save the page as the PNG `out`."""
    with tempfile.TemporaryDirectory(prefix="retina-seg-screenshot-") as tmp:
        with serving(uri, Path(tmp) / "server.log", env) as url, chromium(1600, 1000) as driver:
            open_viewer(driver, url)
            state = open_photograph(driver, photo)
            if state != "ready":
                raise SystemExit(f"the viewer refused {photo}: {driver.find_element('id', 'error').text}")
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="runs:/<run id>/model, models:/<name>@<alias> or a model folder")
    parser.add_argument("photo", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    reason = missing_browser()
    if reason:
        raise SystemExit(reason)
    screenshot(args.model, args.photo, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
