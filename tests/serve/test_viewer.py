"""The viewer page in a real browser: headless Chromium (Selenium) against a real `retina-seg-serve` serving a
tiny lesion model trained here. The page paints exactly the masks `/invocations` answers, re-paints from the
returned probabilities when a threshold slider moves (by keyboard), hides a class that is toggled off, shows
a TIFF as the server read it, refuses a non-image file in one line, and forbids other origins; the API's
rows carry the figures the page shows. Served with API keys, the page asks for the key once (by keyboard),
keeps it for the tab only, and links the model card, which needs no key."""

from __future__ import annotations

import base64
import json
import urllib.request

import cv2
import numpy as np
import pandas as pd
import pytest

from retina_seg.config import validate
from retina_seg.data.loading import derive_fov
from retina_seg.reporting.palette import class_colours, hex_colour
from retina_seg.run import run_job
from retina_seg.serve.keys import add_key
from retina_seg.tracking import artifacts
from tests.conftest import TINY, compose_config, isolate, unavailable
from tests.serve.viewer_screenshot import (
    choose_photograph,
    chromium,
    finished,
    missing_browser,
    open_photograph,
    open_viewer,
    serving,
    wait_for,
)

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast

LESIONS = ["MA", "HE", "EX"]
SIZE = (192, 160)  # width, height of the photograph the page is shown: big enough for regions, small to read back


@pytest.fixture(scope="module")
def lesion_model(tmp_path_factory):
    """(folder, run id, config): a tiny lesion model trained on the synthetic lesion set, and photograph files
    made from one of its fundus images: photo.png, photo.tif and notes.txt (not an image)."""
    tmp = tmp_path_factory.mktemp("viewer")
    config = compose_config([*TINY, *isolate(tmp), "data.task=lesions", "trainer.epochs=2"])
    result = run_job(config, tmp / "work", {})
    photo = cv2.imread(str(sorted((tmp / "cache").glob("*/images/*.png"))[0]))
    photo = cv2.resize(photo, SIZE, interpolation=cv2.INTER_LINEAR)
    assert cv2.imwrite(str(tmp / "photo.png"), photo) and cv2.imwrite(str(tmp / "photo.tif"), photo)
    (tmp / "notes.txt").write_text("referral notes, not a photograph\n")
    return tmp, result.run_id, validate(config)


@pytest.fixture(scope="module")
def server(lesion_model):
    tmp, run_id, _ = lesion_model
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "TMPDIR": str(tmp)}
    with serving(f"runs:/{run_id}/model", tmp / "server.log", env) as url:
        yield url


@pytest.fixture(scope="module")
def keyed(lesion_model):
    """(URL, key, access log) of a second real `retina-seg-serve` of the same model, with `--api-keys`."""
    tmp, run_id, _ = lesion_model
    key, access = add_key("grader", tmp / "keys"), tmp / "keyed-access.log"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "TMPDIR": str(tmp)}
    options = ("--api-keys", str(tmp / "keys"), "--access-log", str(access))
    with serving(f"runs:/{run_id}/model", tmp / "keyed-server.log", env, options) as url:
        yield url, key, access


@pytest.fixture(scope="module")
def downloads(lesion_model):
    folder = lesion_model[0] / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def browser(server, downloads):
    reason = missing_browser()
    if reason:
        unavailable(reason)
    with chromium(downloads=downloads) as driver:
        open_viewer(driver, server)
        yield driver


def get(url: str) -> tuple[dict, bytes]:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return dict(answer.headers), answer.read()


