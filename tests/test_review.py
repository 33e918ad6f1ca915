"""The review page, driven in a real headless Chromium (Debian's `chromium` and its driver,
through Selenium) over a real run on shared footage with captures: the timeline, its filters,
an event with both frames and its boxes, a correction written to captions.txt that `finetune
prepare --from-captures` picks up, the export, live updates, escaping; and at the HTTP level,
who gets in (token, CSRF, paths outside the captures), a corrupt index rebuilt. Screenshots of
the timeline and an event page go to test-artifacts/ (or $MONITOR_TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support import REPO, make_event, monitor_env, need_video, read_events, run_monitor

from monitor.bench.local_redis import free_port
from monitor.config import load_settings
from monitor.daemon.service import Monitor

ARTIFACTS = Path(os.environ.get("MONITOR_TEST_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """A real run of two cameras (the room and the parking aisle) with captures."""
    root = tmp_path_factory.mktemp("review")
    logs, caps = root / "logs", root / "captures"
    settings = load_settings(
        None,
        cameras=[
            {"id": "room", "source": str(need_video("one-by-one-person-detection.mp4"))},
            {"id": "aisle", "source": str(need_video("car-detection.mp4"))},
        ],
        log={"dir": str(logs), "reorder_window_s": 0},
        captures={"enabled": True, "dir": str(caps)},
        http={"bind": None},
    )
    result = Monitor(settings).run()
    assert not result.errors, result.errors
    return {"root": root, "logs": logs, "caps": caps, "events": read_events(logs)}


class Review:
    """`monitor review` as a real process on a free loopback port."""

    def __init__(self, *args: str | Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "review", "--bind", f"127.0.0.1:{self.port}", *map(str, args)],
            env=monitor_env(env), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/static/review.css", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # it answers (401 with a token)
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read()
                time.sleep(0.1)
        raise AssertionError("monitor review did not start")

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        return err


def fetch(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, str]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode(errors="replace")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "Debian's chromium and chromium-driver are needed (.ci/run installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1700,1100",
    ):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    yield chrome
    chrome.quit()


def rows(browser) -> list[dict]:
    from selenium.webdriver.common.by import By

    out = []
    for tr in browser.find_elements(By.CSS_SELECTOR, "#events tbody tr"):
        cells = tr.find_elements(By.TAG_NAME, "td")
        out.append({"time": cells[0].text, "camera": cells[1].text, "text": cells[2].text})
    return out


def test_the_page_in_a_browser(site, browser, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    events = site["events"]
    review = Review("--log-dir", site["logs"], "--captures", site["caps"])
    try:
        browser.get(review.url + "/")
        shown = rows(browser)
        assert len(shown) == len(events) >= 14, shown  # 12 in the room, some in the aisle
        assert shown[0]["time"][:4] in ("2017", "2018") and shown[0]["time"][19] in "+-"  # date, time, offset
        browser.save_screenshot(str(ARTIFACTS / "review-timeline.png"))

        # filter by camera, then by words
        Select(browser.find_element(By.NAME, "camera")).select_by_value("aisle")
        browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
        aisle = rows(browser)
        assert aisle and {r["camera"] for r in aisle} == {"aisle"}
        assert len(aisle) == len([e for e in events if e["camera"] == "aisle"])
        browser.get(review.url + "/?q=person+left")
        found = rows(browser)
        assert found and all("person left" in r["text"] for r in found) and {r["camera"] for r in found} == {"room"}
        assert len(found) == len([e for e in events if "person left" in e["text"]])

        # one event: both frames loaded, its boxes drawn over them
        browser.get(review.url + "/?camera=room")
        browser.find_elements(By.CSS_SELECTOR, "#events tbody a")[-1].click()  # the oldest: the first arrival
        first = next(e for e in events if e["camera"] == "room" and e["seq"] == 1)
        assert browser.current_url.endswith(f"/event/{first['event_id']}")
        for name in ("before", "after"):
            img = browser.find_element(By.CSS_SELECTOR, f"#{name} img")
            assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 768
            boxes = browser.find_elements(By.CSS_SELECTOR, f"#{name} rect.box")
            assert len(boxes) == len(first["regions"]) >= 1
            assert boxes[0].get_attribute("data-label") == "person" and "appeared" in boxes[0].get_attribute("class")
        browser.save_screenshot(str(ARTIFACTS / "review-event.png"))

        # correct its sentence
        box = browser.find_element(By.ID, "text")
        box.clear()
        box.send_keys("a man in a grey shirt walked in")
        browser.find_element(By.ID, "save").click()
        WebDriverWait(browser, 5).until(
            lambda b: b.find_elements(By.ID, "saved"), message=browser.current_url + browser.page_source[:1500]
        )
        assert browser.find_element(By.ID, "sentence").text == "a man in a grey shirt walked in"
        assert browser.find_element(By.ID, "original").text == first["text"]
        folder = site["caps"] / "room" / first["t_after"][:10] / first["event_id"]
        assert (folder / "captions.txt").read_text() == "a man in a grey shirt walked in\n"
        assert json.loads((folder / "event.json").read_text())["text"] == first["text"]  # the original kept
        proc = run_monitor("finetune", "prepare", "--from-captures", site["caps"], "--out", tmp_path / "ds")
        assert proc.returncode == 0, proc.stderr
        pairs = [json.loads(line) for line in (tmp_path / "ds" / "pairs.jsonl").read_text().splitlines()]
        assert [(p["id"], p["captions"]) for p in pairs] == [(first["event_id"], ["a man in a grey shirt walked in"])]
        browser.get(review.url + "/?q=grey+shirt")
        assert [r["text"] for r in rows(browser)] == ["a man in a grey shirt walked in corrected"]

        # export: the same code as finetune prepare
        browser.get(review.url + "/")
        browser.find_element(By.CSS_SELECTOR, "form.export button").click()
        exported = WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "exported"))  # a subprocess runs
        assert exported[0].text == "Exported 1 corrected pair"

        # live: a new event appears without a reload, within 2 s; a sentence is text, never markup
        browser.get(review.url + "/")
        hostile = make_event(camera="room", seq=99, text="<script>document.title='owned'</script> & <b>bold</b>",
                             t=10 * 365 * 86400.0)  # fmt: skip
        with (site["logs"] / "changes.jsonl").open("a") as fh:
            fh.write(hostile.model_dump_json() + "\n")
        written = time.monotonic()
        count = "return document.querySelectorAll('#events tbody tr').length"  # one round trip, not one per cell
        WebDriverWait(browser, 5, poll_frequency=0.05).until(lambda b: b.execute_script(count) == len(events) + 1)
        assert time.monotonic() - written <= 2.0
        assert rows(browser)[0]["text"] == hostile.text and browser.title != "owned"
        browser.get(review.url + "/")  # and as the server renders it
        assert rows(browser)[0]["text"] == hostile.text and browser.title != "owned"
        assert not browser.find_elements(By.CSS_SELECTOR, "#events b")
    finally:
        err = review.stop()
    assert "Traceback" not in err, err


def test_who_gets_in(site, tmp_path) -> None:
    token = "review-Token-5150"
    caps, logs = site["caps"], site["logs"]
    # anywhere but loopback needs a token: one line, exit 2
    anywhere = f"0.0.0.0:{free_port()}"
    proc = run_monitor("review", "--log-dir", logs, "--bind", anywhere, timeout=30)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"monitor: config error: review.bind: {anywhere} is reachable beyond this machine: it needs a token "
        "(--token-file or MONITOR_REVIEW__TOKEN)"
    ], proc.stderr
    review = Review("--log-dir", logs, "--captures", caps, env={"MONITOR_REVIEW__TOKEN": token})
    try:
        status, headers, body = fetch(review.url + "/")
        assert status == 401 and token not in body
        assert "default-src 'none'" in headers["content-security-policy"]
        status, _, body = fetch(review.url + "/", headers={"Authorization": f"Bearer {token}"})
        assert status == 200 and "events" in body
        assert fetch(review.url + "/login?token=wrong")[0] == 401
        auth = {"Authorization": f"Bearer {token}"}
        event = site["events"][0]
        # POSTs need the page's CSRF token
        status, _, _ = fetch(review.url + f"/event/{event['event_id']}/correct", b"text=x&csrf=forged", auth)
        assert status == 403
        # nothing outside the captures dir, whatever the path says
        for path in ("/event/..%2F..%2Fetc%2Fpasswd/before.jpg", "/event/room-0000000000000000/../../x.jpg",
                     f"/event/{event['event_id']}/passwd.jpg", "/static/../app.py"):  # fmt: skip
            status, _, body = fetch(review.url + path, headers=auth)
            assert status == 404 and "root:" not in body, (path, status)
    finally:
        err = review.stop()
    assert token not in err


def test_a_corrupt_index_is_rebuilt_with_one_line(site, tmp_path) -> None:
    logs = tmp_path / "logs"
    shutil.copytree(site["logs"], logs, ignore=shutil.ignore_patterns("spool"))
    (logs / "review-index.sqlite3").write_bytes(b"this is not a database" * 100)
    review = Review("--log-dir", logs)
    try:
        status, _, body = fetch(review.url + "/")
        assert status == 200 and f"{len(read_events(logs))} events" in body
        # a missing capture is a placeholder, not an error
        status, _, body = fetch(review.url + f"/event/{site['events'][0]['event_id']}")
        assert status == 200 and "no capture of this frame" in body
    finally:
        err = review.stop()
    rebuilt = [line for line in err.splitlines() if "review_index_rebuilt" in line]
    assert len(rebuilt) == 1 and "Traceback" not in err, err


def test_the_index_follows_the_log_and_its_rotation(tmp_path) -> None:
    """Only what was appended is read; a rotated log is neither lost nor read twice."""
    from monitor.review.index import EventIndex, Query

    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "changes.jsonl"
    log.write_text("".join(make_event(camera="a", seq=s, t=s).model_dump_json() + "\n" for s in (1, 2)))
    index = EventIndex(logs)
    assert index.refresh() == 2 and index.refresh() == 0
    with log.open("a") as fh:
        fh.write(make_event(camera="a", seq=3, t=3).model_dump_json() + "\n")
        fh.write('{"event_id": "a-000000000000000')  # a line still being written
    assert index.refresh() == 1
    log.rename(logs / "changes.jsonl.1")  # logrotate
    log.write_text(make_event(camera="b", seq=1, t=4, text="a white van parked").model_dump_json() + "\n")
    assert index.refresh() == 1
    events, total = index.search(Query())
    assert total == 4 and [e.seq for e in events] == [1, 3, 2, 1] and events[0].camera == "b"
    assert [e.text for e in index.search(Query(text="white van"))[0]] == ["a white van parked"]
    assert index.search(Query(text='van" OR "x'))[1] == 0  # FTS syntax in the words is only text
    assert index.counts() == {"a": 3, "b": 1}
    index.close()
    assert EventIndex(logs).search(Query())[1] == 4  # reopened: kept, not read again


def test_ask_about_an_event_on_the_command_line_and_the_page(site, tiny_llava: Path, tmp_path) -> None:
    """A question answered from the event's captured frames by the VLM (a tiny random-weight one
    here: the answer is some text, the path is the real one); without a VLM, one line, no button."""
    import re

    event = next(e for e in site["events"] if e["camera"] == "room")
    base = ("--log-dir", site["logs"], "--captures", site["caps"])
    proc = run_monitor(
        "ask", event["event_id"], "what is the person wearing?", *base, "--model", tiny_llava, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1 and proc.stdout.strip(), proc.stdout
    proc = run_monitor("ask", event["event_id"], "what is there?", *base)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "monitor: error: asking needs the VLM describer: describer.kind vlm and describer.model (or --model)"
    ]
    config = tmp_path / "vlm.yaml"
    config.write_text(f"describer: {{kind: vlm, model: {tiny_llava}, max_new_tokens: 8}}\n")
    review = Review(*base, "--config", config)
    try:
        status, _, page = fetch(f"{review.url}/event/{event['event_id']}")
        assert status == 200 and 'id="ask"' in page and "need the VLM describer" not in page
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)[1]
        body = f"csrf={csrf}&question=what+is+the+person+wearing%3F".encode()
        status, _, page = fetch(f"{review.url}/event/{event['event_id']}/ask", body)
        assert status == 200, page
        answer = re.search(r'<p class="answer" id="answer">(.*?)</p>', page, re.S)
        assert answer and answer[1].strip() and "no answer" not in answer[1], page[-800:]
    finally:
        review.stop()


def test_no_capture_folder_outside_the_captures_dir(tmp_path) -> None:
    """An event's folder is found only inside the captures dir: not through a symlink that
    leads out of it, nor through ids, cameras or days that are not what the daemon writes."""
    from monitor.review.corrections import capture_folder, frame_file

    root, outside = tmp_path / "captures", tmp_path / "elsewhere"
    (outside / "2026-12-01" / "cam-00000000000000ab").mkdir(parents=True)
    (outside / "2026-12-01" / "cam-00000000000000ab" / "before.jpg").write_bytes(b"secret")
    root.mkdir()
    (root / "cam").symlink_to(outside)  # a camera folder that leads out
    record = {"camera": "cam", "t_after": "2026-12-01T08:00:00.000Z", "event_id": "cam-00000000000000ab"}
    assert capture_folder(root, record) is None
    inside = root / "lot" / "2026-12-01" / "lot-00000000000000cd"
    inside.mkdir(parents=True)
    (inside / "after.jpg").write_bytes(b"jpeg")
    (inside / "before.jpg").symlink_to(outside / "2026-12-01" / "cam-00000000000000ab" / "before.jpg")
    good = {"camera": "lot", "t_after": "2026-12-01T08:00:00.000Z", "event_id": "lot-00000000000000cd"}
    folder = capture_folder(root, good)
    assert folder == inside.resolve() and frame_file(folder, "after.jpg") == inside.resolve() / "after.jpg"
    assert frame_file(folder, "before.jpg") is None  # a frame that is a symlink out
    assert frame_file(folder, "../../x.jpg") is None and frame_file(folder, "event.json") is None
    for bad in ({"event_id": "../../etc"}, {"camera": ".."}, {"t_after": "../../../x"}, {"camera": "/etc"}):
        assert capture_folder(root, {**good, **bad}) is None, bad