def decoded(text: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(text), np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def answer(lesion_model, server):
    """The server's answer for photo.png, as a script gets it: masks and 16-bit probabilities per class."""
    tmp = lesion_model[0]
    body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode((tmp / "photo.png").read_bytes())
                                                                 .decode()]]},
            "params": {"return_probabilities": True}}
    request = urllib.request.Request(f"{server}/invocations", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        row = json.load(response)["predictions"][0]
    masks = np.stack([decoded(row[f"mask_{c}"]) > 0 for c in LESIONS], axis=-1)
    probabilities = np.stack([decoded(row[f"probabilities_{c}"]) for c in LESIONS], axis=-1)
    return row, masks, probabilities


def composite(masks: np.ndarray, visible: list[str]) -> np.ndarray:
    """RGBA (H, W, 4) as the page must paint its overlay: each visible class opaque in its colour, later on top."""
    out = np.zeros((*masks.shape[:2], 4), np.uint8)
    for c, (name, rgb) in enumerate(class_colours(LESIONS).items()):
        if name in visible:
            out[masks[..., c]] = (*rgb, 255)
    return out


def canvas(driver, name: str) -> np.ndarray:
    """The page's own canvas `name` read back as RGBA pixels (a PNG data URL: lossless)."""
    url = driver.execute_script(f"return document.getElementById('{name}').toDataURL('image/png')")
    bgra = decoded(url.split(",", 1)[1])
    return cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)


def settle(driver) -> None:
    """Wait two animation frames: a re-paint the page scheduled has happened."""
    driver.execute_async_script("const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(done))")


def shown(driver, element_id: str) -> float:
    return float(driver.find_element("id", element_id).get_attribute("data-value"))


def test_page_and_model_info_are_served_with_a_same_origin_policy(lesion_model, server):
    tmp, run_id, config = lesion_model
    headers, page = get(server)
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    assert headers["content-type"].startswith("text/html") and b'src="/viewer/viewer.js"' in page
    assert b"http://" not in page and b"https://" not in page, "the page loads nothing from elsewhere"
    for name in ("viewer.js", "viewer.css"):
        headers, text = get(f"{server}/viewer/{name}")
        assert len(text) > 1000 and b"https://" not in text and b"http://" not in text, name
    _, info = get(f"{server}/model-info")
    info = json.loads(info)
    summary = json.loads((tmp / "work" / artifacts.STAGING / artifacts.SUMMARY).read_text())
    assert info["run_id"] == run_id and info["classes"] == LESIONS and info["lesions"] is True
    assert info["colours"] == {c: hex_colour(rgb) for c, rgb in class_colours(LESIONS).items()}
    assert info["thresholds"] == {c: summary[f"threshold_{c}"] for c in LESIONS}
    assert info["max_image_mb"] == config.serve.max_image_mb and info["precision"] == "32"
    assert info["model_card"] == "/model-card"


def test_api_rows_carry_area_share_and_regions_of_their_masks(lesion_model, answer):
    row, masks, _ = answer
    fov = derive_fov(cv2.cvtColor(cv2.imread(str(lesion_model[0] / "photo.png")), cv2.COLOR_BGR2RGB),
                     lesion_model[2].preprocess.fov_threshold)
    assert row["fov_area"] == np.count_nonzero(fov) > 0.5 * SIZE[0] * SIZE[1]
    for c, name in enumerate(LESIONS):
        mask = masks[..., c].astype(np.uint8)
        assert row[f"area_{name}"] == np.count_nonzero(mask)
        assert row[f"fov_share_{name}"] == pytest.approx(np.count_nonzero(mask) / np.count_nonzero(fov))
        assert row[f"regions_{name}"] == cv2.connectedComponents(mask, connectivity=8)[0] - 1
    assert sum(row[f"area_{c}"] for c in LESIONS) > 0, "a model that predicts nothing would prove nothing"


def test_overlay_paints_the_servers_masks_and_rethresholds_from_the_probabilities(lesion_model, browser, answer):
    from selenium.webdriver.common.keys import Keys

    row, masks, probabilities = answer
    assert open_photograph(browser, lesion_model[0] / "photo.png") == "ready"
    np.testing.assert_array_equal(canvas(browser, "overlay"), composite(masks, LESIONS))
    for name in LESIONS:  # the page's figures at the validation thresholds are the API's
        assert shown(browser, f"area-{name}") == row[f"area_{name}"]
        assert shown(browser, f"share-{name}") == pytest.approx(row[f"fov_share_{name}"])
        assert shown(browser, f"regions-{name}") == row[f"regions_{name}"]

    # a threshold on the slider's 0.01 grid where the painted area of the most varied class changes
    c = int(np.argmax([len(np.unique(probabilities[..., k])) for k in range(len(LESIONS))]))
    name = LESIONS[c]
    levels = np.arange(101) / 100
    areas = [(probabilities[..., c] / 65535 >= t).sum() for t in levels]
    candidates = [k for k in range(1, 101) if 0 < areas[k] != row[f"area_{name}"]]
    steps = candidates[len(candidates) // 2]
    slider = browser.find_element("id", f"threshold-{name}")
    slider.send_keys(Keys.HOME, *[Keys.ARROW_RIGHT] * steps)  # the keyboard, as a user without a mouse
    threshold = float(slider.get_attribute("value"))
    assert threshold == levels[steps]
    moved = masks.copy()
    moved[..., c] = probabilities[..., c] / 65535 >= threshold
    wait_for(browser, f"Number(document.getElementById('threshold-value-{name}').dataset.value) === {threshold}")
    settle(browser)
    assert shown(browser, f"area-{name}") == moved[..., c].sum() != row[f"area_{name}"]
    np.testing.assert_array_equal(canvas(browser, "overlay"), composite(moved, LESIONS))
    wait_for(browser, f"document.getElementById('regions-{name}').dataset.value !== undefined")  # counted at rest
    assert shown(browser, f"regions-{name}") == cv2.connectedComponents(moved[..., c].astype(np.uint8),
                                                                       connectivity=8)[0] - 1

    # toggled off with the keyboard: the class disappears from the overlay, the others stay
    browser.find_element("id", f"show-{name}").send_keys(Keys.SPACE)
    settle(browser)
    np.testing.assert_array_equal(canvas(browser, "overlay"), composite(moved, [n for n in LESIONS if n != name]))


def test_masks_and_figures_download_as_the_server_answered_them(lesion_model, browser, answer, downloads):
    from selenium.webdriver.support.ui import WebDriverWait

    row, masks, _ = answer
    assert open_photograph(browser, lesion_model[0] / "photo.png") == "ready"
    browser.find_element("id", "download-masks").click()
    browser.find_element("id", "download-csv").click()
    names = [f"photo_mask_{c}.png" for c in LESIONS] + ["photo_figures.csv"]
    WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda _: all((downloads / n).is_file() for n in names))
    for c, name in enumerate(LESIONS):  # one-channel 0/255 PNGs, as the API's and predict's masks
        np.testing.assert_array_equal(cv2.imread(str(downloads / f"photo_mask_{name}.png"), cv2.IMREAD_UNCHANGED),
                                      masks[..., c].astype(np.uint8) * 255, err_msg=name)
    table = pd.read_csv(downloads / "photo_figures.csv").set_index("class")
    assert list(table.index) == LESIONS and set(table["image"]) == {"photo.png"}
    assert (table["threshold"] == table["validation_threshold"]).all()
    assert (table["fov_area_px"] == row["fov_area"]).all()
    for name, record in table.iterrows():
        assert (record["area_px"], record["regions"]) == (row[f"area_{name}"], row[f"regions_{name}"])
        assert record["fov_share"] == pytest.approx(row[f"fov_share_{name}"])


def test_a_dropped_photograph_opens_like_a_chosen_one(lesion_model, browser, answer):
    """A drop event carrying the file, as the browser makes one when a photograph is dragged onto the page."""
    _, masks, _ = answer
    photo = base64.b64encode((lesion_model[0] / "photo.png").read_bytes()).decode()
    browser.execute_script("""
        document.body.dataset.state = 'choosing';
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const files = new DataTransfer();
        files.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
        document.getElementById('view').dispatchEvent(new DragEvent('drop', {dataTransfer: files, bubbles: true}));
    """, photo)
    assert wait_for(browser, "!['choosing', 'busy'].includes(document.body.dataset.state) && "
                             "document.body.dataset.state") == "ready"
    settle(browser)
    assert browser.find_element("id", "status").text.startswith("dropped.png: 192x160")
    np.testing.assert_array_equal(canvas(browser, "overlay"), composite(masks, LESIONS))


def test_view_controls_work_from_the_keyboard(lesion_model, browser):
    from selenium.webdriver.common.keys import Keys

    assert open_photograph(browser, lesion_model[0] / "photo.png") == "ready"
    browser.find_element("id", "opacity").send_keys(Keys.HOME)
    assert browser.execute_script("return document.getElementById('overlay').style.opacity") == "0"
    browser.find_element("id", "opacity").send_keys(Keys.END)
    assert browser.execute_script("return document.getElementById('overlay').style.opacity") == "1"
    view = browser.find_element("id", "view")
    view.send_keys("o")
    assert not browser.find_element("id", "overlay").is_displayed()
    view.send_keys("o")
    assert browser.find_element("id", "overlay").is_displayed()
    view.send_keys("1")  # full resolution, then zoom in and pan
    assert browser.find_element("id", "zoom").text == "100 %"
    view.send_keys("+")
    assert browser.find_element("id", "zoom").text == "150 %"
    before = browser.execute_script("return document.getElementById('layers').style.transform")
    view.send_keys(Keys.ARROW_LEFT)
    after = browser.execute_script("return document.getElementById('layers').style.transform")
    assert after != before and after.endswith("scale(1.5)")
    view.send_keys("0")
    assert browser.find_element("id", "zoom").text != "150 %"


def test_a_tiff_is_shown_as_the_server_read_it(lesion_model, browser):
    tmp = lesion_model[0]
    assert open_photograph(browser, tmp / "photo.tif") == "ready"
    photo = canvas(browser, "photo")
    np.testing.assert_array_equal(photo[..., :3], cv2.cvtColor(cv2.imread(str(tmp / "photo.tif")), cv2.COLOR_BGR2RGB))


def test_a_file_the_server_refuses_gets_one_line_in_the_page(lesion_model, browser):
    assert open_photograph(browser, lesion_model[0] / "notes.txt") == "refused"
    message = browser.find_element("id", "error").text
    assert message == "notes.txt is not an image file (expected PNG, JPEG or TIFF bytes)"


def test_a_vessel_model_is_painted_in_its_class_colour(logged, browser):
    """The session's tiny vessel model (tests/serve/conftest.py): one class, unsuffixed columns, no regions."""
    tmp, result, inputs = logged
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "TMPDIR": str(tmp)}
    with serving(f"runs:/{result.run_id}/model", tmp / "viewer-server.log", env) as url:
        open_viewer(browser, url)
        assert open_photograph(browser, inputs / "colour.png") == "ready"
        mask = cv2.imread(str(tmp / "predicted" / "colour_mask.png"), cv2.IMREAD_UNCHANGED) > 0
        expected = np.zeros((*mask.shape, 4), np.uint8)
        expected[mask] = (*class_colours(["vessels"])["vessels"], 255)
        np.testing.assert_array_equal(canvas(browser, "overlay"), expected)
        assert shown(browser, "area-vessels") == mask.sum() > 0
        assert not browser.find_elements("id", "regions-vessels")


def test_the_page_cannot_reach_another_origin(browser):
    """The Content-Security-Policy stops the page's own script from sending anything elsewhere (the address
    is never reached: the browser refuses before connecting)."""
    violated = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        document.addEventListener('securitypolicyviolation', (e) => done(e.effectiveDirective), {once: true});
        fetch('http://127.0.0.1:9/elsewhere', {method: 'POST', body: 'x'}).catch(() => {});
    """)
    assert violated == "connect-src"


def test_the_page_links_the_model_card_which_needs_no_key(lesion_model, browser, keyed):
    """The page, its files and /model-info load from a server that needs keys; the first Tab stop is the link
    to the served model's card, and Enter opens the card (in a new tab: the photograph stays) without a key."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url = keyed[0]
    open_viewer(browser, url)
    assert browser.execute_script("return document.body.dataset.state") == "idle"
    viewer = browser.current_window_handle
    ActionChains(browser).send_keys(Keys.TAB).perform()
    link = browser.switch_to.active_element
    assert (link.get_attribute("id"), link.text, link.get_attribute("href")) == ("model-card", "Model card",
                                                                                 f"{url}/model-card")
    link.send_keys(Keys.ENTER)
    WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda driver: len(driver.window_handles) == 2)
    browser.switch_to.window(next(handle for handle in browser.window_handles if handle != viewer))
    try:
        card = (lesion_model[0] / "work" / artifacts.STAGING / artifacts.MODEL_CARD).read_text()
        assert browser.current_url == f"{url}/model-card"
        assert wait_for(browser, "document.body && document.body.textContent", 30) == card
    finally:
        browser.close()
        browser.switch_to.window(viewer)


def test_the_key_is_asked_for_once_and_kept_for_the_tab_only(lesion_model, browser, keyed, answer):
    """A photograph sent without a key gets the key dialog, keyboard focus in it; Escape gives up in one line;
    a wrong key (Enter) gets the server's one-line refusal and the dialog again, twice; the right key gets the
    overlay the API's masks make, and is then in the tab's sessionStorage only (not localStorage, a cookie or the
    URL); a second photograph needs no new prompt. The server's access log shows every request the page made."""
    from selenium.webdriver.common.keys import Keys

    tmp = lesion_model[0]
    url, key, access = keyed
    _, masks, _ = answer
    dialog_open = "!document.getElementById('key-dialog').hidden"
    open_viewer(browser, url)

    def typed(*keys) -> None:  # as a user types: into whatever has the keyboard focus
        browser.switch_to.active_element.send_keys(*keys)

    def focus() -> list:
        return browser.execute_script("const e = document.activeElement;"
                                      "return [e.id, document.getElementById('key-dialog').contains(e)]")

    choose_photograph(browser, tmp / "photo.png")
    wait_for(browser, dialog_open, 60)
    assert focus() == ["key", True] and browser.find_element("id", "key-reason").text == ""
    typed(Keys.ESCAPE)
    assert finished(browser, 0, 60) == "refused" and not browser.find_element("id", "key-dialog").is_displayed()
    assert browser.find_element("id", "error").text == ("no API key was given: this server looks at a photograph "
                                                        "only with one")

    refusal = "the API key is not one this server accepts"
    painted = choose_photograph(browser, tmp / "photo.png")
    for reason, given in [("", "rsk_" + "A" * 43), (refusal, "rsk_" + "B" * 43), (refusal, key)]:  # mistyped twice
        wait_for(browser, f"{dialog_open} && document.getElementById('key-reason').textContent === '{reason}'", 60)
        assert focus() == ["key", True] and browser.find_element("id", "key").get_attribute("value") == ""
        typed(given, Keys.ENTER)
    assert finished(browser, painted) == "ready" and not browser.find_element("id", "key-dialog").is_displayed()
    assert browser.find_element("id", "error").text == ""
    np.testing.assert_array_equal(canvas(browser, "overlay"), composite(masks, LESIONS))

    stores = browser.execute_script("return [JSON.stringify(Object.entries(sessionStorage)),"
                                    "JSON.stringify(Object.entries(localStorage)), document.cookie, location.href]")
    assert json.loads(stores[0]) == [["retina-seg-api-key", key]]
    assert stores[1:] == ["[]", "", f"{url}/"] and browser.get_cookies() == []

    browser.execute_script("""window.prompted = 0;  // counts every time the dialog is shown from now on
        new MutationObserver(() => { window.prompted += !document.getElementById('key-dialog').hidden; })
            .observe(document.getElementById('key-dialog'), {attributes: true, attributeFilter: ['hidden']});""")
    assert open_photograph(browser, tmp / "photo.tif") == "ready"
    assert browser.execute_script("return window.prompted") == 0
    np.testing.assert_array_equal(canvas(browser, "overlay"), composite(masks, LESIONS))
    sent = [(line["status"], line["key"], line["refused"]) for line in map(json.loads, access.read_text().splitlines())
            if line["route"] == "/invocations"]
    assert sent == [(401, None, "unauthenticated")] * 2 + [(403, None, "forbidden")] * 2 + [(200, "grader", None)] * 2
